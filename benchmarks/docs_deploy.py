"""The deployment blocks of docs/benchmarks.md (latency, compression, serving under load,
`skillpack predict`), rendered from their results JSON by benchmarks.docs."""
from __future__ import annotations

import json
from pathlib import Path

from skillpack import paths
from skillpack.machine import one_line

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def load_result(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def machine_text(figures: dict, key: str = "machine") -> str:
    m = figures.get(key) or figures.get("machine_at_run")
    if not m:
        return "machine not recorded"
    if "cpu_flags" not in m:  # results written before the CPU model was recorded: only the architecture
        return f"{m['cpu']} (CPU model not recorded), {m['cores']} cores, {m['threads']} threads, torch {m['torch']}"
    return one_line(m)


def latency_table(f: dict) -> list[str]:
    """The runtimes of a latency.json as markdown rows (also what benchmarks.latency prints)."""
    batches = f["batches"]
    lines = ["| runtime | test acc | max abs logit diff vs eager | top-1 agreement | build s | "
             + " | ".join(f"batch {b}" for b in batches) + " |", "|---|---|---|---|---|" + "---|" * len(batches)]
    for name, r in f["runtimes"].items():
        build = "-" if r["build_s"] is None else f"{r['build_s']:.1f}"
        cells = [f"{r['latency'][str(b)]['p50_ms']:.3f} / {r['latency'][str(b)]['p95_ms']:.3f}" for b in batches]
        lines.append(f"| {name} | {r['test_accuracy']:.4f} | {r['max_abs_diff']:.1e} | {r['top1_agreement']:.4f} | "
                     f"{build} | " + " | ".join(cells) + " |")
    return lines + [f"| {name} | {reason} |" + " |" * (3 + len(batches)) for name, reason in f["skipped"].items()]


def latency_block() -> str:
    f = load_result(RESULTS / "latency.json")
    if f is None:
        return "Not measured yet: `python -m benchmarks.latency`."
    lines = [f"`python -m benchmarks.latency` on {machine_text(f)}; {f['parity_images']:,} test images for the parity "
             f"columns; per call of the raw-pixel model, median / 95th percentile in ms.", "", *latency_table(f)]
    lines += ["", f"- ONNX Runtime fp32 at batch 1: **{f['onnx_vs_eager_b1']:.2f}x** the eager latency "
                  f"({f['onnx_b1_ms']:.3f} vs {f['eager_b1_ms']:.3f} ms); fp32 logits within "
                  f"{f['fp32_max_abs_diff']:.1e} of eager.",
              f"- int8 (ONNX Runtime static QDQ): {f['int8_b1_ms']:.3f} ms at batch 1 = {f['int8_vs_onnx_b1']:.2f}x "
              f"ONNX fp32; top-1 agreement with eager {f['int8_top1_agreement']:.4f}, accuracy drop "
              f"{f['int8_acc_drop_points']:+.2f} points.",
              f"- Fastest at batch 1 on this machine: **{f['fastest_b1']}**."]
    return "\n".join(lines)  # the compress stage's accuracy figures: compression_block, from its own JSON


def compression_block() -> str:
    table = load_result(ROOT / paths.COMPRESSION_TABLE)
    if table is None or "served" not in table:
        return "Not measured yet: `dvc repro export`."
    compressed, served = table["compress"], table["served"]
    lines = [f"`dvc repro export` on {table['machine_line']}: compress {compressed['seconds']:.0f} s (each variant "
             f"trained once, seed {compressed['seed']}), export {table['seconds']:.0f} s. Test accuracy on "
             f"{table['n_test']:,} images, each variant against the trained model; budget "
             f"{compressed['max_drop_points']} points.", "",
             "| variant | params | MMACs | test acc | vs trained model (points) | kept |", "|---|---|---|---|---|---|"]
    base = compressed["baseline"]
    lines.append(f"| trained ({base['model']}) | {base['params']:,} | {base['macs'] / 1e6:.2f} | "
                 f"{base['test_accuracy']:.4f} | - | yes |")
    for name, v in compressed["variants"].items():
        lines.append(f"| {name} ({v['model']}) | {v['params']:,} | {v['macs'] / 1e6:.2f} | {v['test_accuracy']:.4f} | "
                     f"{v['delta_points']:+.2f} | {'yes' if v['accepted'] else 'rejected'} |")
    lines += ["", f"Served (`models/export/model.onnx`): **{served['variant']}, {served['runtime']}**, test accuracy "
              f"{served['test_accuracy']:.4f}, {served['p50_ms']:.3f} ms at batch 1 (rule `{served['rule']}`: "
              f"{served['why']}). int8 format {table['int8_format']['format']} "
              f"({table['int8_format']['decided_by']}).", "",
              "Runtimes against each model's own eager logits (whole test set):", "",
              "| variant | runtime | max abs logit diff | top-1 agreement | test acc | drop (points) |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {p['variant']} | {p['runtime']} | {p['max_abs_diff']:.1e} | {p['top1_agreement']:.4f} | "
              f"{p['test_accuracy']:.4f} | {p['accuracy_drop_points']:+.2f} |" for p in table["parity"]]
    lines += [f"| - | {name} | {reason} | | | |" for name, reason in table["skipped"].items()]
    return "\n".join(lines)


def serve_block() -> str:
    f = load_result(RESULTS / "serve_load.json")
    if f is None:
        return "Not measured yet: `python -m benchmarks.serve_load`."
    lines = [f"`python -m benchmarks.serve_load` on {machine_text(f)}: {f['clients']} concurrent keep-alive clients for "
             f"{f['seconds']:g} s, {f['malformed_share']:.1%} malformed requests ({f['load_generator']}).", "",
             "| req/s (all) | req/s (well-formed) | p50 ms | p95 ms | p99 ms | 5xx | statuses | RSS before -> after |",
             "|---|---|---|---|---|---|---|---|",
             f"| {f['req_per_s']:.0f} | {f['ok_per_s']:.0f} | {f['p50_ms']:.2f} | {f['p95_ms']:.2f} | {f['p99_ms']:.2f} | "
             f"{f['status_5xx']} | {f['status_counts']} | {f['rss_mb_before']:.0f} -> {f['rss_mb_after']:.0f} MB "
             f"({f['rss_growth']:+.1%}) |"]
    a = f.get("alerting")
    if a:
        fired = f"fired after {a['fired_after_s']:.1f} s" if a["fired_after_s"] is not None else "did not fire"
        lines += ["", f"Alerting: a real Prometheus scraping the service every second with the generated rules, the "
                      f"p95 latency threshold set below reach: {a['breached_rule']} {fired}; inactive: "
                      f"{', '.join(a['quiet_rules'])}. promtool: {a['promtool_tests']} rule unit tests "
                      f"{'passed' if a['promtool_passed'] else 'FAILED'}."]
    return "\n".join(lines)


def predict_block() -> str:
    f = load_result(RESULTS / "predict.json")
    if f is None:
        return "Not measured yet: `python -m benchmarks.predict`."
    low, high = f["tta_ci_points"]
    return "\n".join([
        f"`{f['command']}` on {machine_text(f)}, ONNX Runtime on {f['threads']} threads, batches of {f['batch_size']}:", "",
        "| what | figure |", "| --- | --- |",
        f"| throughput, {f['n_images']:,} PNG files ({f['measures']}) | **{f['images_per_s']:,.0f} images/s**: "
        f"reading + decoding {f['read_decode_s']:.2f} s, model {f['model_s']:.2f} s, CSV {f['csv_s']:.2f} s |",
        f"| top-1 accuracy of the CSV (ONNX, the served model) | {f['accuracy']:.4f}; the export stage measured "
        f"{f['onnx_reference_accuracy']:.4f} on the same images ({f['onnx_gap_points']:+.2f} points) |",
        f"| through the checkpoint (`--checkpoint models/model.pt`) | {f['checkpoint_accuracy']:.4f}; evaluate's test "
        f"accuracy {f['evaluate_test_accuracy']:.4f} ({'identical' if f['checkpoint_matches_evaluate'] else 'differs'}) |",
        f"| `--tta` (flip x 5 crops averaged, ONNX) | {f['tta_accuracy']:.4f} at {f['tta_images_per_s']:,.0f} images/s: "
        f"{f['tta_delta_points']:+.2f} points [{low:+.2f}, {high:+.2f}] against no TTA, paired on the same images "
        f"(McNemar p {f['tta_mcnemar_p']:.2g}) |"])
