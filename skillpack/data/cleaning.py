"""Finding mislabeled and anomalous training samples (the article's section 1.2), measured
against cleanlab's confident learning on the same out-of-fold predictions.

The expensive, shared part is the out-of-fold predictions (skillpack.train.oof, which trains
them; this module only reads them): K fold models, each trained on the other folds,
each predicting every sample. Detectors read it and give every sample a score and a flag:

  dbscan    per class, DBSCAN on the held-out model's embeddings: noise points are flagged
  vote      how many of the K fold models disagree with the given label
  gradient  norm of the loss gradient w.r.t. the logits, from the held-out model
  cleanlab  cleanlab.filter.find_label_issues on the out-of-fold probabilities (the reference)
  ensemble  at least `min_flags` of the chosen members flag the sample
  implausible  the ensemble's flags whose given label the fold models find implausible
            (mean probability below `max_label_prob`): drops the flipped labels, keeps the hard
            clean samples the ensemble also flags (what `drop` should act on: docs/benchmarks.md)

Nothing here modifies or deletes data: `apply_policy` returns a cleaned view (indices and
labels) and the flagged list that names every sample it drops or relabels.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from skillpack.config import CleanParams
from skillpack.io import atomic_path

# -- label noise (for benchmarks and tests) -------------------------------------------------

# Fashion-MNIST's most confused pairs (T-shirt/Shirt, Pullover/Coat, Sneaker/Ankle boot) plus
# two more so that every class has a partner.
FASHION_MNIST_PAIRS = {0: 6, 6: 0, 2: 4, 4: 2, 7: 9, 9: 7, 1: 3, 3: 1, 5: 8, 8: 5}


def inject_label_noise(labels: np.ndarray, rate: float, kind: str, num_classes: int, seed: int,
                       pairs: dict[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flip `rate` of the labels (exactly round(rate * N), chosen at random): `symmetric` to a
    uniformly drawn other class, `pair` to the class's partner. Returns (noisy labels, flipped mask)."""
    if kind not in ("symmetric", "pair"):
        raise ValueError(f"noise kind {kind!r}: expected 'symmetric' or 'pair'")
    rng = np.random.default_rng(seed)
    flipped = np.zeros(len(labels), dtype=bool)
    flipped[rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)] = True
    noisy = labels.copy()
    if kind == "symmetric":
        shift = rng.integers(1, num_classes, size=int(flipped.sum()))
        noisy[flipped] = (labels[flipped] + shift) % num_classes
    else:
        partner = pairs or {c: (c + 1) % num_classes for c in range(num_classes)}
        noisy[flipped] = [partner[int(c)] for c in labels[flipped]]
    return noisy, flipped


# -- out-of-fold predictions -------------------------------------------------------------

@dataclass
class OutOfFold:
    fold: np.ndarray         # N: the fold each sample was held out in
    probs: np.ndarray        # K x N x C: every fold model's softmax on every sample
    embeddings: np.ndarray   # N x D: the held-out model's penultimate embeddings
    grad_norm: np.ndarray    # N: |d loss / d logits| under the held-out model and the given label

    @property
    def oof_probs(self) -> np.ndarray:
        return self.probs[self.fold, np.arange(len(self.fold))]

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, fold=self.fold, probs=self.probs, embeddings=self.embeddings, grad_norm=self.grad_norm)

    @classmethod
    def load(cls, path: str | Path) -> OutOfFold:
        with np.load(path) as data:
            return cls(**{name: data[name] for name in ("fold", "probs", "embeddings", "grad_norm")})


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    fold = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold[held_out] = k
    return fold


# -- detectors ---------------------------------------------------------------------------

@dataclass
class Detection:
    score: np.ndarray                  # N, higher = more suspicious
    flag: np.ndarray                   # N bool
    suggested: np.ndarray | None = None  # N: the label the detector would give instead, if any
    info: dict | None = None           # what the detector chose (thresholds, eps per class, ...)


def knee(sorted_values: np.ndarray) -> float:
    """The value at the knee of an ascending curve: the point farthest from the chord between
    its ends (the usual way to read eps off a k-distance plot)."""
    n = len(sorted_values)
    if n < 3:
        return float(sorted_values[-1])
    x = np.linspace(0.0, 1.0, n)
    span = sorted_values[-1] - sorted_values[0]
    y = (sorted_values - sorted_values[0]) / (span if span > 0 else 1.0)
    return float(sorted_values[int(np.argmax(x - y))])


def k_distances(points: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(points) - 1)
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    return np.sort(distances[:, k])  # column 0 is the point itself


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def detect_dbscan(oof: OutOfFold, labels: np.ndarray, cfg: CleanParams) -> Detection:
    """Per class: DBSCAN on the unit-normalised embeddings, eps from the knee of the k-distance
    curve (or cfg.dbscan.eps). Noise points are flagged; the score is the distance to the
    nearest core point of the own class in units of eps (> 1 = noise). The suggested label
    is the class whose core points lie nearest in the same units: the class a flagged point
    clusters with. (Flagging whole clusters that sit among another class - a joint DBSCAN over
    all classes, or everything outside a class's largest cluster - was measured and found
    worse on injected label noise: docs/benchmarks.md.)"""
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import NearestNeighbors

    emb = _unit(oof.embeddings)
    classes = np.unique(labels)
    k = cfg.dbscan.min_samples
    eps, cores = {}, {}
    flag = np.zeros(len(labels), dtype=bool)
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if len(idx) <= k:  # too few samples to have a density: nothing can be called an outlier
            eps[int(c)], cores[int(c)] = np.inf, emb[idx]
            continue
        eps[int(c)] = cfg.dbscan.eps or knee(k_distances(emb[idx], k))
        clustering = DBSCAN(eps=eps[int(c)], min_samples=k).fit(emb[idx])
        flag[idx] = clustering.labels_ == -1
        core = clustering.core_sample_indices_
        cores[int(c)] = emb[idx[core]] if len(core) else emb[idx]
    # distance to each class's nearest core point, in that class's eps
    rel = np.full((len(labels), len(classes)), np.inf, dtype=np.float64)
    for j, c in enumerate(classes):
        d, _ = NearestNeighbors(n_neighbors=1).fit(cores[int(c)]).kneighbors(emb)
        rel[:, j] = d[:, 0] / eps[int(c)] if np.isfinite(eps[int(c)]) else np.inf
    own = rel[np.arange(len(labels)), np.searchsorted(classes, labels)]
    score = np.where(np.isfinite(own), own, 0.0)
    suggested = classes[np.argmin(rel, axis=1)]
    return Detection(score=score, flag=flag, suggested=suggested,
                     info={"eps": {str(c): float(e) for c, e in eps.items()}, "min_samples": k})


def detect_vote(oof: OutOfFold, labels: np.ndarray, cfg: CleanParams) -> Detection:
    votes = oof.probs.argmax(2)                      # K x N
    disagree = (votes != labels[None, :]).sum(0)
    need = cfg.vote.min_disagree or oof.probs.shape[0]
    return Detection(score=disagree / oof.probs.shape[0], flag=disagree >= need,
                     suggested=oof.probs.mean(0).argmax(1), info={"min_disagree": need, "models": oof.probs.shape[0]})


def robust_threshold(values: np.ndarray, k: float) -> float:
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median))) * 1.4826  # scaled to sigma for normal data
    return median + k * mad


def detect_gradient(oof: OutOfFold, labels: np.ndarray, cfg: CleanParams) -> Detection:
    """Flag gradient norms above median + k x MAD of the reference population: the samples whose
    held-out prediction agrees with their label. (The MAD of all samples is no good reference:
    with 20% noise the flipped samples widen it until nothing is above median + 3 MAD.)"""
    agree = oof.oof_probs.argmax(1) == labels
    reference = oof.grad_norm[agree] if agree.any() else oof.grad_norm
    threshold = cfg.gradient.threshold or robust_threshold(reference, cfg.gradient.mad_threshold)
    return Detection(score=oof.grad_norm.astype(np.float64), flag=oof.grad_norm > threshold,
                     suggested=oof.oof_probs.argmax(1), info={"threshold": float(threshold),
                                                              "reference_samples": int(agree.sum())})


def detect_cleanlab(oof: OutOfFold, labels: np.ndarray, cfg: CleanParams) -> Detection:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = oof.oof_probs
    flag = find_label_issues(labels, probs, filter_by=cfg.cleanlab.filter_by)
    return Detection(score=1.0 - get_label_quality_scores(labels, probs), flag=np.asarray(flag, dtype=bool),
                     suggested=probs.argmax(1), info={"filter_by": cfg.cleanlab.filter_by})


DETECTORS: dict[str, Callable[[OutOfFold, np.ndarray, CleanParams], Detection]] = {
    "dbscan": detect_dbscan,
    "vote": detect_vote,
    "gradient": detect_gradient,
    "cleanlab": detect_cleanlab,
}


def percentile_rank(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return (rankdata(values) - 1) / max(len(values) - 1, 1)


def ensemble(detections: dict[str, Detection], oof: OutOfFold, cfg: CleanParams) -> Detection:
    members = cfg.ensemble.members
    flags = np.stack([detections[m].flag for m in members]).sum(0)
    score = np.mean([percentile_rank(detections[m].score) for m in members], axis=0)
    return Detection(score=score, flag=flags >= cfg.ensemble.min_flags, suggested=oof.probs.mean(0).argmax(1),
                     info={"members": list(members), "min_flags": cfg.ensemble.min_flags})


def implausible(flagged: Detection, oof: OutOfFold, labels: np.ndarray, cfg: CleanParams) -> Detection:
    """Measured on the noise benchmark: most clean samples the ensemble flags are hard ones whose
    label is the fold models' second choice, and dropping them costs more test accuracy than
    the flipped labels do; a flipped label usually gets next to no probability at all."""
    label_prob = oof.probs.mean(0)[np.arange(len(labels)), labels]
    flag = flagged.flag & (label_prob < cfg.implausible.max_label_prob)
    return Detection(score=1.0 - label_prob, flag=flag, suggested=flagged.suggested,
                     info={"flagged_by": "ensemble", "max_label_prob": cfg.implausible.max_label_prob})


def run_detectors(oof: OutOfFold, labels: np.ndarray, cfg: CleanParams) -> dict[str, Detection]:
    detections = {name: detect(oof, labels, cfg) for name, detect in DETECTORS.items()}
    detections["ensemble"] = ensemble(detections, oof, cfg)
    detections["implausible"] = implausible(detections["ensemble"], oof, labels, cfg)
    return detections


# -- results -----------------------------------------------------------------------------

def flag_table(ids: np.ndarray, labels: np.ndarray, detections: dict[str, Detection], use: str,
               classes: list[str]) -> pd.DataFrame:
    """One row per sample flagged by any detector, most suspicious (by `use`'s score) first."""
    chosen = detections[use]
    columns = {"id": ids, "index": np.arange(len(ids)), "given_label": labels,
               "given_name": [classes[i] for i in labels], "suggested_label": chosen.suggested,
               "suggested_name": [classes[i] for i in chosen.suggested]}
    for name, det in detections.items():
        columns[f"{name}_score"] = np.round(det.score, 5)
        columns[f"{name}_flag"] = det.flag
    table = pd.DataFrame(columns)
    any_flag = np.any([det.flag for det in detections.values()], axis=0)
    return table[any_flag].sort_values(f"{use}_score", ascending=False, kind="stable").reset_index(drop=True)


@dataclass
class CleanedView:
    index: np.ndarray        # rows of the train split that are kept
    labels: np.ndarray       # their labels after the policy
    actions: pd.DataFrame    # id, given_label, label, action (keep | drop | relabel) for every input row

    @property
    def counts(self) -> dict[str, int]:
        by_action = self.actions["action"].value_counts()
        return {"input": int(len(self.actions)), **{a: int(by_action.get(a, 0)) for a in ("keep", "drop", "relabel")}}


def apply_policy(ids: np.ndarray, labels: np.ndarray, detection: Detection, policy: str) -> CleanedView:
    """flag: everything kept as given; drop: flagged rows left out; relabel: flagged rows get
    the suggested label (rows whose suggestion equals the given label stay as they are)."""
    action = np.full(len(labels), "keep", dtype=object)
    new_labels = labels.copy()
    if policy == "drop":
        action[detection.flag] = "drop"
    elif policy == "relabel":
        change = detection.flag & (detection.suggested != labels)
        action[change] = "relabel"
        new_labels[change] = detection.suggested[change]
    elif policy != "flag":
        raise ValueError(f"clean.policy {policy!r}: expected flag, drop or relabel")
    kept = np.flatnonzero(action != "drop")
    actions = pd.DataFrame({"id": ids, "given_label": labels, "label": new_labels, "action": action})
    return CleanedView(index=kept, labels=new_labels[kept], actions=actions)


# -- knowing its limits --------------------------------------------------------------------

CANNOT_JUDGE = "cannot judge: the fold models are too weak"


class CleaningStopped(ValueError):
    """A policy would act on more of the training set than clean.max_drop_fraction allows."""


def judge_fold_models(oof_probs: np.ndarray, labels: np.ndarray, min_skill: float) -> dict:
    """Whether the fold models are good enough for their disagreement to mean anything. Chance
    is what always answering the largest class scores (its share of the labels); skill is
    (accuracy - chance) / (1 - chance), 0 at chance and 1 when perfect. Below `min_skill`
    (clean.min_oof_skill), or not above chance, the flags say more about the models than
    about the labels: `can_judge` is False."""
    from skillpack.metrics import accuracy

    n = len(labels)
    acc = accuracy(oof_probs, labels) if n else float("nan")
    chance = float(np.bincount(labels).max() / n) if n else float("nan")
    skill = (acc - chance) / (1.0 - chance) if n and chance < 1.0 else 0.0
    can_judge = bool(n and acc > chance and skill >= min_skill)
    verdict = {"oof_accuracy": float(acc), "chance": chance, "skill": float(skill), "min_skill": float(min_skill),
               "can_judge": can_judge}
    verdict["message"] = (
        f"fold models' out-of-fold accuracy {acc:.3f}, chance {chance:.3f} (largest class share), "
        f"skill {skill:.3f} {'>=' if can_judge else '<'} clean.min_oof_skill {min_skill:g}")
    if not can_judge:
        verdict["message"] = f"{CANNOT_JUDGE} ({verdict['message']})"
    return verdict


def decide_policy(ids: np.ndarray, labels: np.ndarray, detection: Detection, oof: OutOfFold,
                  cfg: CleanParams) -> tuple[CleanedView, dict]:
    """The cleaned view the clean stage writes, and why. With fold models too weak to judge,
    drop and relabel refuse to act: every sample is kept as given (the flags are still
    reported). A policy that would drop or relabel more than clean.max_drop_fraction of the
    training set raises CleaningStopped, naming the numbers."""
    verdict = judge_fold_models(oof.oof_probs, labels, cfg.min_oof_skill)
    applied = cfg.policy
    if cfg.policy != "flag" and not verdict["can_judge"]:
        applied = "flag"
        verdict["refused"] = (f"clean.policy={cfg.policy} refused, flagging only: {verdict['message']}; "
                              f"{int(detection.flag.sum())} of {len(labels)} samples flagged by {cfg.use}")
    view = apply_policy(ids, labels, detection, applied)
    counts = view.counts
    acted = counts["drop"] + counts["relabel"]
    share = acted / max(counts["input"], 1)
    decision = {"policy": cfg.policy, "policy_applied": applied, "judge": verdict,
                "acted_share": share, "max_drop_fraction": cfg.max_drop_fraction}
    if share > cfg.max_drop_fraction:
        raise CleaningStopped(
            f"clean.policy={cfg.policy} on {cfg.use} would {'drop' if cfg.policy == 'drop' else 'relabel'} "
            f"{acted} of {counts['input']} training samples ({share:.1%}), over clean.max_drop_fraction "
            f"{cfg.max_drop_fraction:.0%}: stopped, nothing is dropped. Look at reports/flagged.csv, then raise "
            f"clean.max_drop_fraction, choose a stricter clean.use, or set clean.policy=flag "
            f"({verdict['message']})")
    return view, decision


def precision_recall_f1(flag: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = int((flag & truth).sum())
    precision = tp / max(int(flag.sum()), 1)
    recall = tp / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": int(flag.sum())}


# -- the cleaned view on disk (what the train stage reads) -------------------------------

def write_cleaned(out: str | Path, view: CleanedView, summary: dict) -> None:
    from skillpack.io import write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, array in (("train_index.npy", view.index), ("train_labels.npy", view.labels)):
        with atomic_path(out / name) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, array.astype(np.int64))
    with atomic_path(out / "actions.csv") as tmp:
        view.actions.to_csv(tmp, index=False)
    write_json(out / "summary.json", {**summary, **view.counts})


def read_cleaned(root: str | Path, data_hash: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(kept train rows, their labels, summary) of the cleaned view made from `data_hash`."""
    import json

    root = Path(root)
    summary = json.loads((root / "summary.json").read_text())
    if summary.get("data_hash") != data_hash:
        raise ValueError(f"{root}/summary.json: made from data {summary.get('data_hash')}, but the prepared "
                         f"store is {data_hash}; run `dvc repro clean`")
    return np.load(root / "train_index.npy"), np.load(root / "train_labels.npy"), summary


def cleaned_train_split(images: np.ndarray, labels: np.ndarray, root: str | Path, data_hash: str):
    """The train split as the clean stage left it: (images, labels, summary) of the kept rows
    with their labels after the policy; the split unchanged (and an empty summary) when there
    is no cleaned view. summary["view_hash"] names the view (a new one restarts training)."""
    from skillpack.io import file_sha256

    root = Path(root)
    if not (root / "summary.json").is_file():
        print(f"[train] no {root}: training on the prepared train split as is")
        return images, labels, {}
    index, new_labels, summary = read_cleaned(root, data_hash)
    summary["view_hash"] = file_sha256(root / "actions.csv")[:16]
    if summary["policy"] != "flag":
        print(f"[train] clean.policy={summary['policy']}: {summary['keep']} kept as given, "
              f"{summary['relabel']} relabeled, {summary['drop']} dropped (of {summary['input']})")
    return images[index], new_labels, summary
