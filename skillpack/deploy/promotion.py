"""Moving the `champion` alias by rule: a candidate replaces the champion only when, on the
same test set, its accuracy is higher by more than a margin with 95% confidence - the lower
end of the interval of the paired accuracy difference, not the point estimate, must clear it.

The two models' answers on the same images are paired: only the discordant images (one model
right, the other wrong) carry information, so the interval is the paired-proportion (Wald)
interval and the p-value McNemar's exact test (skillpack.stats.paired_accuracy_difference).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skillpack.stats import paired_accuracy_difference


@dataclass
class Decision:
    promote: bool
    delta_points: float        # candidate minus champion, test-accuracy points
    ci_low_points: float
    ci_high_points: float
    p: float                   # McNemar's exact test
    margin_points: float
    n: int
    reason: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def decide(candidate_correct: np.ndarray, champion_correct: np.ndarray | None, margin_points: float = 0.0,
           confidence: float = 0.95) -> Decision:
    """Promote when there is no champion, or when the interval's lower end is above the margin."""
    n = len(candidate_correct)
    if champion_correct is None:
        return Decision(True, float("nan"), float("nan"), float("nan"), float("nan"), margin_points, n,
                        "no champion yet: the first candidate becomes the champion")
    delta, low, high, p = paired_accuracy_difference(candidate_correct, champion_correct, confidence)
    delta, low, high = 100 * delta, 100 * low, 100 * high
    interval = f"{delta:+.2f} points [{low:+.2f}, {high:+.2f}] on {n:,} test images (McNemar p {p:.3g})"
    if low > margin_points:
        return Decision(True, delta, low, high, p, margin_points, n,
                        f"promoted: the candidate is better by {interval}, whose lower end clears the margin of "
                        f"{margin_points:+.2f} points")
    return Decision(False, delta, low, high, p, margin_points, n,
                    f"kept the champion: the candidate's difference {interval} does not clear the margin of "
                    f"{margin_points:+.2f} points with {confidence:.0%} confidence")
