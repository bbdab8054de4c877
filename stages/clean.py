"""clean: every detector scores every train sample from the out-of-fold predictions; writes the
flagged list, a grid of the most suspicious images, and the cleaned view the train stage
reads (policy clean.policy: flag | drop | relabel). The prepared store is never modified.
With fold models too weak to judge (clean.min_oof_skill) drop and relabel only flag; a policy
acting on more than clean.max_drop_fraction of the train split stops the stage."""
from __future__ import annotations

from stages.common import params_from_argv, run_stage, write_dvc_metrics


def main() -> int:
    import sys

    from skillpack import paths, tracking
    from skillpack.config import flatten
    from skillpack.data import PreparedStore, cleaning
    from skillpack.io import atomic_path, write_json
    from skillpack.metrics import accuracy
    from skillpack.plots import plot_image_grid, plot_score_histogram

    params = params_from_argv()
    cfg = params.clean
    store = PreparedStore(paths.PREPARED)
    images, labels = store.arrays("train")
    ids = store.manifest().query("split == 'train'")["id"].to_numpy()
    oof = cleaning.OutOfFold.load(paths.OOF_FILE)
    if len(oof.fold) != len(labels):
        raise ValueError(f"{paths.OOF_FILE}: {len(oof.fold)} samples, the train split has {len(labels)}; "
                         f"run `dvc repro oof`")
    detections = cleaning.run_detectors(oof, labels, cfg)
    chosen = detections[cfg.use]
    table = cleaning.flag_table(ids, labels, detections, cfg.use, store.classes)
    with atomic_path(paths.FLAGGED) as tmp:
        table.to_csv(tmp, index=False)
    try:  # drop / relabel refuse when the fold models are too weak; stop above clean.max_drop_fraction
        view, decision = cleaning.decide_policy(ids, labels, chosen, oof, cfg)
    except cleaning.CleaningStopped as err:
        print(f"[clean] STOPPED: {err}", file=sys.stderr)
        return 1
    judge = decision["judge"]
    if "refused" in judge:
        print(f"[clean] {judge['refused']}")
    elif not judge["can_judge"]:
        print(f"[clean] {judge['message']}: the flags below are not to be trusted")
    cleaning.write_cleaned(paths.CLEANED, view, {"policy": decision["policy_applied"], "policy_requested": cfg.policy,
                                                 "use": cfg.use, "data_hash": store.data_hash()})

    top = table.head(cfg.grid_images)
    plot_image_grid([{"image": images[i], "caption": f"{g} -> {s}\n{cfg.use} {sc:.2f}", "bad": g != s}
                     for i, g, s, sc in zip(top["index"], top["given_name"], top["suggested_name"],
                                            top[f"{cfg.use}_score"])],
                    paths.CLEAN_PLOTS / "suspicious.png",
                    f"Most suspicious train images by {cfg.use} (given -> suggested label)")
    grad = detections["gradient"]
    plot_score_histogram({"not flagged": grad.score[~grad.flag], "flagged": grad.score[grad.flag]},
                         grad.info["threshold"], paths.CLEAN_PLOTS / "gradient_norms.png",
                         "Per-sample |d loss / d logits| (held-out model, given label)")
    summary = {"policy": cfg.policy, "policy_applied": decision["policy_applied"], "use": cfg.use, **view.counts,
               "judge": judge, "acted_share": decision["acted_share"],
               "flagged": {name: int(det.flag.sum()) for name, det in detections.items()},
               "detectors": {name: det.info for name, det in detections.items()},
               "oof_accuracy": accuracy(oof.oof_probs, labels)}
    write_json(paths.CLEAN_METRICS, summary)
    write_dvc_metrics(paths.CLEAN_DVC_METRICS, {"flagged": int(detections[cfg.use].flag.sum()), "kept": view.counts["keep"],
                                                "dropped": view.counts["drop"], "relabelled": view.counts["relabel"]})
    flat = {k: v for k, v in flatten(cfg, "clean").items() if not k.startswith("clean.oof.")}
    with tracking.stage_run("clean", params.registry.experiment, params=flat, data_hash=store.data_hash()):
        tracking.log_metrics({**{f"flagged_{k}": v for k, v in summary["flagged"].items()},
                              **{k: summary[k] for k in ("input", "keep", "drop", "relabel")}})
        for path in (paths.FLAGGED, paths.CLEAN_METRICS, paths.CLEAN_PLOTS / "suspicious.png",
                     paths.CLEAN_PLOTS / "gradient_norms.png"):
            tracking.log_artifact(path, "clean")
    flagged = ", ".join(f"{k} {v}" for k, v in summary["flagged"].items())
    print(f"[clean] flagged of {len(labels)}: {flagged}; policy {decision['policy_applied']} on {cfg.use}: "
          f"kept {view.counts['keep']}, dropped {view.counts['drop']}, relabeled {view.counts['relabel']} "
          f"-> {paths.CLEANED}, {paths.FLAGGED}")
    return 0


if __name__ == "__main__":
    run_stage(main)
