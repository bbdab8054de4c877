"""oof: K fold models on the prepared train split, each predicting every sample - the shared,
expensive input of every cleaning detector, computed once per data version (DVC caches it)."""
from __future__ import annotations

from stages.common import params_from_argv, publish, run_stage


def main() -> int:
    import time

    import numpy as np

    from skillpack import paths, tracking
    from skillpack.config import flatten
    from skillpack.data import PreparedStore
    from skillpack.metrics import accuracy
    from skillpack.train.oof import out_of_fold

    params = params_from_argv()
    cfg = params.clean.oof
    store = PreparedStore(paths.PREPARED)
    images, labels = store.arrays("train")
    t0 = time.perf_counter()
    with tracking.stage_run("oof", params.registry.experiment, params={**flatten(cfg, "clean.oof"), "seed": params.seed},
                            data_hash=store.data_hash()):
        def on_fold(k, figures):
            tracking.log_metrics(figures, step=k)
            print(f"[oof] fold {k + 1}/{cfg.folds}: held-out accuracy {figures['held_out_acc']:.4f} "
                  f"({figures['train_seconds']:.0f}s)", flush=True)

        fold_cfg = cfg.train_params(params.train.threads, params.runtime.device)
        oof = out_of_fold(images, labels, len(store.classes), fold_cfg, cfg.folds, params.seed, on_fold=on_fold)
        oof.save(paths.OOF_FILE)
        summary = {"folds": cfg.folds, "model": fold_cfg.model, "epochs": fold_cfg.epochs, "samples": int(len(labels)),
                   "oof_accuracy": accuracy(oof.oof_probs, labels),
                   "seconds": round(time.perf_counter() - t0, 1), "data_hash": store.data_hash()}
        publish(summary, paths.OOF_METRICS, dvc=paths.OOF_DVC_METRICS, dvc_keys=("oof_accuracy",))
    chance = float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")
    print(f"[oof] {cfg.folds} folds of {fold_cfg.model}: out-of-fold accuracy {summary['oof_accuracy']:.4f} "
          f"(chance, the largest class's share: {chance:.4f}) in {summary['seconds']:.0f}s -> {paths.OOF_FILE}")
    return 0


if __name__ == "__main__":
    run_stage(main)
