"""compress: one pass from the trained model: the model pruned to (1 - prune_ratio) of its
channels and fine-tuned (compress.finetune), and a student (compress.student) distilled from
it, each trained once with params' seed and scored on the test set against the trained model.
A variant that loses more than compress.max_drop_points is recorded as rejected and not saved;
the accepted ones go to models/compressed/<variant>.pt, every figure to reports/compress.json.
The int8 forms and the choice of the served model are the export stage's. (Intervals over
seeds for the article's pruning and distillation claims are the ablation's: ablations/.)"""
from __future__ import annotations

from stages.common import params_from_argv, publish, run_stage


def main() -> int:
    from skillpack import paths, tracking
    from skillpack.config import flatten
    from skillpack.data import PreparedStore
    from skillpack.deploy.compress import compress_production

    params = params_from_argv()
    cfg = params.compress
    with tracking.stage_run("compress", params.registry.experiment, params={**flatten(cfg, "compress"),
                            "seed": params.seed}, data_hash=PreparedStore(paths.PREPARED).data_hash()):
        result, figures, details = compress_production(
            cfg, params.train, params.seed, on_variant=lambda name: print(f"[compress] training {name}", flush=True))
        publish(figures, paths.COMPRESS_METRICS, details=details, artifacts=((paths.COMPRESS_METRICS, None),))
    for name, v in result.variants.items():
        print(f"[compress] {name} ({v.model_name}, {v.params:,} params): test accuracy {v.test_accuracy:.4f}, "
              f"{v.delta_points:+.2f} points vs the trained model: "
              f"{'accepted' if v.accepted else f'REJECTED (budget -{cfg.max_drop_points} points)'}")
    print(f"[compress] {figures['seconds']:.0f}s -> {paths.COMPRESSED}, {paths.COMPRESS_METRICS}")
    return 0


if __name__ == "__main__":
    run_stage(main)
