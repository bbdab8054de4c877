"""What the GPU benchmark's runs add up to: medians over seeds, and its ablation's effects next
to the CPU run's (benchmarks/gpu.py writes both into benchmarks/results/gpu.json)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = (0.92, 0.935, 0.95)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict]) -> dict:
    """Medians over the seeds; seconds_to_X over the seeds that reached X (reached_by_seeds says how many)."""
    out = {"acc_median": statistics.median(r["final_acc"] for r in runs),
           "train_s_median": round(statistics.median(r["train_s"] for r in runs), 3),
           "engine_img_s": _median([r["img_s"] for r in runs]),
           "compile_s_median": _median([r["compile_s"] for r in runs]),
           "seeds": [r["seed"] for r in runs]}
    for t in THRESHOLDS:
        key = f"{t:.3f}"
        short = f"{t:g}"
        out[f"seconds_to_{short}"] = _median([r["seconds_to"][key] for r in runs])
        out.setdefault("reached_by_seeds", {})[short] = sum(r["seconds_to"][key] is not None for r in runs)
    out["runs"] = runs
    return out


def compare_with_cpu(spec, runs, comparisons, claims_doc) -> dict:
    """Each comparison's effect on the GPU next to the CPU run's (reports/ablation.json): do
    they agree in direction where both are significant?"""
    gpu = {f"{c.name}:{c.metric}": c.effect for c in comparisons(spec, runs, claims_doc)}
    cpu_file = ROOT / "reports" / "ablation.json"
    cpu = {}
    if cpu_file.is_file():
        report = json.loads(cpu_file.read_text())
        cpu = {f"{c['name']}:{c['metric']}": c["effect"] for part in ("arms", "cumulative", "secondary", "curves",
                                                                        "transfer")
               for c in report.get(part, [])}
    neutral = "no detectable effect"
    both = [k for k in gpu if k in cpu and gpu[k] != neutral and cpu[k] != neutral]
    return {"effects_gpu": gpu, "effects_cpu": cpu, "significant_in_both": both,
            "agree_where_both_significant": [k for k in both if gpu[k] == cpu[k]],
            "disagree_where_both_significant": [k for k in both if gpu[k] != cpu[k]]}
