"""evaluate: test metrics, per-class report, confusion matrix and training curves."""
from __future__ import annotations

import csv

from stages.common import MODEL_FILE, PREPARED, REPORTS, params_from_argv, run_stage

METRICS = REPORTS / "metrics.json"
EXPLAIN = REPORTS / "explain"


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

    from skillpack import tracking
    from skillpack.checkpoint import load_classifier
    from skillpack.data import PreparedStore
    from skillpack.data.loader import to_tensor_nchw
    from skillpack.engine import predict
    from skillpack.explain import explain_model
    from skillpack.io import write_json
    from skillpack.metrics import classification_metrics, confusion, overfitting_check
    from skillpack.plots import plot_confusion, plot_curves

    params = params_from_argv()
    t0 = time.perf_counter()
    torch.set_num_threads(params.train.threads)
    store = PreparedStore(PREPARED)
    test_x, test_y = store.arrays("test")
    model, meta = load_classifier(MODEL_FILE)
    logits = predict(model, to_tensor_nchw(test_x), params.evaluate.batch_size)
    y_true, y_pred = test_y, logits.argmax(1).numpy()
    metrics = classification_metrics(y_true, y_pred, store.classes)
    metrics["test_loss"] = float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(test_y)).item())
    history = read_history(REPORTS / "train_log.csv")
    overfit = overfitting_check(history, params.evaluate.overfit_gap)
    metrics.update(overfit)
    metrics["n_test"] = int(len(test_y))
    write_json(REPORTS / "per_class.json", metrics["per_class"])
    write_json(METRICS, {k: v for k, v in metrics.items() if k != "per_class"})
    matrix = confusion(y_true, y_pred, len(store.classes))
    plot_confusion(matrix, store.classes, REPORTS / "confusion.png",
                   title=f"{meta['model_name']}: test accuracy {metrics['test_accuracy']:.4f}")
    plot_curves(history, REPORTS / "curves.png", overfit)
    write_predictions(REPORTS / "predictions.csv", y_true, y_pred, store.classes)
    explained = {}
    if params.evaluate.explain.enabled:
        t_explain = time.perf_counter()
        explained = explain_model(model, to_tensor_nchw(test_x), test_y, store.classes, params.evaluate.explain,
                                  EXPLAIN, seed=params.seed, logits=logits)
        explained["explain_seconds"] = round(time.perf_counter() - t_explain, 2)
        for key in ("tsne_silhouette", "embedding_silhouette", "ece"):
            metrics[key] = explained[key]
        write_json(METRICS, {k: v for k, v in metrics.items() if k != "per_class"})
        write_json(EXPLAIN / "explain.json", explained)
    seconds = time.perf_counter() - t0
    with tracking.stage_run("evaluate", params.mlflow.experiment,
                            params={"evaluate.overfit_gap": params.evaluate.overfit_gap, "model": meta["model_name"]},
                            data_hash=store.data_hash()):
        flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        flat.update({f"f1.{name}": m["f1"] for name, m in metrics["per_class"].items()})
        tracking.log_metrics({**flat, "overfitting": float(overfit["overfitting"]), "evaluate_seconds": seconds})
        for name in ("metrics.json", "per_class.json", "confusion.png", "curves.png"):
            tracking.log_artifact(REPORTS / name)
        if explained:
            tracking.log_metrics({"explain_seconds": explained["explain_seconds"]})
            for path in sorted(EXPLAIN.iterdir()):
                tracking.log_artifact(path, "explain")
    print(f"[evaluate] test accuracy {metrics['test_accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}, "
          f"overfitting={overfit['overfitting']} (gap {overfit['loss_gap']:+.3f}) in {seconds:.1f}s")
    if explained:
        print(f"[evaluate] explain: Grad-CAM on {explained['cam_layer']}, t-SNE silhouette "
              f"{explained['tsne_silhouette']:.3f}, ECE {explained['ece']:.4f} in {explained['explain_seconds']:.1f}s "
              f"-> {EXPLAIN}/")
    return 0


if __name__ == "__main__":
    run_stage(main)
