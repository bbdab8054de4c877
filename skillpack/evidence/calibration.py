"""How far to trust the verdicts: the false-positive rate of the engine's paired test, measured
on comparisons with no effect by construction - an arm against itself on disjoint seeds, drawn
from the runs the ablation already stored (no training). Each null comparison pairs two disjoint
halves of one arm's seeds, the way an arm is paired with its baseline, and runs the same paired
t-test (skillpack.stats.paired_t_test); its p-value below alpha is a false positive. The runs
the pool holds are what the rate is measured on: run-to-run noise of this engine on this data,
whatever its distribution."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from skillpack.stats import ALPHA, binomial_test, paired_t_test


def seeds_by_arm(runs: list[dict], metric: str = "test_accuracy") -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for r in runs:
        if r.get(metric) is not None:
            out[r["arm"]][r["seed"]] = float(r[metric])
    return dict(out)


def null_p_values(runs: list[dict], seeds_per_side: int = 5, splits_per_arm: int = 5, seed: int = 0,
                  metric: str = "test_accuracy") -> tuple[list[float], int, int]:
    """p-values of `splits_per_arm` random disjoint splits of every arm with at least
    2 x seeds_per_side seeds; also how many arms and distinct trainings the pool held."""
    rng = np.random.default_rng(seed)
    p_values, arms, trainings = [], 0, 0
    for _, by_seed in sorted(seeds_by_arm(runs, metric).items()):
        if len(by_seed) < 2 * seeds_per_side:
            continue
        arms, trainings = arms + 1, trainings + len(by_seed)
        values = np.array([by_seed[s] for s in sorted(by_seed)])
        for _ in range(splits_per_arm):
            order = rng.permutation(len(values))
            first, second = order[:seeds_per_side], order[seeds_per_side:2 * seeds_per_side]
            p_values.append(paired_t_test(values[first], values[second])["p_value"])
    return p_values, arms, trainings


def calibrate(runs: list[dict], seeds_per_side: int = 5, splits_per_arm: int = 5, alpha: float = ALPHA) -> dict:
    """The measured false-positive rate at `alpha` of the paired test with `seeds_per_side` seeds,
    with its exact 95% interval, over the null comparisons the stored runs allow."""
    p_values, arms, trainings = null_p_values(runs, seeds_per_side, splits_per_arm)
    hits = sum(p < alpha for p in p_values)
    if not p_values:
        raise ValueError(f"no arm has {2 * seeds_per_side} stored seeds: no null comparison can be drawn")
    low, high, _ = binomial_test(hits, len(p_values), alpha)
    return {"null_fpr": hits / len(p_values), "null_fpr_ci": [low, high], "n_null": len(p_values),
            "alpha": alpha, "seeds_per_side": seeds_per_side, "splits_per_arm": splits_per_arm,
            "pool_arms": arms, "pool_trainings": trainings,
            "pool": "the arms of reports/ablation.json with at least 2 x seeds_per_side stored seeds; each null "
                    "comparison pairs two disjoint random halves of one arm's seeds (splits of one arm share runs)"}


PLANTED_PREFIX = "planted_"  # the spec's calibration arms: a known share of training labels corrupted


def paired_values(runs: list[dict], arm: str, baseline: str, metric: str = "test_accuracy") -> tuple[np.ndarray, ...]:
    """The arm's and its baseline's figures on the seeds both have, in seed order."""
    by_arm = seeds_by_arm(runs, metric)
    seeds = sorted(set(by_arm.get(arm, {})) & set(by_arm.get(baseline, {})))
    return (np.array([by_arm[arm][s] for s in seeds]), np.array([by_arm[baseline][s] for s in seeds]))


def planted_power(runs: list[dict], arm: str, baseline: str, sizes: list[int], levels: dict[str, float],
                  draws: int = 200, seed: int = 0) -> dict:
    """A planted effect measured once on every seed the pool has (its size and interval, in
    points), and the power of the paired test at each seed count of `sizes`: the share of `draws`
    random subsets of that many seeds (without replacement; subsets of one pool overlap) whose
    test finds a decrease at each significance level of `levels` (name -> alpha)."""
    values, base = paired_values(runs, arm, baseline)
    if len(values) < 2 * max(sizes):
        raise ValueError(f"{arm}: {len(values)} seeds paired with {baseline}; the power at {max(sizes)} seeds needs "
                         f"at least {2 * max(sizes)}")
    whole = paired_t_test(values, base)
    rng = np.random.default_rng(seed)
    power = {}
    for n in sizes:
        found = {name: 0 for name in levels}
        for _ in range(draws):
            pick = rng.choice(len(values), size=n, replace=False)
            test = paired_t_test(values[pick], base[pick])
            for name, alpha in levels.items():
                found[name] += test["p_value"] < alpha and test["delta"] < 0
        power[str(n)] = {name: hits / draws for name, hits in found.items()}
    return {"arm": arm, "baseline": baseline, "n_pool": len(values), "effect_points": 100 * whole["delta"],
            "effect_ci_points": [100 * whole["ci_low"], 100 * whole["ci_high"]], "draws": draws, "power": power}
