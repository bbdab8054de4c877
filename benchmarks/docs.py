"""Render the measured sections of docs/benchmarks.md from the results JSON (never by hand).

    python -m benchmarks.docs           # rewrite every <!-- rendered: NAME --> ... <!-- end: NAME --> block
                                        # of docs/benchmarks.md and README.md
    python -m benchmarks.docs --check   # exit 1 when a block differs from what its JSON renders

tests/test_docs.py runs the check, so a figure in these blocks cannot drift from its results file.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from skillpack import paths
from skillpack.machine import one_line

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "benchmarks" / "results"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(figures: dict) -> str:
    m = figures.get("machine") or figures.get("machine_at_run")
    return one_line(m) if m else "machine not recorded"


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
    f = _load(RESULTS / "latency.json")
    if f is None:
        return "Not measured yet: `python -m benchmarks.latency`."
    lines = [f"`python -m benchmarks.latency` on {_machine(f)}; {f['parity_images']:,} test images for the parity "
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
    table = _load(ROOT / paths.COMPRESSION_TABLE)
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


def pipeline_time_rows(f: dict) -> list[str]:
    stages = ", ".join(f"{name} {s:.0f}" for name, s in f["stage_s"].items())
    rows = [f"| `make run` on a clean clone (install included; uv cache "
            f"{'warm' if f['uv_cache_bytes_before'] else 'empty'}) | {f['make_run_s'] / 60:.1f} min: install "
            f"{f['install_s']:.0f} s, stages (s) {stages}; compress + export {f['compress_export_s']:.0f} s; "
            f"test accuracy {f['test_acc']:.4f} | `python -m benchmarks.pipeline_time` |",
            f"| then `dvc repro` after one training param changed (train.optimizer.momentum) | "
            f"{f['param_change_repro_s'] / 60:.1f} min, re-ran {', '.join(f['param_change_stages'])}; after renaming the "
            f"experiment: {'nothing to re-run' if f['rename_up_to_date'] else 'stages out of date'} | the same |"]
    if "make_test_s" in f:
        rows += [f"| `make test` on a clean clone (install included) | {f['make_test_s'] / 60:.1f} min "
                 f"({f['make_test_result']}) | the same |",
                 f"| `make test-fast` (the unit tier) | {f['make_test_fast_s']:.0f} s ({f['make_test_fast_result']}) | "
                 f"the same |"]
    else:
        rows.append("| `make test`, `make test-fast` | not measured in this run | "
                    "`python -m benchmarks.pipeline_time --tests-only` |")
    return rows


def pipeline_time_block() -> str:
    f = _load(RESULTS / "pipeline_time.json")
    if f is None or "make_run_s" not in f:
        return "Not measured yet: `python -m benchmarks.pipeline_time`."
    return "\n".join([f"{_machine(f)}, commit {f.get('pipeline_commit', f['commit'])}:", "",
                      "| what | figure | command |", "| --- | --- | --- |", *pipeline_time_rows(f)])


def serve_block() -> str:
    f = _load(RESULTS / "serve_load.json")
    if f is None:
        return "Not measured yet: `python -m benchmarks.serve_load`."
    lines = [f"`python -m benchmarks.serve_load` on {_machine(f)}: {f['clients']} concurrent keep-alive clients for "
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


def ablation_block() -> str:
    """The cost of the cpu ablation profile (benchmarks/results/ablation_cost.json) and the
    shape of its evidence (reports/claims.json)."""
    cost = _load(RESULTS / "ablation_cost.json")
    if cost is None:
        return "Not measured yet: `make ablate`."
    machine = cost["machine"] if isinstance(cost["machine"], str) else one_line(cost["machine"])
    lines = [f"`{cost['generated_by']}` (the {cost['profile']} profile of ablations/{cost['spec']}.yaml) on {machine}:",
             "", "| runs | computed / from the store | wall (this invocation) | tests | seeds per test (median) | "
             "accuracy CI half-width, median (points) |", "|---|---|---|---|---|---|",
             f"| {cost['runs']} | {cost['computed_runs']} / {cost['cached_runs']} | {cost['wall_s'] / 60:.1f} min | "
             f"{cost['tests']} | {cost['seeds_median']:g} | {cost['halfwidth_median_points']:.2f} |"]
    invocations = cost.get("invocations") or []
    if len(invocations) > 1:
        lines += ["", f"The store was not empty at the start: {len(invocations)} invocations since it was, "
                      f"{cost['wall_s_since_empty'] / 60:.1f} min in all (" + "; ".join(
                          f"{i['computed_runs']} runs computed in {i['wall_s'] / 60:.1f} min"
                          + (f" on {i['store_at_start']} stored" if i.get("store_at_start") else "")
                          for i in invocations) + ")."]
    claims = _load(ROOT / "reports" / "claims.json")
    if claims:
        judged = {r["claim"] for r in claims if r["verdict"] not in ("not tested", "static")}
        lines += ["", f"reports/claims.md: {len(judged)} of {len({r['claim'] for r in claims})} claims have a "
                      f"measured verdict with an interval."]
    return "\n".join(lines)


def cleaning_draws_block() -> str:
    """The detectors over several noise draws (benchmarks/results/cleaning.json `draws`): the
    figures the clean.* claims are judged on, with the claims' own interval."""
    from benchmarks.cleaning import DETECTOR_ORDER
    from skillpack.evidence.claims import cleaning_test

    f = _load(RESULTS / "cleaning.json")
    settings = [s for s in (f or {}).get("settings", []) if len(f[s].get("draws") or {}) >= 2]
    if not settings:
        return "Not measured yet: `python -m benchmarks.cleaning --settings symmetric_0.1 --noise-draws 0 1 2 3 4`."
    lines = []
    for setting in settings:
        draws = f[setting]["draws"]
        new = [d["oof_seconds"] for d in draws.values() if d.get("oof_seconds")]
        timing = (f"; out-of-fold models {sum(new) / len(new) / 60:.1f} min per new draw" if new else "")
        lines += [f"`python -m benchmarks.cleaning --settings {setting} --noise-draws {' '.join(draws)}` on "
                  f"{_machine(f)}: {len(draws)} noise draws of {setting} (each its own label flips and out-of-fold "
                  f"seed){timing}. Precision minus the draw's noise rate (the precision of flagging at random): mean "
                  f"and 95% t-interval over the draws; recall and F1: mean (min - max).", "",
                  "| detector | precision - noise rate (points) | recall | F1 | flagged (median) |",
                  "|---|---|---|---|---|"]
        for name in DETECTOR_ORDER:
            t = cleaning_test(f[setting], name, 0.0)
            spread = {k: [d[name][k] for d in draws.values()] for k in ("recall", "f1")}
            cells = [f"{sum(v) / len(v):.3f} ({min(v):.3f} - {max(v):.3f})" for v in spread.values()]
            lines.append(f"| {name} | {t['measured']:+.2f} [{t['ci_low']:+.2f}, {t['ci_high']:+.2f}] | "
                         f"{' | '.join(cells)} | {t['n']:,} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def faults_block() -> str:
    """The fault and bad-input suite (benchmarks/results/faults.json): its totals and a line per case."""
    f = _load(RESULTS / "faults.json")
    if f is None:
        return "Not measured yet: `python -m benchmarks.faults`."
    lines = [f"`python -m benchmarks.faults` on {_machine(f)}: {f['cases']} cases; crashed {f['crashed']}, lost "
             f"{f['lost']}, tracebacks shown {f['tracebacks']}, not passed {f['not_passed']}.", "",
             "| case | outcome proved | guards | result |", "|---|---|---|---|"]
    lines += [f"| `{r['case'].split('::')[-1]}` | {r['outcome']} | {', '.join(r['guards']) or '-'} | {r['result']} |"
              for r in f["per_case"]]
    return "\n".join(lines)


BLOCKS = {"latency": latency_block, "compression": compression_block, "serve_load": serve_block,
          "ablation_cost": ablation_block, "cleaning_draws": cleaning_draws_block, "pipeline_time": pipeline_time_block,
          "faults": faults_block}
README = ROOT / "README.md"
DOCS = (DOC, README)   # the files whose <!-- rendered: NAME --> blocks are rendered


def render(text: str) -> str:
    for name, block in BLOCKS.items():
        pattern = re.compile(rf"(<!-- rendered: {name} -->\n)(?:.*?\n)?(<!-- end: {name} -->)", re.S)
        text = pattern.sub(lambda m, block=block: m.group(1) + block() + "\n" + m.group(2), text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = [doc for doc in DOCS if render(doc.read_text()) != doc.read_text()]
    if args.check:
        print(f"stale: {', '.join(d.name for d in stale)}: run `python -m benchmarks.docs`" if stale else "up to date")
        return 1 if stale else 0
    for doc in stale:
        doc.write_text(render(doc.read_text()))
    print(f"rendered {', '.join(BLOCKS)} into {', '.join(str(d.relative_to(ROOT)) for d in DOCS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
