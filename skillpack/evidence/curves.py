"""Budget curves: an arm against its baseline at several epoch budgets and training-set sizes
(the spec's `curves:`), as comparisons along each axis and the text the reports give them.
"""
from __future__ import annotations

from skillpack.evidence import ablation as ab
from skillpack.evidence import claims as cl
from skillpack.evidence.comparisons import EFFECTS, Comparison

AXES = {"epochs": "training epochs", "images": "training images"}


def curve_tests(spec: ab.Spec, tests: list[Comparison], arm: str, metric: str) -> dict[str, list[tuple[float, Comparison]]]:
    """Axis -> [(budget, comparison)] of one arm's curve on `metric`, its own budget included."""
    if arm not in {a.name for a in spec.arms}:  # chain steps and the chain's total have no curve
        return {}
    by_name = {(c.name, c.metric): c for c in tests}
    curves = {}
    for axis in AXES:
        points = [(budget, by_name[(name, metric)]) for budget, name in ab.curve_points(spec, arm, axis)
                  if (name, metric) in by_name and budget is not None]
        if len(points) > 1:
            curves[axis] = points
    return curves


def curve_text(points: list[tuple[float, Comparison]], axis: str, unit: str = "points") -> str:
    """'2 epochs: hurts, -1.20 [-2.01, -0.39] points (7 seeds); ...; the measured mean changes
    sign between 6 and 18 epochs' - every figure from the comparisons."""
    parts = [f"{budget:,.0f} {axis}: {c.effect}, {100 * c.delta:+.2f} [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}] "
             f"{unit} ({c.n_seeds} seeds)" for budget, c in points]
    changes = [f"{a:,.0f} and {b:,.0f} {axis}" for (a, ca), (b, cb) in zip(points, points[1:])
               if ca.delta * cb.delta < 0]
    detected = [f"{budget:,.0f}" for budget, c in points if c.effect not in (None, EFFECTS[2])]
    tail = ("; the measured mean changes sign between " + " and between ".join(changes)) if changes else \
        "; the measured mean keeps its sign"
    holds = f"; a detectable effect at {', '.join(detected)} {axis}" if detected else \
        "; no detectable effect at any budget"
    return "; ".join(parts) + tail + holds


def curve_tests_by_claim(spec: ab.Spec, tests: list[Comparison], claim: dict) -> dict[str, dict]:
    metric = cl.claim_metric(claim)
    arms = [a.name for a in spec.arms if claim["id"] in a.claims and not a.variant]
    return {arm: curves for arm in arms if (curves := curve_tests(spec, tests, arm, metric))}


def curve_summaries(spec: ab.Spec, tests: list[Comparison]) -> dict:
    """(arm, metric) -> the text of its budget curves, for every arm that has one."""
    out = {}
    for c in tests:
        if c.family != "main":
            continue
        curves = curve_tests(spec, tests, c.name, c.metric)
        if curves:
            out[(c.name, c.metric)] = " | ".join(curve_text(points, axis, cl.unit(c.metric))
                                                 for axis, points in curves.items())
    return out
