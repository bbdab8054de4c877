"""Verdicts that say no more than the data: one rule set for every claim, a family-wise
correction, and the smallest effect a setup could have seen. Pure functions, no I/O.

A claim states a direction (+1: the technique raises the metric, -1: it lowers it) and maybe
a value c (in the metric's unit: accuracy points, percent). A measured effect is a 95%
interval [low, high] and a p-value adjusted for the family of tests it was made in. The
verdict is a lookup in VERDICT_RULES of two facts about the interval:

- where it lies relative to 0: beyond 0 on the claimed side, on the opposite side, or not
  excluding 0. Excluding 0 needs the interval *and* the adjusted p-value: an interval clear
  of 0 whose adjusted p is not significant counts as not excluding 0;
- where it lies relative to c: covering c, short of c (every value smaller than c in the
  claimed direction: the claim is too big for the data), beyond c (every value larger: the
  data agree with "at least c"), or no c to compare with (a claim without a number).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

ALPHA = 0.05
POWER = 0.8

REPRODUCED = "reproduced"
SMALLER = "smaller than claimed"
NOT_REPRODUCED = "not reproduced"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
NOT_TESTED = "not tested"
STATIC = "static"  # a property checked without an experiment: measured, not judged
VERDICTS = (REPRODUCED, SMALLER, NOT_REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_TESTED)

# zero side: the interval relative to 0, signed by the claimed direction
CLAIMED_SIDE, OPPOSITE_SIDE, INCLUDES_ZERO = "claimed side", "opposite side", "includes 0"
# claim side: the interval relative to the claimed value c
COVERS_C, SHORT_OF_C, BEYOND_C, NO_C = "covers c", "short of c", "beyond c", "no c"

VERDICT_RULES: dict[tuple[str, str], str] = {
    (CLAIMED_SIDE, COVERS_C): REPRODUCED,
    (CLAIMED_SIDE, BEYOND_C): REPRODUCED,
    (CLAIMED_SIDE, NO_C): REPRODUCED,
    (CLAIMED_SIDE, SHORT_OF_C): SMALLER,
    (OPPOSITE_SIDE, COVERS_C): CONTRADICTED,  # only reachable with a claimed value of the wrong sign
    (OPPOSITE_SIDE, BEYOND_C): CONTRADICTED,
    (OPPOSITE_SIDE, NO_C): CONTRADICTED,
    (OPPOSITE_SIDE, SHORT_OF_C): CONTRADICTED,
    (INCLUDES_ZERO, SHORT_OF_C): NOT_REPRODUCED,
    (INCLUDES_ZERO, COVERS_C): INCONCLUSIVE,
    (INCLUDES_ZERO, BEYOND_C): INCONCLUSIVE,  # clear of c but not of 0 once corrected: cannot tell
    (INCLUDES_ZERO, NO_C): INCONCLUSIVE,
}


def direction_sign(direction: str | int) -> int:
    """'increase' / 'decrease' (claims.yaml) or +1 / -1."""
    signs = {"increase": 1, "decrease": -1, 1: 1, -1: -1}
    if direction not in signs:
        raise ValueError(f"direction must be increase or decrease, not {direction!r}")
    return signs[direction]


def _oriented(low: float, high: float, sign: int) -> tuple[float, float]:
    """The interval with the claimed direction made positive."""
    return (low, high) if sign > 0 else (-high, -low)


def zero_side(low: float, high: float, p_adjusted: float, direction: str | int = 1, alpha: float = ALPHA) -> str:
    lo, hi = _oriented(low, high, direction_sign(direction))
    if p_adjusted >= alpha:
        return INCLUDES_ZERO
    if lo > 0:
        return CLAIMED_SIDE
    if hi < 0:
        return OPPOSITE_SIDE
    return INCLUDES_ZERO


def claim_side(low: float, high: float, claimed: float | None, direction: str | int = 1) -> str:
    if claimed is None:
        return NO_C
    sign = direction_sign(direction)
    lo, hi = _oriented(low, high, sign)
    c = sign * claimed
    if hi < c:
        return SHORT_OF_C
    if lo > c:
        return BEYOND_C
    return COVERS_C


def verdict(low: float, high: float, p_adjusted: float, claimed: float | None = None,
            direction: str | int = 1, alpha: float = ALPHA) -> str:
    """The verdict for an interval [low, high] of the measured effect, its family-adjusted
    p-value, and a claim (direction, and the claimed value in the interval's unit if any)."""
    sides = (zero_side(low, high, p_adjusted, direction, alpha), claim_side(low, high, claimed, direction))
    return VERDICT_RULES[sides]


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


RULES_TEXT = (
    "Each verdict compares the 95% interval of the measured effect with 0 and with the claimed value c, "
    "in the claimed direction: **reproduced** - the interval excludes 0 on the claimed side and does not fall "
    "short of c (it covers c or lies beyond it); **smaller than claimed** - it excludes 0 on the claimed side "
    "and falls short of c; **not reproduced** - it falls short of c and does not exclude 0; **contradicted** - it "
    "excludes 0 on the opposite side; **inconclusive** - it includes 0 and does not fall short of c (a claim "
    "without a value: it includes 0); **not tested** - with the reason and what a test would take; **static** - "
    "a property measured without an experiment, reported and not judged. An interval excludes 0 only when the "
    f"family-adjusted (Holm) p-value is below {ALPHA}, so no claim is reproduced or contradicted on a test that "
    "does not survive the correction.")
