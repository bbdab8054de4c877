"""Every statistical test the project runs, as plain functions: the paired t-test of the
ablation, Holm's family-wise correction, the minimum detectable effects that say how blind a
test was, the binomial test of the cleaning benchmark and the paired accuracy difference that
promotes a model. Numbers in, numbers out: what they are evidence for is decided elsewhere
(skillpack.evidence.verdicts, skillpack.deploy.promotion).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

ALPHA = 0.05  # the level of every two-sided test, before any family-wise correction
POWER = 0.8   # the power at which a minimum detectable effect is computed


def paired_t_test(treated: Sequence[float], control: Sequence[float], confidence: float = 0.95) -> dict:
    """Paired t-test of two matched samples (paired by seed): the mean difference `delta`,
    its t interval [ci_low, ci_high] at `confidence`, and the two-sided p-value (scipy's
    ttest_rel). Differences without spread have no t distribution: the interval is the mean
    +- their spread (0), and p is 0 when the mean is not 0 (1 with a single pair)."""
    from scipy import stats

    diffs = np.asarray(treated, float) - np.asarray(control, float)
    n = len(diffs)
    mean = float(diffs.mean())
    if n < 2 or np.allclose(diffs, diffs[0]):
        spread = 0.0 if n < 2 else float(diffs.std(ddof=1))
        return {"delta": mean, "ci_low": mean - spread, "ci_high": mean + spread,
                "p_value": 0.0 if (n >= 2 and mean != 0) else 1.0}
    sem = diffs.std(ddof=1) / math.sqrt(n)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sem
    p = float(stats.ttest_rel(treated, control).pvalue)
    return {"delta": mean, "ci_low": mean - half, "ci_high": mean + half, "p_value": p}


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean and its t interval at `confidence` (one sample: paired_t_test against zeros), n."""
    test = paired_t_test(values, [0.0] * len(values), confidence)
    return {"mean": test["delta"], "ci_low": test["ci_low"], "ci_high": test["ci_high"], "n": len(values)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment, returned in the input order.

    Why Holm: it controls the family-wise error rate whatever the dependence between the
    tests (the arms of one ablation share baselines and seeds, so they are dependent) and is
    uniformly more powerful than Bonferroni; Benjamini-Hochberg would only bound the share of
    false discoveries, too weak for verdicts that are read one claim at a time.

    Written here because scipy has no Holm (statsmodels' multipletests is not installed): the
    k-th smallest p (k = 1..m) is multiplied by (m - k + 1), capped at 1, and made monotone
    from the smallest up."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def family_interval(low: float, high: float, n: int, family_size: int, confidence: float = 0.95,
                    alpha: float = ALPHA) -> tuple[float, float]:
    """The paired t interval [low, high] at `confidence` over `n` pairs, widened to hold for a
    family of `family_size` tests at once: Bonferroni's level 1 - alpha / family_size, from the
    same mean and standard error (the interval's half-width over t_{(1+confidence)/2, n-1}).
    Simultaneous whatever the tests' dependence, so it is what the claimed value is compared
    with when the zero side is Holm-corrected. Unchanged for a single test, fewer than 2 pairs
    or an interval of no width."""
    from scipy import stats

    if family_size <= 1 or n < 2 or high <= low:
        return low, high
    mean, half = (low + high) / 2, (high - low) / 2
    sem = half / stats.t.ppf(0.5 + confidence / 2, n - 1)
    wide = stats.t.ppf(1 - alpha / (2 * family_size), n - 1) * sem
    return mean - wide, mean + wide


def non_inferiority(low: float, high: float, margin: float) -> str:
    """One-sided test of "the effect is no worse than -margin" on an interval whose level is
    already the family's (TOST's lower half: the lower bound alone decides at alpha / 2 per
    side): "non-inferior" when the whole interval lies above -margin, "inferior" when it lies
    below, "undecided" when it straddles -margin. `margin` > 0, in the interval's unit."""
    if margin <= 0:
        raise ValueError(f"a non-inferiority margin must be positive, got {margin}")
    if low > -margin:
        return "non-inferior"
    if high < -margin:
        return "inferior"
    return "undecided"


def minimum_detectable_effect(differences: Sequence[float], alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean difference a two-sided paired t-test at `alpha` detects with
    probability `power`, given the spread of these per-seed differences (the usual
    approximation (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)). In the differences'
    unit; None with fewer than 2 differences. `alpha` is the per-test level: after a
    family-wise correction the test was blinder still, so this is a lower bound."""
    from scipy import stats

    n = len(differences)
    if n < 2:
        return None
    sd = statistics.stdev(differences)
    return float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n))


def minimum_detectable_proportion_gap(null_rate: float, n: int, alpha: float = ALPHA,
                                      power: float = POWER) -> float | None:
    """The smallest gap between a proportion and `null_rate` that a two-sided test on n trials
    at `alpha` detects with probability `power` (normal approximation,
    (z_{1-alpha/2} + z_power) * sqrt(rate (1 - rate) / n)), as a fraction; None when n is 0."""
    from scipy import stats

    if n <= 0:
        return None
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * math.sqrt(null_rate * (1 - null_rate) / n))


def binomial_test(hits: int, n: int, null_rate: float, confidence: float = 0.95) -> tuple[float, float, float]:
    """(interval low, interval high, p) of a proportion hits / n against `null_rate`: the exact
    (Clopper-Pearson) interval at `confidence` and the two-sided exact binomial test (scipy),
    as fractions. n must be at least 1."""
    from scipy import stats

    test = stats.binomtest(hits, n, null_rate)
    ci = test.proportion_ci(confidence, method="exact")
    return ci.low, ci.high, float(test.pvalue)


def paired_accuracy_difference(candidate_correct: np.ndarray, champion_correct: np.ndarray,
                               confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(difference, interval low, interval high, McNemar p) of two models' correctness on the
    same items, as fractions. Only the discordant items (one right, the other wrong) carry
    information: the interval is the paired-proportion (Wald) interval of the accuracy
    difference and the p-value McNemar's exact test (the binomial test of the discordant pairs;
    1 when there are none)."""
    from scipy import stats

    a, b = np.asarray(candidate_correct, bool), np.asarray(champion_correct, bool)
    if a.shape != b.shape or not len(a):
        raise ValueError(f"correctness vectors must be the same non-empty length, got {a.shape} and {b.shape}")
    n = len(a)
    only_candidate, only_champion = int((a & ~b).sum()), int((~a & b).sum())
    delta = (only_candidate - only_champion) / n
    variance = (only_candidate + only_champion - n * delta ** 2) / n ** 2
    half = stats.norm.ppf(0.5 + confidence / 2) * math.sqrt(max(variance, 0.0))
    discordant = only_candidate + only_champion
    p = float(stats.binomtest(only_candidate, discordant, 0.5).pvalue) if discordant else 1.0
    return delta, delta - half, delta + half, p
