"""An arm against its baseline, paired by seed: the metric compared, the paired t-test
(skillpack.stats), the effect judged on the family-adjusted p-value, and the fixed seeds
that asks for another seed while a comparison is open.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from skillpack.evidence.ablation import Arm
from skillpack.stats import ALPHA, holm, minimum_detectable_effect, paired_t_test


def results_by_key(runs: list[dict]) -> dict[tuple[str, int], dict]:
    """The runs of an ablation by (arm, seed), as compare reads them."""
    return {(r["arm"], r["seed"]): r for r in runs}


# metric of a run result -> compared as a relative change (arm / baseline - 1) rather than a difference
METRICS = {"test_accuracy": False, "intra_class_distance": True, "recall_at_1": False, "tar_at_far": False,
           "loss_oscillation": True, "train_seconds": True}
CONVERGENCE = "epochs_to_val_acc:"  # + a target: epochs until the validation accuracy first reaches it
EFFECTS = ("improves", "hurts", "no detectable effect")  # test accuracy; other metrics: higher / lower


def is_relative(metric: str) -> bool:
    return metric.startswith(CONVERGENCE) or METRICS[metric]


def metric_value(result: dict, metric: str) -> float:
    """A run's figure for `metric`; epochs_to_val_acc:<target> reads its validation curve (a run
    that never reaches the target counts as epochs + 1: censored, and said so in the report)."""
    if metric.startswith(CONVERGENCE):
        target = float(metric.removeprefix(CONVERGENCE))
        curve = result["val_acc_by_epoch"]
        return float(next((i + 1 for i, acc in enumerate(curve) if acc >= target), len(curve) + 1))
    return float(result[metric])


@dataclass
class Comparison:
    """One arm against its baseline on one metric, paired by seed. delta, ci_* and mde are in
    the metric's own scale (accuracy as a fraction, relative changes as fractions)."""
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
    extra_seconds: float
    gain_per_extra_minute: float | None
    metric: str = "test_accuracy"
    differences: list[float] = field(default_factory=list)  # per seed, in the order of the spec's seeds
    mde: float | None = None          # minimum detectable effect at alpha (skillpack.stats)
    p_adjusted: float | None = None   # Holm across the family of tests of one ablation run
    mde_family: float | None = None   # the same at alpha / family size, Holm's strictest step
    effect: str | None = None         # from p_adjusted: improves / hurts / no detectable effect
    seeds: list[int] = field(default_factory=list)
    family: str = "main"              # main | curves | transfer: the Holm family it is adjusted in
    selected: dict | None = None      # a tuned comparison: each side's candidates and the one picked

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def effect(delta: float, p_adjusted: float, metric: str = "test_accuracy", alpha: float = ALPHA) -> str:
    """What an arm does to a metric, judged on the family-adjusted p-value (no claim involved:
    the claims' verdicts are skillpack.evidence.verdicts')."""
    if p_adjusted >= alpha or delta == 0:
        return EFFECTS[2]
    if metric == "test_accuracy":
        return EFFECTS[0] if delta > 0 else EFFECTS[1]
    return "higher" if delta > 0 else "lower"


def paired_seeds(arm: Arm, results: dict[tuple[str, int], dict], pool: list[int]) -> list[int]:
    """The seeds of `pool` for which both the arm and its baseline have a run."""
    return [s for s in pool if (arm.name, s) in results and (arm.baseline, s) in results]


def compare(arm: Arm, results: dict[tuple[str, int], dict], seeds: list[int],
            metric: str = "test_accuracy") -> Comparison:
    """The arm vs its baseline on `metric`, paired by seed (the seeds both have: paired_seeds);
    p_adjusted and effect are left for adjust_for_family, which needs every test of the run."""
    seeds = paired_seeds(arm, results, seeds)
    if not seeds:
        raise ValueError(f"{arm.name} vs {arm.baseline}: no seed with a run of both")
    values = [metric_value(results[(arm.name, s)], metric) for s in seeds]
    base = [metric_value(results[(arm.baseline, s)], metric) for s in seeds]
    if is_relative(metric):
        differences = [a / b - 1 for a, b in zip(values, base)]
        stats_ = paired_t_test(differences, [0.0] * len(differences))
    else:
        differences = [a - b for a, b in zip(values, base)]
        stats_ = paired_t_test(values, base)
    secs = [results[(arm.name, s)]["train_seconds"] - results[(arm.baseline, s)]["train_seconds"] for s in seeds]
    extra = statistics.mean(secs)
    gain = stats_["delta"] * 100 / (extra / 60) if extra > 1 and metric == "test_accuracy" else None  # points/extra min
    return Comparison(arm.name, arm.claims, arm.regime, arm.baseline, len(seeds), statistics.mean(values),
                      statistics.stdev(values) if len(values) > 1 else 0.0, statistics.mean(base), stats_["delta"],
                      stats_["ci_low"], stats_["ci_high"], stats_["p_value"], extra, gain, metric=metric,
                      differences=differences, mde=minimum_detectable_effect(differences), seeds=seeds)


def adjust_for_family(comparisons: list[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """Holm-adjust the p-values of every test of one family (skillpack.stats.holm says why
    Holm; comparisons carry their family's name: main, curves, transfer) and set each
    comparison's effect from its adjusted p-value, and its minimum detectable effect at Holm's
    strictest level alpha / m. In place; returned."""
    for name in dict.fromkeys(c.family for c in comparisons):
        family = [c for c in comparisons if c.family == name]
        for c, p_adjusted in zip(family, holm([c.p_value for c in family])):
            c.p_adjusted = p_adjusted
            c.effect = effect(c.delta, p_adjusted, c.metric, alpha)
            c.mde_family = minimum_detectable_effect(c.differences, alpha / len(family))
    return comparisons
