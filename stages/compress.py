"""compress: one pass from the trained model: the model pruned to (1 - prune_ratio) of its
channels and fine-tuned (compress.finetune), and a student (compress.student) distilled from
it, each trained once with params' seed and scored on the test set against the trained model.
A variant that loses more than compress.max_drop_points is recorded as rejected and not saved;
the accepted ones go to models/compressed/<variant>.pt, every figure to reports/compress.json.
The int8 forms and the choice of the served model are the export stage's. (Intervals over
seeds for the article's pruning and distillation claims are the ablation's: ablations/.)"""
from __future__ import annotations

from stages.common import params_from_argv, run_stage


def main() -> int:
    import time

    from skillpack import paths, tracking
    from skillpack.config import derive, flatten
    from skillpack.data import PreparedStore
    from skillpack.data.cleaning import cleaned_train_split
    from skillpack.deploy.compress import compress_once
    from skillpack.io import write_json
    from skillpack.train.checkpoint import load_classifier, save_classifier
    from skillpack.train.runs import RunData

    params = params_from_argv()
    cfg = params.compress
    store = PreparedStore(paths.PREPARED)
    data_hash = store.data_hash()
    train_x, train_y, _ = cleaned_train_split(*store.arrays("train"), paths.CLEANED, data_hash)
    data = RunData((train_x, train_y), store.arrays("val"), len(store.classes))
    test = store.arrays("test")
    baseline, meta = load_classifier(paths.MODEL_FILE)
    t0 = time.perf_counter()
    with tracking.stage_run("compress", params.registry.experiment,
                            params={**flatten(cfg, "compress"), "seed": params.seed}, data_hash=data_hash):
        result = compress_once(baseline, meta["model_name"], data, test,
                               derive(params.train, cfg.finetune), derive(params.train, cfg.student), cfg,
                               params.seed, on_variant=lambda name: print(f"[compress] training {name}", flush=True))
        for name, variant in result.variants.items():
            path = paths.COMPRESSED / f"{name}.pt"
            if variant.accepted:
                save_classifier(path, variant.model, model_name=variant.model_name, classes=store.classes,
                                image_shape=store.image_shape, head=params.train.head,
                                extra={"data_hash": data_hash, "seed": params.seed, "variant": name})
            else:
                path.unlink(missing_ok=True)
        summary = {"seed": params.seed, "prune_ratio": cfg.prune_ratio, "prune_importance": cfg.prune_importance,
                   "max_drop_points": cfg.max_drop_points, "n_train": int(len(train_y)),
                   "n_test": int(len(test[1])), "data_hash": data_hash,
                   "baseline": {**result.baseline_size, "test_accuracy": result.baseline_accuracy},
                   "variants": {name: v.figures() for name, v in result.variants.items()},
                   "seconds": round(time.perf_counter() - t0, 1)}
        write_json(paths.COMPRESS_METRICS, summary)
        tracking.log_metrics({f"{name}_{key}": float(v.figures()[key]) for name, v in result.variants.items()
                              for key in ("test_accuracy", "delta_points", "accepted")})
        tracking.log_artifact(paths.COMPRESS_METRICS)
    for name, v in result.variants.items():
        print(f"[compress] {name} ({v.model_name}, {v.params:,} params): test accuracy {v.test_accuracy:.4f}, "
              f"{v.delta_points:+.2f} points vs the trained model: "
              f"{'accepted' if v.accepted else f'REJECTED (budget -{cfg.max_drop_points} points)'}")
    print(f"[compress] {summary['seconds']:.0f}s -> {paths.COMPRESSED}, {paths.COMPRESS_METRICS}")
    return 0


if __name__ == "__main__":
    run_stage(main)
