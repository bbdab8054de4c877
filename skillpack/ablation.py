"""The ablation engine: arms x seeds of train + evaluate, paired statistics, verdicts.

A spec (ablations/*.yaml) names a baseline, data regimes, arms (params overrides + the claim
ids they test + a regime) and a cumulative chain. Each (arm, seed) run is a pure function of
(config, seed, data): its result is stored as JSON under a key of those hashes, so an
interrupted ablation resumes and a finished run is never recomputed.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from skillpack.config import Params, apply_overrides
from skillpack.io import write_json

VERDICTS = ("improves", "hurts", "no detectable effect")


# ------------------------------------------------------------------ spec

@dataclass
class Arm:
    name: str
    overrides: dict
    claims: list[str] = field(default_factory=list)
    regime: str = "standard"
    baseline: str = "baseline"  # the arm it is compared with (same regime)


@dataclass
class Spec:
    name: str
    seeds: list[int]
    regimes: dict[str, dict]
    base: dict            # overrides every run shares (budget, recipe)
    arms: list[Arm]       # baselines first (one per regime), then the arms
    cumulative: list[Arm]
    teachers: dict[str, dict]

    def arm(self, name: str) -> Arm:
        for arm in self.arms + self.cumulative:
            if arm.name == name:
                return arm
        raise KeyError(f"no arm {name!r} in spec {self.name}")


def load_spec(path: str | Path, quick: bool = False) -> Spec:
    raw = yaml.safe_load(Path(path).read_text())
    profile = raw.get("quick", {}) if quick else {}

    def arms(items, default_baseline):
        return [Arm(name=a["name"], overrides=a.get("overrides", {}) or {}, claims=a.get("claims", []) or [],
                    regime=a.get("regime", "standard"), baseline=a.get("baseline", default_baseline)) for a in items]

    regimes = {name: {**(body or {}), **(profile.get("regimes", {}).get(name, {}) or {})}
               for name, body in raw["regimes"].items()}
    chain = arms(raw.get("cumulative", []), "")
    for previous, arm in zip(chain, chain[1:]):  # each step of the chain is compared with the one before
        arm.baseline = arm.baseline or previous.name
        arm.overrides = {**previous.overrides, **arm.overrides}
    spec = Spec(name=raw["name"], seeds=profile.get("seeds", raw["seeds"]), regimes=regimes,
                base={**raw.get("base", {}), **profile.get("base", {})},
                arms=arms(raw["arms"], "baseline"), cumulative=chain, teachers=raw.get("teachers", {}))
    if profile.get("arms"):
        keep = set(profile["arms"])
        spec.arms = [a for a in spec.arms if a.name in keep or a.name.startswith("baseline")]
        spec.cumulative = [a for a in spec.cumulative if a.name in keep]
    return spec


def run_params(spec: Spec, arm: Arm, seed: int, params_path: str | Path = "params.yaml") -> Params:
    """params.yaml + the spec's base + the regime's + the arm's overrides + the seed."""
    raw = yaml.safe_load(Path(params_path).read_text())
    items = {**spec.base, **{k: v for k, v in spec.regimes[arm.regime].items() if "." in k}, **arm.overrides}
    apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in items.items()] + [f"seed={seed}"])
    return Params.model_validate(raw)


def regime_options(spec: Spec, regime: str) -> dict:
    """Non-params keys of a regime: max_train, imbalance_ratio, ..."""
    return {k: v for k, v in spec.regimes[regime].items() if "." not in k}


# ------------------------------------------------------------------ statistics

@dataclass
class Comparison:
    name: str
    claims: list[str]
    regime: str
    baseline: str
    n_seeds: int
    mean: float
    std: float
    baseline_mean: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str
    extra_seconds: float
    gain_per_extra_minute: float | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def paired_comparison(arm: list[float], base: list[float], confidence: float = 0.95) -> dict:
    """Paired by seed: mean difference, its t-based CI and the two-sided p-value (scipy)."""
    from scipy import stats

    diffs = np.asarray(arm, float) - np.asarray(base, float)
    n = len(diffs)
    mean = float(diffs.mean())
    if n < 2 or np.allclose(diffs, diffs[0]):
        spread = 0.0 if n < 2 else float(diffs.std(ddof=1))
        return {"delta": mean, "ci_low": mean - spread, "ci_high": mean + spread,
                "p_value": 0.0 if (n >= 2 and mean != 0) else 1.0}
    sem = diffs.std(ddof=1) / math.sqrt(n)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sem
    p = float(stats.ttest_rel(arm, base).pvalue)
    return {"delta": mean, "ci_low": mean - half, "ci_high": mean + half, "p_value": p}


def verdict(ci_low: float, ci_high: float) -> str:
    if ci_low > 0:
        return "improves"
    if ci_high < 0:
        return "hurts"
    return "no detectable effect"


def compare(arm: Arm, results: dict[tuple[str, int], dict], seeds: list[int]) -> Comparison:
    acc = [results[(arm.name, s)]["test_accuracy"] for s in seeds]
    base = [results[(arm.baseline, s)]["test_accuracy"] for s in seeds]
    secs = [results[(arm.name, s)]["train_seconds"] - results[(arm.baseline, s)]["train_seconds"] for s in seeds]
    stats_ = paired_comparison(acc, base)
    extra = statistics.mean(secs)
    gain = stats_["delta"] * 100 / (extra / 60) if extra > 1 else None  # points per extra minute
    return Comparison(arm.name, arm.claims, arm.regime, arm.baseline, len(seeds), statistics.mean(acc),
                      statistics.stdev(acc) if len(acc) > 1 else 0.0, statistics.mean(base), stats_["delta"],
                      stats_["ci_low"], stats_["ci_high"], stats_["p_value"],
                      verdict(stats_["ci_low"], stats_["ci_high"]), extra, gain)


# ------------------------------------------------------------------ persisted results

class ResultStore:
    """One JSON per finished (arm, seed, config hash, data hash); written atomically."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        return json.loads(path.read_text()) if path.is_file() else None

    def put(self, key: str, result: dict) -> None:
        write_json(self.path(key), result)


def run_key(seed: int, params: Params, data_hash: str, options: dict) -> str:
    """Identical configurations share a result whatever the arm is called (the cumulative
    chain's first steps are one-at-a-time arms too)."""
    from skillpack.engine import config_hash

    # clean.* never reaches an ablation run (they train on the prepared split), so it is left out
    return f"s{seed}-{config_hash(params.model_dump(by_alias=True, exclude={'clean'}), options, data_hash)}"


# ------------------------------------------------------------------ data regimes

def long_tailed_indices(labels: np.ndarray, imbalance_ratio: float, max_per_class: int, seed: int) -> np.ndarray:
    """Exponential profile: class k keeps max_per_class * ratio^(-k/(K-1)) samples."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    keep = []
    for rank, c in enumerate(classes):
        n = max(1, int(round(max_per_class * imbalance_ratio ** (-rank / max(len(classes) - 1, 1)))))
        keep.append(rng.permutation(np.flatnonzero(labels == c))[:n])
    return np.sort(np.concatenate(keep))


def regime_split(images: np.ndarray, labels: np.ndarray, options: dict, seed: int = 0):
    """The training subset of a regime (the data seed is fixed: every arm and seed of a regime
    trains on the same images, so the seed varies only the model)."""
    from skillpack.data.sources import Split
    from skillpack.data.split import stratified_subset

    if options.get("imbalance_ratio"):
        idx = long_tailed_indices(labels, options["imbalance_ratio"], options.get("max_per_class", 1000), seed)
        return images[idx], labels[idx]
    if options.get("max_train"):
        split = stratified_subset(Split(images, labels, [str(i) for i in range(len(labels))]),
                                  int(options["max_train"]), seed)
        return split.images, split.labels
    return images, labels


# ------------------------------------------------------------------ one run

def train_and_evaluate(params: Params, train: tuple, val: tuple, test: tuple, teacher=None) -> dict:
    """Train one model with `params.train` and score it on the test set."""
    from skillpack.data.loader import to_tensor_nchw
    from skillpack.engine import fit_new_model, predict

    (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = train, val, test
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    t0 = time.perf_counter()
    trainer, fit = fit_new_model(params.train, params.seed, (x_tr, y_tr), (x_val, y_val), num_classes, teacher)
    seconds = time.perf_counter() - t0
    logits = predict(trainer.model.cpu(), to_tensor_nchw(x_te))
    pred = logits.argmax(1).numpy()
    per_class_recall = [float((pred[y_te == c] == c).mean()) for c in range(num_classes) if (y_te == c).any()]
    embeddings = predict(trainer.model, to_tensor_nchw(x_te[:2000]), embeddings=True).numpy()
    return {
        "test_accuracy": float((pred == y_te).mean()),
        "balanced_accuracy": float(np.mean(per_class_recall)),
        "train_seconds": seconds,
        "final_val_acc": fit.history[-1].val_acc,
        "train_loss": fit.history[-1].train_loss,
        "val_loss": fit.history[-1].val_loss,
        "intra_class_distance": intra_class_distance(embeddings, y_te[:2000]),
        "n_train": int(len(y_tr)),
    }


def intra_class_distance(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Mean distance of embeddings to their class centre, relative to the mean distance
    between class centres (scale-free, so losses that shrink all norms do not win for free)."""
    classes = np.unique(labels)
    centres = np.stack([embeddings[labels == c].mean(0) for c in classes])
    index = np.searchsorted(classes, labels)
    intra = np.linalg.norm(embeddings - centres[index], axis=1).mean()
    between = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    spread = between[np.triu_indices(len(classes), 1)].mean()
    return float(intra / spread)
