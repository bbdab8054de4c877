"""Verdicts that say no more than the data: one rule set for every claim. Pure functions, no
I/O; the tests they judge, the family-wise correction and the minimum detectable effects are in
skillpack.stats.

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

from skillpack.stats import ALPHA, non_inferiority

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
            direction: str | int = 1, alpha: float = ALPHA, family: tuple[float, float] | None = None) -> str:
    """The verdict for an interval [low, high] of the measured effect, its family-adjusted
    p-value, and a claim (direction, and the claimed value in the interval's unit if any).
    `family`: the interval at the family's level (skillpack.stats.family_interval), which the
    claimed value is compared with, so both sides of a verdict are corrected for the family;
    without it, [low, high] serves both sides."""
    claim_low, claim_high = family or (low, high)
    sides = (zero_side(low, high, p_adjusted, direction, alpha), claim_side(claim_low, claim_high, claimed, direction))
    return VERDICT_RULES[sides]


NON_INFERIORITY_VERDICTS = {"non-inferior": REPRODUCED, "inferior": CONTRADICTED, "undecided": INCONCLUSIVE}


def cost_verdict(family_low: float, family_high: float, margin: float) -> str:
    """A claim that a technique costs at most `margin` (points, > 0), read as non-inferiority on
    the family-level interval: reproduced when the cost is surely below the margin, contradicted
    when surely above, inconclusive when the interval straddles it. "Smaller than claimed" has
    no meaning here: a smaller cost is what the claim promises."""
    return NON_INFERIORITY_VERDICTS[non_inferiority(family_low, family_high, margin)]


RULES_TEXT = (
    "Each verdict compares the 95% interval of the measured effect with 0 and with the claimed value c, "
    "in the claimed direction: **reproduced** - the interval excludes 0 on the claimed side and does not fall "
    "short of c (it covers c or lies beyond it); **smaller than claimed** - it excludes 0 on the claimed side "
    "and falls short of c; **not reproduced** - it falls short of c and does not exclude 0; **contradicted** - it "
    "excludes 0 on the opposite side; **inconclusive** - it includes 0 and does not fall short of c (a claim "
    "without a value: it includes 0); **not tested** - with the reason and what a test would take; **static** - "
    "a property measured without an experiment, reported and not judged. An interval excludes 0 only when the "
    f"family-adjusted (Holm) p-value is below {ALPHA}, so no claim is reproduced or contradicted on a test that "
    "does not survive the correction; and c is compared with the interval widened to the family's level "
    f"(Bonferroni, {ALPHA} / the family's size), so the claimed-value side is corrected too. A claim that a technique "
    "*costs at most* m points (claims.yaml `non_inferiority`) is read as non-inferiority on that family-level "
    "interval: **reproduced** when it lies above -m, **contradicted** when below, **inconclusive** when it straddles -m.")
