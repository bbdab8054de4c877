"""The clean stage's work: every detector scores every train sample from the out-of-fold
predictions; the flagged list, a grid of the most suspicious images, the gradient-norm
histogram and the cleaned view the train stage reads (clean.policy: flag | drop | relabel).
The prepared store is never modified."""
from __future__ import annotations

from dataclasses import dataclass, field

from skillpack import paths
from skillpack.config import CleanParams
from skillpack.data import PreparedStore
from skillpack.data.cleaning import (
    OutOfFold,
    decide_policy,
    flag_table,
    run_detectors,
    write_cleaned,
)
from skillpack.io import atomic_path
from skillpack.metrics import accuracy
from skillpack.plots import plot_image_grid, plot_score_histogram


@dataclass
class Cleaning:
    figures: dict                  # flat: policy, counts, flags per detector, oof accuracy
    details: dict                  # nested: the fold models' judgement, each detector's settings
    data_hash: str
    notes: list[str] = field(default_factory=list)   # what the user must know (a refused policy, untrustworthy flags)


def load_oof(labels) -> OutOfFold:
    oof = OutOfFold.load(paths.OOF_FILE)
    if len(oof.fold) != len(labels):
        raise ValueError(f"{paths.OOF_FILE}: {len(oof.fold)} samples, the train split has {len(labels)}; "
                         f"run `dvc repro oof`")
    return oof


def clean_production(cfg: CleanParams) -> Cleaning:
    """Flag, decide, write the cleaned view and the plots; cleaning.CleaningStopped when the
    policy would act on more than clean.max_drop_fraction of the train split."""
    store = PreparedStore(paths.PREPARED)
    images, labels = store.arrays("train")
    ids = store.manifest().query("split == 'train'")["id"].to_numpy()
    oof = load_oof(labels)
    detections = run_detectors(oof, labels, cfg)
    table = flag_table(ids, labels, detections, cfg.use, store.classes)
    with atomic_path(paths.FLAGGED) as tmp:
        table.to_csv(tmp, index=False)
    view, decision = decide_policy(ids, labels, detections[cfg.use], oof, cfg)
    write_cleaned(paths.CLEANED, view, {"policy": decision["policy_applied"], "policy_requested": cfg.policy,
                                        "use": cfg.use, "data_hash": store.data_hash()})
    plot_suspicious(table, images, cfg)
    plot_gradient_norms(detections["gradient"])
    figures = {"policy": cfg.policy, "policy_applied": decision["policy_applied"], "use": cfg.use,
               "flagged": int(detections[cfg.use].flag.sum()), **view.counts, "acted_share": decision["acted_share"],
               **{f"flagged_{name}": int(det.flag.sum()) for name, det in detections.items()},
               "oof_accuracy": accuracy(oof.oof_probs, labels)}
    details = {"judge": decision["judge"], "detectors": {name: det.info for name, det in detections.items()}}
    return Cleaning(figures, details, store.data_hash(), judge_notes(decision["judge"]))


def judge_notes(judge: dict) -> list[str]:
    if "refused" in judge:
        return [judge["refused"]]
    if not judge["can_judge"]:
        return [f"{judge['message']}: the flags below are not to be trusted"]
    return []


def plot_suspicious(table, images, cfg: CleanParams) -> None:
    top = table.head(cfg.grid_images)
    plot_image_grid([{"image": images[i], "caption": f"{g} -> {s}\n{cfg.use} {sc:.2f}", "bad": g != s}
                     for i, g, s, sc in zip(top["index"], top["given_name"], top["suggested_name"],
                                            top[f"{cfg.use}_score"])],
                    paths.CLEAN_PLOTS / "suspicious.png",
                    f"Most suspicious train images by {cfg.use} (given -> suggested label)")


def plot_gradient_norms(grad) -> None:
    plot_score_histogram({"not flagged": grad.score[~grad.flag], "flagged": grad.score[grad.flag]},
                         grad.info["threshold"], paths.CLEAN_PLOTS / "gradient_norms.png",
                         "Per-sample |d loss / d logits| (held-out model, given label)")
