"""The charts of an ablation's report: the one-at-a-time effects, the cumulative chain's
waterfall and one budget-curve chart per claim (drawn by skillpack.plots), coloured by the
Holm-judged effect and marked with the claimed values.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from skillpack.evidence import ablation as ab
from skillpack.evidence import claims as cl
from skillpack.evidence.comparisons import Comparison, results_by_key
from skillpack.evidence.curves import AXES, curve_tests_by_claim

EFFECT_COLOURS = {"improves": "tab:green", "hurts": "tab:red", "no detectable effect": "tab:gray"}


def plot_effects(single: list[Comparison], claims_doc: dict, path: Path) -> None:
    from skillpack.plots import plot_effects as draw

    items = []
    for c in single:
        values, directions = cl.claim_marks(c, claims_doc)
        items.append({"label": f"{c.name} ({c.regime})", "delta": 100 * c.delta, "low": 100 * c.ci_low,
                      "high": 100 * c.ci_high, "colour": EFFECT_COLOURS[c.effect], "claimed": values,
                      "directions": directions})
    draw(items, path, title="One-at-a-time ablation: paired difference vs baseline, 95% CI; colour from the "
                            "Holm-adjusted test", xlabel="test accuracy difference vs baseline (points)")


def plot_chain(spec: ab.Spec, chain: list[Comparison], runs: list[dict], claims_doc: dict, path: Path) -> None:
    from skillpack.plots import plot_waterfall

    results = results_by_key(runs)
    start = 100 * float(np.mean([results[(spec.cumulative[0].name, s)]["test_accuracy"] for s in spec.seeds]))
    steps = []
    for c in chain:
        values, _ = cl.claim_marks(c, claims_doc)
        steps.append({"label": c.name.replace("chain_", "+"), "delta": 100 * c.delta, "low": 100 * c.ci_low,
                      "high": 100 * c.ci_high, "colour": EFFECT_COLOURS[c.effect],
                      "claimed": values[0] if values else None})
    plot_waterfall(start, steps, path, title="Cumulative ablation (the article's chain): mean of seeds, 95% CI per "
                                             "step; colour from the Holm-adjusted test", ylabel="test accuracy (%)")


def plot_claim_curves(spec: ab.Spec, tests: list[Comparison], claims_doc: dict, folder: Path) -> dict[str, Path]:
    """reports/curves/<claim>.png: one chart per claim with a budget curve."""
    from skillpack.plots import plot_budget_curves

    charts = {}
    for claim in claims_doc["claims"]:
        by_arm = curve_tests_by_claim(spec, tests, claim)
        metric = cl.claim_metric(claim)
        panels = []
        for axis, label in AXES.items():
            lines, claimed = [], set()
            for arm, curves in by_arm.items():
                points = curves.get(axis)
                if not points:
                    continue
                lines.append({"label": arm, "x": [b for b, _ in points], "delta": [100 * c.delta for _, c in points],
                              "low": [100 * c.ci_low for _, c in points], "high": [100 * c.ci_high for _, c in points]})
                claimed.update(cl.claim_marks(points[0][1], claims_doc)[0])
            if lines:
                panels.append({"axis": label, "lines": lines, "claimed": sorted(claimed), "unit": cl.unit(metric)})
        if panels:
            path = folder / f"{claim['id']}.png"
            plot_budget_curves(panels, path, f"{claim['id']}: effect vs training budget, 95% CI "
                                             f"(paired by seed; {metric})")
            charts[claim["id"]] = path
    return charts
