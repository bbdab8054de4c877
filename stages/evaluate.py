"""evaluate: test metrics, per-class report, confusion matrix, training curves, and the visual
analysis (Grad-CAM, t-SNE, calibration, errors)."""
from __future__ import annotations

import csv

from stages.common import params_from_argv, run_stage, write_dvc_metrics

EVALUATED = ("test_accuracy", "macro_f1", "test_loss", "ece")  # on the registered version, as tags


def read_history(path) -> list[dict]:
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def write_predictions(path, y_true, y_pred, classes) -> None:
    import pandas as pd

    from skillpack.io import atomic_path

    frame = pd.DataFrame({"actual": [classes[i] for i in y_true], "predicted": [classes[i] for i in y_pred]})
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def main() -> int:
    import time

    import torch

    from skillpack import paths, tracking
    from skillpack.data import PreparedStore
    from skillpack.data.loader import to_tensor_nchw
    from skillpack.io import write_json
    from skillpack.metrics import classification_metrics, confusion, overfitting_check
    from skillpack.plots import plot_confusion, plot_curves
    from skillpack.train.checkpoint import load_classifier
    from skillpack.train.explain import explain_model
    from skillpack.train.runs import evaluate_model

    params = params_from_argv()
    cfg = params.evaluate
    t0 = time.perf_counter()
    torch.set_num_threads(params.train.threads)
    store = PreparedStore(paths.PREPARED)
    test_x, test_y = store.arrays("test")
    model, meta = load_classifier(paths.MODEL_FILE)
    scored = evaluate_model(model, test_x, test_y, cfg.batch_size)
    metrics = classification_metrics(test_y, scored.predictions, store.classes)
    metrics["test_loss"] = scored.loss
    history = read_history(paths.TRAIN_LOG)
    overfit = overfitting_check(history, cfg.overfit_gap)
    metrics.update(overfit)
    metrics["n_test"] = int(len(test_y))
    write_json(paths.PER_CLASS, metrics["per_class"])
    write_json(paths.METRICS, {k: v for k, v in metrics.items() if k != "per_class"})
    matrix = confusion(test_y, scored.predictions, len(store.classes))
    plot_confusion(matrix, store.classes, paths.CONFUSION_PNG,
                   title=f"{meta['model_name']}: test accuracy {metrics['test_accuracy']:.4f}")
    plot_curves(history, paths.CURVES_PNG, overfit)
    write_predictions(paths.PREDICTIONS, test_y, scored.predictions, store.classes)
    explained = {}
    if cfg.explain.enabled:
        t_explain = time.perf_counter()
        explained = explain_model(model, to_tensor_nchw(test_x), test_y, store.classes, cfg.explain,
                                  paths.EXPLAIN, seed=params.seed, logits=scored.logits)
        explained["explain_seconds"] = round(time.perf_counter() - t_explain, 2)
        for key in ("tsne_silhouette", "embedding_silhouette", "ece"):
            metrics[key] = explained[key]
        write_json(paths.METRICS, {k: v for k, v in metrics.items() if k != "per_class"})
        write_json(paths.EXPLAIN / "explain.json", explained)
    write_dvc_metrics(paths.EVALUATE_DVC_METRICS, {k: round(float(metrics[k]), 4) for k in
                                                   EVALUATED if k in metrics and k != "test_loss"})
    seconds = time.perf_counter() - t0
    with tracking.stage_run("evaluate", params.registry.experiment,
                            params={"evaluate.overfit_gap": cfg.overfit_gap, "model": meta["model_name"]},
                            data_hash=store.data_hash()):
        flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        flat.update({f"f1.{name}": m["f1"] for name, m in metrics["per_class"].items()})
        tracking.log_metrics({**flat, "overfitting": float(overfit["overfitting"]), "evaluate_seconds": seconds})
        for path in (paths.METRICS, paths.PER_CLASS, paths.CONFUSION_PNG, paths.CURVES_PNG):
            tracking.log_artifact(path)
        tracking.describe_alias(params.registry.model, params.registry.aliases.candidate,
                                {f"test.{k}": f"{v:.4f}" for k, v in flat.items() if k in EVALUATED})
        if explained:
            tracking.log_metrics({"explain_seconds": explained["explain_seconds"]})
            for path in sorted(paths.EXPLAIN.iterdir()):
                tracking.log_artifact(path, "explain")
    print(f"[evaluate] test accuracy {metrics['test_accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}, "
          f"overfitting={overfit['overfitting']} (gap {overfit['loss_gap']:+.3f}) in {seconds:.1f}s")
    if explained:
        print(f"[evaluate] explain: Grad-CAM on {explained['cam_layer']}, t-SNE silhouette "
              f"{explained['tsne_silhouette']:.3f}, ECE {explained['ece']:.4f} in {explained['explain_seconds']:.1f}s "
              f"-> {paths.EXPLAIN}/")
    return 0


if __name__ == "__main__":
    run_stage(main)
