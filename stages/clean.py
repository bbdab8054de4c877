"""clean: every detector scores every train sample from the out-of-fold predictions; writes the
flagged list, a grid of the most suspicious images, and the cleaned view the train stage
reads (policy clean.policy: flag | drop | relabel). The prepared store is never modified.
With fold models too weak to judge (clean.min_oof_skill) drop and relabel only flag; a policy
acting on more than clean.max_drop_fraction of the train split stops the stage."""
from __future__ import annotations

from stages.common import params_from_argv, publish, run_stage


def main() -> int:
    import sys

    from skillpack import paths, tracking
    from skillpack.config import flatten
    from skillpack.data.cleaning import CleaningStopped
    from skillpack.data.cleaning_run import clean_production

    params = params_from_argv()
    cfg = params.clean
    try:  # drop / relabel refuse when the fold models are too weak; stop above clean.max_drop_fraction
        result = clean_production(cfg)
    except CleaningStopped as err:
        print(f"[clean] STOPPED: {err}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(f"[clean] {note}")
    f = result.figures
    flat = {k: v for k, v in flatten(cfg, "clean").items() if not k.startswith("clean.oof.")}
    with tracking.stage_run("clean", params.registry.experiment, params=flat, data_hash=result.data_hash):
        publish(f, paths.CLEAN_METRICS, details=result.details, dvc=paths.CLEAN_DVC_METRICS,
                dvc_keys=("flagged", "keep", "drop", "relabel"),
                artifacts=[(p, "clean") for p in (paths.FLAGGED, paths.CLEAN_METRICS, paths.CLEAN_PLOTS / "suspicious.png",
                                                  paths.CLEAN_PLOTS / "gradient_norms.png")])
    flagged = ", ".join(f"{k[len('flagged_'):]} {v}" for k, v in f.items() if k.startswith("flagged_"))
    print(f"[clean] flagged of {f['input']}: {flagged}; policy {f['policy_applied']} on {cfg.use}: "
          f"kept {f['keep']}, dropped {f['drop']}, relabeled {f['relabel']} -> {paths.CLEANED}, {paths.FLAGGED}")
    return 0


if __name__ == "__main__":
    run_stage(main)
