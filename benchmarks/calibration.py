"""How far to trust the verdicts, measured without training: the false-positive rate of the
ablation's paired test on null comparisons drawn from the stored runs (skillpack.evidence.calibration).

    python -m benchmarks.calibration     # seconds -> reports/calibration.json

Keys: null_fpr, null_fpr_ci, n_null, alpha, seeds_per_side, pool_arms, pool_trainings,
pool_train_seconds (the CPU time the pool's trainings took when the ablation made them: the
calibration's own cost, as it trains nothing itself), power (not measured here: it needs
trainings with a planted effect), machine, generated_by.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from skillpack.evidence.calibration import calibrate, seeds_by_arm
from skillpack.io import write_json
from skillpack.machine import describe

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "ablation.json"
OUT = ROOT / "reports" / "calibration.json"


def main() -> dict:
    t0 = time.perf_counter()
    runs = json.loads(REPORT.read_text())["runs"]
    figures = calibrate(runs)
    pooled = {arm for arm, seeds in seeds_by_arm(runs).items() if len(seeds) >= 2 * figures["seeds_per_side"]}
    figures.update({
        "pool_train_seconds": round(sum(r.get("train_seconds") or 0 for r in runs if r["arm"] in pooled), 1),
        "seconds": round(time.perf_counter() - t0, 2),
        "power": None,
        "power_not_measured": "planted effects (a known share of training labels corrupted) need their own trainings; "
                              "not run yet",
        "machine": describe(), "generated_by": "python -m benchmarks.calibration"})
    write_json(OUT, figures)
    print(f"null comparisons: {figures['n_null']} from {figures['pool_arms']} arms ({figures['pool_trainings']} "
          f"trainings): false-positive rate {figures['null_fpr']:.3f} at alpha {figures['alpha']} "
          f"[{figures['null_fpr_ci'][0]:.3f}, {figures['null_fpr_ci'][1]:.3f}] -> {OUT.relative_to(ROOT)}")
    return figures


if __name__ == "__main__":
    main()
