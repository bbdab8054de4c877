"""Render the measured sections of docs/benchmarks.md from the results JSON (never by hand).

    python -m benchmarks.docs           # rewrite every <!-- rendered: NAME --> ... <!-- end: NAME --> block
                                        # of docs/benchmarks.md and README.md
    python -m benchmarks.docs --check   # exit 1 when a block differs from what its JSON renders

tests/test_docs.py runs the check, so a figure in these blocks cannot drift from its results file.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

from benchmarks.docs_deploy import compression_block, latency_block, load_result, machine_text, predict_block, serve_block
from benchmarks.docs_search import label_efficiency_block, search_block
from skillpack import paths
from skillpack.machine import one_line

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "benchmarks" / "results"


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
    f = load_result(RESULTS / "pipeline_time.json")
    if f is None or "make_run_s" not in f:
        return "Not measured yet: `python -m benchmarks.pipeline_time`."
    return "\n".join([f"{machine_text(f)}, commit {f.get('pipeline_commit', f['commit'])}:", "",
                      "| what | figure | command |", "| --- | --- | --- |", *pipeline_time_rows(f),
                      *best_cpu_row()])


def best_cpu_row() -> list[str]:
    """The headline's accuracy row: the best CPU recipe of time_to_accuracy.json, its machine named."""
    f = load_result(RESULTS / "time_to_accuracy.json")
    best = f and best_cpu_recipe(f)
    if not best:
        return []
    name, s = best
    return [f"| best Fashion-MNIST test accuracy on a CPU, no test-time augmentation (recipe `{name}`, "
            f"{_machine_of(f, name)}) | {_interval(s).replace('**', '')} mean over seeds "
            f"{', '.join(map(str, s['seeds']))}; median training time {s['train_s'] / 60:.1f} min | "
            f"`python -m benchmarks.time_to_accuracy --recipes {name} --seeds {' '.join(map(str, s['seeds']))}` |"]


def ablation_block() -> str:
    """The cost of the cpu ablation profile (benchmarks/results/ablation_cost.json) and the
    shape of its evidence (reports/claims.json)."""
    cost = load_result(RESULTS / "ablation_cost.json")
    if cost is None:
        return "Not measured yet: `make ablate`."
    machine = cost["machine"] if isinstance(cost["machine"], str) else one_line(cost["machine"])
    lines = [f"`{cost['generated_by']}` (the {cost['profile']} profile of ablations/{cost['spec']}.yaml) on {machine}:",
             "", "| runs | computed / from the store | wall (since the store was empty) | tests | seeds per test (median) | "
             "accuracy CI half-width, median (points) |", "|---|---|---|---|---|---|",
             f"| {cost['runs']} | {cost['computed_runs']} / {cost['cached_runs']} | {cost['wall_s'] / 60:.1f} min | "
             f"{cost['tests']} | {cost['seeds_median']:g} | {cost['halfwidth_median_points']:.2f} |"]
    invocations = cost.get("invocations") or []
    if len(invocations) > 1:
        lines += ["", f"Killed and resumed: {len(invocations)} invocations since the store was empty, "
                      f"{cost['wall_s'] / 60:.1f} min in all (" + "; ".join(
                          f"{i['computed_runs']} runs computed in {i['wall_s'] / 60:.1f} min"
                          + (f" on {i['store_at_start']} stored" if i.get("store_at_start") else "")
                          for i in invocations) + ")."]
    claims = load_result(ROOT / "reports" / "claims.json")
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

    f = load_result(RESULTS / "cleaning.json")
    settings = [s for s in (f or {}).get("settings", []) if len(f[s].get("draws") or {}) >= 2]
    if not settings:
        return "Not measured yet: `python -m benchmarks.cleaning --settings symmetric_0.1 --noise-draws 0 1 2 3 4`."
    lines = []
    for setting in settings:
        draws = f[setting]["draws"]
        new = [d["oof_seconds"] for d in draws.values() if d.get("oof_seconds")]
        timing = (f"; out-of-fold models {sum(new) / len(new) / 60:.1f} min per new draw" if new else "")
        lines += [f"`python -m benchmarks.cleaning --settings {setting} --noise-draws {' '.join(draws)}` on "
                  f"{machine_text(f)}: {len(draws)} noise draws of {setting} (each its own label flips and out-of-fold "
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
    f = load_result(RESULTS / "faults.json")
    if f is None:
        return "Not measured yet: `python -m benchmarks.faults`."
    lines = [f"`python -m benchmarks.faults` on {machine_text(f)}: {f['cases']} cases; crashed {f['crashed']}, lost "
             f"{f['lost']}, tracebacks shown {f['tracebacks']}, not passed {f['not_passed']}.", "",
             "| case | outcome proved | guards | result |", "|---|---|---|---|"]
    lines += [f"| `{r['case'].split('::')[-1]}` | {r['outcome']} | {', '.join(r['guards']) or '-'} | {r['result']} |"
              for r in f["per_case"]]
    return "\n".join(lines)


ENGINE_NAMES = {"fp32": "fp32", "bf16": "bf16 autocast"}


def _ratio_cells(m: dict, engine: str) -> str:
    r, bold = m["engines"][engine], "**" if engine == m["engine_amp"] else ""
    return f"{r['img_s']:,.0f} img/s | {bold}{r['ratio']:.2f}x{bold} ({', '.join(f'{x:.2f}' for x in r['ratio_by_repeat'])})"


def _two_x_bar(f: dict) -> str:
    """Which engines are at least 2x the plain loop in every repeat, on which models."""
    met = {e: [name for name, m in f["models"].items() if min(m["engines"][e]["ratio_by_repeat"]) >= 2]
           for e in f["engines"]}
    return "The 2x bar (engine img/s over the plain loop's, in every repeat): " + "; ".join(
        f"{ENGINE_NAMES.get(e, e)} meets it on {', '.join(models) or 'no model'}" for e, models in met.items()) + "."


def train_speed_block() -> str:
    """The plain loop against the engine, per model (benchmarks/results/train_speed.json)."""
    f = load_result(RESULTS / "train_speed.json")
    if f is None:
        return "Not measured yet: `python -m benchmarks.train_speed`."
    engines, n = list(f["engines"]), f["repeats"]
    lines = [f"`python -m benchmarks.train_speed` on {machine_text(f)}: batch {f['batch']}, {f['images']:,} images; "
             f"the plain loop and the engine alternate {n} times and each figure is the median of its {n} runs.", "",
             "| model | MMACs | plain: Dataset + PIL transforms + DataLoader (best of 0/1 workers) | "
             + " | ".join(f"engine {ENGINE_NAMES.get(e, e)} | ratio ({n} repeats)" for e in engines)
             + " | fp32 training GFLOP/s (direct count) | matmul GFLOP/s |",
             "| --- " * (5 + 2 * len(engines)) + "|"]
    lines += [f"| {name} | {m['macs'] / 1e6:.1f} | {m['plain_img_s']:,.0f} img/s | "
              + " | ".join(_ratio_cells(m, e) for e in engines)
              + f" | {m['train_gflops']:.1f} ({m['train_fraction_of_matmul']:.0%}) | {f['matmul_gflops']:.1f} |"
              for name, m in f["models"].items()]
    return "\n".join([*lines, "", _two_x_bar(f), "", *engine_choices_table(f)])


ENGINE_CHOICES = {  # row -> (the fixed-batch step's img/s for one model's engine_choices, what the engine does)
    "deterministic mode with its NaN fill of uninitialised memory -> fill off": (
        lambda c: f"{c['step_img_s_nan_fill']:,.0f} -> {c['step_img_s']:,.0f} ({c['deterministic_fill_speedup']:.2f}x)",
        "yes: the engine keeps deterministic kernels and switches the fill off"),
    "torch.compile of the backbone (inductor, cold cache)": (
        lambda c: f"{c['step_img_s_compiled']:,.0f} ({c['compile_speedup']:.2f}x), after {c['compile_s']:.0f} s of compiling",
        "no: its gain did not hold from run to run, and every run pays the cold compile"),
    "bf16 autocast (AVX512-BF16 or AMX)": (
        lambda c: f"{c['step_img_s_bf16']:,.0f} ({c['bf16_speedup']:.2f}x)" if c["cpu_has_bf16_units"] else "no bf16 units",
        "yes, as recipe `bf16` (see the time-to-accuracy table); `params.yaml` stays fp32"),
    "intra-op threads 1 -> 2": (lambda c: " -> ".join(f"{v:,.0f}" for v in c["step_img_s_by_threads"].values()),
                                "2 (`train.threads`), with `OMP_WAIT_POLICY=PASSIVE`"),
    "batch 64 / 128 / 256 / 512": (lambda c: " / ".join(f"{v:,.0f}" for v in c["step_img_s_by_batch"].values()),
                                   "256 in `params.yaml`, 128 in recipes `bf16` and `long` (accuracy per second)"),
}


def engine_choices_table(f: dict) -> list[str]:
    """The engine's choices, each measured on one fixed batch (train_speed.json's `engine_choices`)."""
    models = f["models"]
    lines = [f"Engine choices (`engine_choices` in the JSON): the bare training step on one fixed batch of "
             f"{f['batch']}, img/s.", "", "| choice | " + " | ".join(f"{name} img/s" for name in models) + " | adopted |",
             "| --- " * (len(models) + 2) + "|"]
    return lines + [f"| {choice} | " + " | ".join(cell(m["engine_choices"]) for m in models.values()) + f" | {adopted} |"
                    for choice, (cell, adopted) in ENGINE_CHOICES.items()]


ACCEPTANCE = (("default", "0.920", 5), ("long", "0.935", 20), ("cpu_best", "0.950", 30))  # recipe, accuracy, minutes


def _seconds(v: float | None) -> str:
    return "not reached" if v is None else f"{v:.0f}"


def _interval(s: dict) -> str:
    return f"**{s['acc']:.4f}** [{s['acc_ci_low']:.4f}, {s['acc_ci_high']:.4f}]" if "acc_ci_low" in s \
        else f"**{s['acc']:.4f}** (median)"   # a results file written before the mean and interval were kept


def time_to_accuracy_rows(f: dict, thresholds: list[str]) -> list[str]:
    """A row per run, then the recipe's mean accuracy with its interval and median times in bold;
    the default recipe first. A run not measured at a threshold (an older threshold list) reads
    as not reached."""
    rows = []
    for recipe in sorted(f["recipes"], key=lambda name: name != "default"):
        s = f["recipes"][recipe]
        rows += [f"| {recipe} | {r['seed']} | {r['final_acc']:.4f} | {r['train_s']:.0f} | "
                 + " | ".join(_seconds(r["seconds_to"].get(t)) for t in thresholds) + " |"
                 for r in f["runs"] if r["recipe"] == recipe]
        medians = ["-" if s["seconds_to"].get(t) is None else f"**{s['seconds_to'][t]:.0f}**"
                   + ("" if s["reached_by_seeds"][t] == len(s["seeds"])
                      else f" ({s['reached_by_seeds'][t]} of {len(s['seeds'])} seeds)")
                   for t in thresholds]
        rows.append(f"| **{recipe}**, mean [95% CI] / medians | {', '.join(map(str, s['seeds']))} | {_interval(s)} | "
                    f"**{s['train_s']:.0f}** | " + " | ".join(medians) + " |")
    return rows


def best_cpu_recipe(f: dict) -> tuple[str, dict] | None:
    """The recipe with the highest mean test accuracy among those measured on machines without a
    GPU (each run records its machine; a GPU's name is under its `cuda` key)."""
    on_cpu = {name: s for name, s in f["recipes"].items()
              if not any((r.get("machine") or f.get("machine") or {}).get("cuda") for r in f["runs"]
                         if r["recipe"] == name)}
    return max(on_cpu.items(), key=lambda item: item[1]["acc"]) if on_cpu else None


def _machine_of(f: dict, recipe: str) -> str:
    run = next(r for r in f["runs"] if r["recipe"] == recipe)
    return machine_text({"machine": run.get("machine") or f.get("machine")})


def best_cpu_line(f: dict) -> str | None:
    best = best_cpu_recipe(f)
    if best is None:
        return None
    name, s = best
    return (f"- Best CPU test accuracy (no test-time augmentation): `{name}`, {_interval(s).replace('**', '')} mean over "
            f"seeds {', '.join(map(str, s['seeds']))}, median training time {s['train_s']:.0f} s "
            f"({s['train_s'] / 60:.1f} min) on {_machine_of(f, name)}.")


def time_to_accuracy_findings(f: dict, unreached: list[str]) -> list[str]:
    """The acceptance bars, the best CPU recipe, the thresholds no run reached, and bf16 against fp32."""
    lines = []
    for recipe, t, minutes in ACCEPTANCE:
        runs = [r for r in f["runs"] if r["recipe"] == recipe]
        crossed = [r["seconds_to"][t] for r in runs if r["seconds_to"].get(t) is not None]
        if runs:
            lines.append(f"- {float(t):.1%} within {minutes} minutes of training (`{recipe}`): "
                         f"{sum(s <= minutes * 60 for s in crossed)} of {len(runs)} seeds"
                         + (f", the slowest crossing after {max(crossed):.0f} s." if crossed else "."))
    lines += [line for line in [best_cpu_line(f)] if line]
    if unreached:
        lines.append(f"- Not reached by any run: {', '.join(f'{float(t):.1%}' for t in unreached)}.")
    if {"bf16", "default"} <= set(f["recipes"]):
        bf16, fp32 = f["recipes"]["bf16"], f["recipes"]["default"]
        lines.append(f"- `bf16` against `default` (mean accuracy, median time): test accuracy {bf16['acc']:.4f} vs "
                     f"{fp32['acc']:.4f}, {fp32['train_s'] / bf16['train_s']:.2f}x less training time.")
    return lines


def time_to_accuracy_commands(f: dict) -> list[str]:
    """One command per group of recipes measured on the same seeds and machine."""
    groups: dict[tuple, list[str]] = {}
    for recipe, s in f["recipes"].items():
        groups.setdefault((tuple(s["seeds"]), _machine_of(f, recipe)), []).append(recipe)
    return [f"`python -m benchmarks.time_to_accuracy --recipes {' '.join(recipes)} --seeds "
            f"{' '.join(map(str, seeds))}` on {where}" for (seeds, where), recipes in groups.items()]


def time_to_accuracy_block() -> str:
    f = load_result(RESULTS / "time_to_accuracy.json")
    if f is None:
        return "Not measured yet: `python -m benchmarks.time_to_accuracy`."
    runs = f["runs"]
    thresholds = list(dict.fromkeys(t for r in runs for t in r["seconds_to"]))
    reached = [t for t in thresholds if any(r["seconds_to"].get(t) is not None for r in runs)]
    unreached = [t for t in thresholds if t not in reached]
    lines = [*(f"- {command}" for command in time_to_accuracy_commands(f)), "",
             "Training seconds count the epochs with their validation pass, not the per-epoch test evaluation that "
             "finds the crossings.", "",
             "| recipe | seed | final test acc | train s | " + " | ".join(f"s to {float(t):.1%}" for t in reached) + " |",
             "| --- " * (4 + len(reached)) + "|", *time_to_accuracy_rows(f, reached), ""]
    return "\n".join(lines + time_to_accuracy_findings(f, unreached))


def cleaning_block() -> str:
    """The detectors and the cleaned trainings per noise setting (benchmarks/results/cleaning.json)."""
    from benchmarks.cleaning import markdown

    f = load_result(RESULTS / "cleaning.json")
    if f is None:
        return "Not measured yet: `python -m benchmarks.cleaning`."
    settings = f["settings"]  # a setting trained with several seeds was re-measured alone with them
    commands = ["`python -m benchmarks.cleaning`"] + [
        f"`python -m benchmarks.cleaning --settings {s} --train-seeds {' '.join(f[s]['acc_noisy_by_seed'])}`"
        for s in settings if len(f[s].get("acc_noisy_by_seed", {})) > 1]
    minutes = ", ".join(f"{s} {f[s]['seconds']['setting_total'] / 60:.1f}" for s in settings)
    return "\n".join([f"{' then '.join(commands)} on {machine_text(f, 'full_run_machine')}:", "", markdown(f, settings), "",
                      f"Time per setting (min; `seconds` in the JSON, out-of-fold predictions cached, the detectors "
                      f"{max(f[s]['seconds']['detect'] for s in settings):.0f} s at most): {minutes}; each model on "
                      f"the clean labels {f['final_model']['train_seconds_clean']:.0f} s (median)."])


POLICY_VIEWS = {  # cleaning_policies.json's policy -> the table's row
    "relabel": "relabel every flag with the fold models' label (the `relabel` policy)",
    "relabel_confident": "relabel flags whose suggested label is confident (p >= t_j), drop the rest",
    "drop_confident": "drop only the confident flags, keep the rest as given",
    "drop_low_self": "drop flags whose given label has p < t_j / 2",
    "diag_drop_found_flips_only": "diag: drop only the flags that are flipped (keeps the flips the ensemble misses)",
    "diag_drop_all_flips_and_flagged_clean": "diag: drop every flipped sample and the ensemble's flagged clean ones",
    "diag_drop_all_flips_and_random_clean": "diag: drop every flipped sample and as many clean ones drawn at random",
}


def _policy_row(view: str, kept: int, noise_left: float, clean_dropped: int, by_seed: dict, base: dict) -> str:
    """One view; recovered is the median over the seeds of the share of the lost accuracy won back."""
    noisy, clean = base["acc_noisy_by_seed"], base["acc_clean_by_seed"]
    won = statistics.median([(by_seed[s] - noisy[s]) / (clean[s] - noisy[s]) for s in by_seed])
    return (f"| {view} | {kept:,} | {noise_left:.1%} | {clean_dropped:,} | "
            f"{', '.join(f'{a:.4f}' for a in by_seed.values())} | {won:.0%} |")


def cleaning_policies_block() -> str:
    """What to do with the ensemble's flags (cleaning_policies.json), between cleaning.json's drop and oracle."""
    p, f = load_result(RESULTS / "cleaning_policies.json"), load_result(RESULTS / "cleaning.json")
    if p is None or f is None:
        return "Not measured yet: `python -m benchmarks.cleaning_policies`."
    base, cleaned, seeds = p["baseline"], f[p["setting"]]["cleaned"], [str(s) for s in p["train_seeds"]]
    flipped = round(float(p["setting"].rsplit("_", 1)[1]) * cleaned["input"])  # symmetric_0.2: 20% flipped
    lines = [f"`python -m benchmarks.cleaning_policies --train-seeds {' '.join(seeds)}` on {machine_text(p)}, "
             f"{p['setting']}; the first and last rows are `python -m benchmarks.cleaning`'s cleaned and oracle "
             f"views of the same seeds:", "",
             f"| view | kept | label noise left | clean samples dropped | test acc (seeds {', '.join(seeds)}) | recovered |",
             "| --- | --- | --- | --- | --- | --- |",
             _policy_row(f"drop on `{base['use']}` (`clean.use`)", cleaned["keep"], cleaned["noise_left"],
                         cleaned["clean_dropped"], {s: base["acc_cleaned_by_seed"][s] for s in seeds}, base)]
    lines += [_policy_row(POLICY_VIEWS.get(name, name), v["kept"], v["noise_left"], v["clean_dropped"],
                          v["acc_by_seed"], base) for name, v in p["policies"].items()]
    lines.append(_policy_row("oracle: drop exactly the flipped samples", cleaned["input"] - flipped, 0.0, 0,
                             {s: base["acc_oracle_by_seed"][s] for s in seeds}, base))
    return "\n".join(lines)


def evaluate_block() -> str:
    """The evaluate stage's artifacts as `make run` left them (reports/), its time from pipeline_time.json."""
    metrics, explain = load_result(ROOT / paths.METRICS), load_result(ROOT / paths.EXPLAIN / "explain.json")
    timing = load_result(RESULTS / "pipeline_time.json")
    if metrics is None or explain is None or timing is None:
        return "Not measured yet: `make run`, then `python -m benchmarks.pipeline_time`."
    pair = explain["top_confused"][0]
    return "\n".join([
        "| what | figure | source |", "| --- | --- | --- |",
        f"| the evaluate stage of `make run` ({metrics['n_test']:,} test images: metrics, confusion, curves, MLflow "
        f"logging, visual analysis) | {timing['stage_s']['evaluate']:.0f} s | `python -m benchmarks.pipeline_time` "
        f"on {machine_text(timing)} |",
        f"| of which the visual analysis (Grad-CAM grid of 60 maps, t-SNE of 2,000 embeddings, reliability, errors) | "
        f"{explain['explain_seconds']:.1f} s | `reports/explain/explain.json` (machine not recorded) |",
        f"| t-SNE silhouette (2-d) / on the 128-d embeddings | {metrics['tsne_silhouette']:.3f} / "
        f"{metrics['embedding_silhouette']:.3f} | `reports/metrics.json` |",
        f"| expected calibration error (15 bins) | {metrics['ece']:.4f} | `reports/metrics.json`, "
        f"`reports/explain/reliability.png` |",
        f"| most-confused pair | {pair['true']} -> {pair['predicted']}, {pair['count']:,} of "
        f"{round(pair['count'] / pair['share_of_true']):,} | `reports/explain/confused_pairs.csv` |"])


BLOCKS = {"latency": latency_block, "compression": compression_block, "serve_load": serve_block,
          "ablation_cost": ablation_block, "cleaning_draws": cleaning_draws_block, "pipeline_time": pipeline_time_block,
          "faults": faults_block, "train_speed": train_speed_block,
          "time_to_accuracy": time_to_accuracy_block, "cleaning": cleaning_block,
          "cleaning_policies": cleaning_policies_block, "evaluate": evaluate_block, "predict": predict_block,
          "search": search_block, "label_efficiency": label_efficiency_block}
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
