"""evaluate: test metrics, per-class report, confusion matrix, training curves, and the visual
analysis (Grad-CAM, t-SNE, calibration, errors)."""
from __future__ import annotations

from stages.common import params_from_argv, publish, run_stage

EVALUATED = ("test_accuracy", "macro_f1", "test_loss", "ece")  # on the registered version, as tags
COMPARED = ("test_accuracy", "macro_f1", "ece")                 # by `dvc metrics diff`


def main() -> int:
    from skillpack import model_registry, paths, tracking
    from skillpack.train.evaluation import evaluate_production

    params = params_from_argv()
    result = evaluate_production(params.evaluate, params.train.threads, params.seed)
    f = result.figures
    with tracking.stage_run("evaluate", params.registry.experiment, data_hash=result.data_hash,
                            params={"evaluate.overfit_gap": params.evaluate.overfit_gap, "model": result.model_name}):
        artifacts = [(p, None) for p in (paths.PER_CLASS, paths.CONFUSION_PNG, paths.CURVES_PNG)]
        artifacts += [(p, "explain") for p in sorted(paths.EXPLAIN.iterdir())] if result.explained else []
        publish(f, paths.METRICS, dvc=paths.EVALUATE_DVC_METRICS, dvc_keys=tuple(k for k in COMPARED if k in f),
                artifacts=((paths.METRICS, None), *artifacts))
        model_registry.describe_alias(params.registry.model, params.registry.aliases.candidate,
                                {f"test.{k}": f"{f[k]:.4f}" for k in EVALUATED if k in f})
    print(f"[evaluate] test accuracy {f['test_accuracy']:.4f}, macro F1 {f['macro_f1']:.4f}, "
          f"overfitting={f['overfitting']} (gap {f['loss_gap']:+.3f}) in {f['evaluate_seconds']:.1f}s")
    if result.explained:
        print(f"[evaluate] explain: Grad-CAM on {result.explained['cam_layer']}, t-SNE silhouette "
              f"{f['tsne_silhouette']:.3f}, ECE {f['ece']:.4f} in {f['explain_seconds']:.1f}s -> {paths.EXPLAIN}/")
    return 0


if __name__ == "__main__":
    run_stage(main)
