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


def chain_bars(chain: list[Comparison], claims_doc: dict, total_name: str) -> tuple[list[dict], dict | None]:
    """The waterfall's steps (each step of the chain against the one before) and its total (the
    last step against the first, drawn from the start, not stacked on the steps), each marked
    with the chain's claimed value for it: the claims the total tests (those every step tests),
    not another claim a step also tests."""
    by_id = {claim["id"]: claim for claim in claims_doc["claims"]}
    total = next((c for c in chain if c.name == total_name), None)
    steps = [c for c in chain if c.name != total_name]
    chain_claims = total.claims if total else [cid for cid in (steps[0].claims if steps else [])
                                                if all(cid in c.claims for c in steps)]
    bars = []
    for c in [*steps, *([total] if total else [])]:
        claimed = [v for cid in chain_claims for v in claimed_lines(by_id[cid], c.name, c.metric)]
        bars.append({"label": c.name.replace("chain_", "+"), "delta": 100 * c.delta, "low": 100 * c.ci_low,
                     "high": 100 * c.ci_high, "colour": EFFECT_COLOURS[c.effect],
                     "claimed": claimed[0] if claimed else None})
    return (bars[:-1], bars[-1]) if total else (bars, None)


def plot_chain(spec: ab.Spec, chain: list[Comparison], runs: list[dict], claims_doc: dict, path: Path,
               total_name: str) -> None:
    from skillpack.plots import plot_waterfall

    results = results_by_key(runs)
    start = 100 * float(np.mean([results[(spec.cumulative[0].name, s)]["test_accuracy"] for s in spec.seeds]))
    steps, total = chain_bars(chain, claims_doc, total_name)
    plot_waterfall(start, steps, path, title="Cumulative ablation (the article's chain): mean of seeds, 95% CI per "
                                             "step; colour from the Holm-adjusted test", ylabel="test accuracy (%)",
                   total=total)


def claimed_lines(claim: dict, arm: str, metric: str) -> list[float]:
    """The claimed values a claim's chart draws for one arm: that claim's own (claimed_value),
    never those of another claim the arm also tests; none for a claim of direction only."""
    if cl.claim_metric(claim) != metric or not claim.get("direction"):
        return []
    value = cl.claimed_value(claim, arm)
    return [] if value is None else [value]


def claim_curve_panels(spec: ab.Spec, tests: list[Comparison], claim: dict) -> list[dict]:
    """The panels of one claim's budget-curve chart (skillpack.plots.plot_budget_curves): one
    per axis with a curve, one line per arm (the same colour in every panel), and the claim's
    own claimed values."""
    by_arm = curve_tests_by_claim(spec, tests, claim)
    metric = cl.claim_metric(claim)
    colours = {arm: f"C{i % 10}" for i, arm in enumerate(by_arm)}
    panels = []
    for axis, label in AXES.items():
        lines, claimed = [], set()
        for arm, curves in by_arm.items():
            points = curves.get(axis)
            if not points:
                continue
            lines.append({"label": arm, "colour": colours[arm], "x": [b for b, _ in points],
                          "delta": [100 * c.delta for _, c in points], "low": [100 * c.ci_low for _, c in points],
                          "high": [100 * c.ci_high for _, c in points]})
            claimed.update(claimed_lines(claim, arm, metric))
        if lines:
            panels.append({"axis": label, "lines": lines, "claimed": sorted(claimed), "unit": cl.unit(metric)})
    return panels


def plot_claim_curves(spec: ab.Spec, tests: list[Comparison], claims_doc: dict, folder: Path) -> dict[str, Path]:
    """reports/curves/<claim>.png: one chart per claim with a budget curve."""
    from skillpack.plots import plot_budget_curves

    charts = {}
    for claim in claims_doc["claims"]:
        panels = claim_curve_panels(spec, tests, claim)
        if panels:
            path = folder / f"{claim['id']}.png"
            plot_budget_curves(panels, path, f"{claim['id']}: effect vs training budget, 95% CI "
                                             f"(paired by seed; {cl.claim_metric(claim)})")
            charts[claim["id"]] = path
    return charts
