"""How far to trust the verdicts, measured without training: the false-positive rate of the
ablation's paired test on null comparisons drawn from the stored runs (skillpack.evidence.calibration).

    python -m benchmarks.calibration     # seconds -> reports/calibration.json

Keys: null_fpr, null_fpr_ci, n_null, alpha, seeds_per_side, pool_arms, pool_trainings,
pool_train_seconds (the CPU time the pool's trainings took when the ablation made them: the
calibration's own cost, as it trains nothing itself), power (per planted effect - a known
share of the training labels corrupted, the spec's planted_* arms, 30 seeds each - its size
measured on all 30 seeds and the share of random subsets of the report's seed counts in which
the paired test finds it, at alpha and at Holm's strictest level alpha / main-family size),
planted_train_seconds, machine, generated_by.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from skillpack.evidence.calibration import PLANTED_PREFIX, calibrate, planted_power, seeds_by_arm
from skillpack.io import write_json
from skillpack.machine import describe

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "ablation.json"
OUT = ROOT / "reports" / "calibration.json"


def main() -> dict:
    t0 = time.perf_counter()
    report = json.loads(REPORT.read_text())
    runs = report["runs"]
    figures = calibrate(runs, seeds_per_side=7)
    pooled = {arm for arm, seeds in seeds_by_arm(runs).items() if len(seeds) >= 2 * figures["seeds_per_side"]}
    figures.update({
        "pool_train_seconds": round(sum(r.get("train_seconds") or 0 for r in runs if r["arm"] in pooled), 1),
        "seconds": round(time.perf_counter() - t0, 2),
        **planted(report),
        "machine": describe(), "generated_by": "python -m benchmarks.calibration"})
    write_json(OUT, figures)
    for p in figures["power"]:
        print(f"{p['arm']}: {p['effect_points']:+.2f} points on {p['n_pool']} seeds; power "
              + ", ".join(f"{n} seeds {v['alpha']:.2f} ({v['family']:.2f} at the family level)" for n, v in p["power"].items()))
    print(f"null comparisons: {figures['n_null']} from {figures['pool_arms']} arms ({figures['pool_trainings']} "
          f"trainings): false-positive rate {figures['null_fpr']:.3f} at alpha {figures['alpha']} "
          f"[{figures['null_fpr_ci'][0]:.3f}, {figures['null_fpr_ci'][1]:.3f}] -> {OUT.relative_to(ROOT)}")
    return figures


def planted(report: dict) -> dict:
    """The power at each planted effect, at the report's seed counts (a main comparison's and a
    curve point's), at alpha and at Holm's strictest step over the main family."""
    design = report["seed_design"]
    levels = {"alpha": 0.05, "family": 0.05 / report["family"]["sizes"]["main"]}
    arms = sorted({r["arm"] for r in report["runs"] if r["arm"].startswith(PLANTED_PREFIX)})
    power = [planted_power(report["runs"], arm, "baseline", sorted({design["main"], design["variants"]}), levels)
             for arm in arms]
    seconds = sum(r.get("train_seconds") or 0 for r in report["runs"] if r["arm"] in arms)
    return {"power": power, "power_levels": levels, "planted_train_seconds": round(seconds, 1)}


if __name__ == "__main__":
    main()
