"""The search block of docs/benchmarks.md (`skillpack tune`, `skillpack tune --nas`, the pruners
compared, the searched best on held-out seeds), rendered from search.json by benchmarks.docs."""
from __future__ import annotations

from benchmarks.docs_deploy import RESULTS, load_result, machine_text
from skillpack.evidence.claims import label_efficiency_pool


def search_command(budget: dict) -> str:
    return (f"python -m benchmarks.search --trials {budget['trials']} --nas-trials {budget['nas_trials']} "
            f"--epochs {budget['epochs']} --max-train {budget['max_train']}")


def pruner_rows(pruners: dict) -> list[str]:
    rows = ["| pruner | trials | pruned | epochs trained | best validation accuracy | wall |", "|---|---|---|---|---|---|"]
    for name, p in pruners.items():
        best = "none completed" if p["best_val"] is None else f"{p['best_val']:.4f}"
        rows.append(f"| {name} | {p['trials']} | {p['pruned']} | {p['epochs_trained']} | {best} | {p['wall_s'] / 60:.1f} min |")
    return rows


def pruner_comparison(f: dict) -> str:
    """The second pruner against the first (the default), beside the seed-to-seed spread of one
    recipe (the held-out interval's half-width): a single study per pruner is one draw of each."""
    (first, a), (second, b) = list(f["pruners"].items())[:2]
    if a["best_val"] is None or b["best_val"] is None:
        return ""
    delta = 100 * (b["best_val"] - a["best_val"])
    half = 100 * (f["heldout_test_ci"][1] - f["heldout_test_ci"][0]) / 2
    reading = "within" if abs(delta) <= half else "beyond"
    return (f"{second} against {first}: best validation accuracy {delta:+.2f} points with "
            f"{b['epochs_trained'] / a['epochs_trained']:.2f}x the epochs trained; {reading} the half-width of one "
            f"recipe's held-out interval ({half:.2f} points), from one study each.")


def pareto_rows(front: list[dict], chosen: str | None) -> list[str]:
    rows = ["| architecture | validation accuracy | ONNX Runtime latency, batch 1 | parameters |", "|---|---|---|---|"]
    for point in sorted(front, key=lambda p: p["latency_ms"]):
        name = f"**{point['name']}** (chosen)" if point["name"] == chosen else point["name"]
        rows.append(f"| {name} | {point['val_acc']:.4f} | {point['latency_ms']:.3f} ms | {point['params']:,} |")
    return rows


def search_block() -> str:
    f = load_result(RESULTS / "search.json")
    if f is None:
        return "Not measured yet: `python -m benchmarks.search`."
    b, (low, high) = f["budget"], f["heldout_test_ci"]
    optimism = 100 * (f["best_val"] - f["heldout_test_mean"])
    return "\n".join([
        f"`{search_command(b)}` on {machine_text(f)}: {f['wall_s'] / 60:.0f} min in all. Every trial trains at most "
        f"{b['epochs']} epochs on a stratified {b['max_train']:,} training images (a tenth carved as validation); "
        f"the same study (space, sampler seed, trials) ran once per pruner:", "",
        *pruner_rows(f["pruners"]), "", *([pruner_comparison(f), ""] if len(f["pruners"]) > 1 else []),
        f"The best trial's params re-trained on seeds the search never saw ({', '.join(map(str, f['heldout_seeds']))}), "
        f"same budget, scored on {f['test_images']:,} test images: **{f['heldout_test_mean']:.4f}** "
        f"[{low:.4f}, {high:.4f}] (95% t interval) against its in-search validation accuracy {f['best_val']:.4f} "
        f"({optimism:+.2f} points: the best of noisy trials, picked and reported on the same validation images, "
        f"against other images and seeds).", "",
        f"Architecture search (`skillpack tune --nas`, {f['nas_trials']} trials, two objectives): the Pareto front", "",
        *pareto_rows(f["pareto"], f["chosen"]), "",
        f"The chosen architecture's ONNX export against eager torch: max abs difference "
        f"{f['chosen_onnx_max_abs_diff']:.1e} (the export stage's tolerance {f['parity_max_abs_diff']:.0e}: "
        f"{'passes' if f['chosen_onnx_parity_ok'] else 'FAILS'})."])


def _cell(c: dict) -> str:
    return f"{c['mean']:.4f} [{c['ci_low']:.4f}, {c['ci_high']:.4f}], {c['cpu_seconds_per_run']:.0f} CPU s"


def label_efficiency_rows(summary: dict, dataset: str, inits: list[str]) -> list[str]:
    cells = {(c["fraction"], c["init"]): c for c in summary["cells"] if c["dataset"] == dataset}
    rows = [f"| {dataset}: labels | " + " | ".join(inits) + " |", "|---|" + "---|" * len(inits)]
    for fraction in sorted({f for f, _ in cells}):
        n = cells[fraction, inits[0]].get("n_labelled")
        rows.append(f"| {100 * fraction:g}%{f' ({n:,})' if n else ''} | "
                    + " | ".join(_cell(cells[fraction, i]) for i in inits) + " |")
    return rows


def label_efficiency_block() -> str:
    f = load_result(RESULTS / "label_efficiency.json")
    if f is None:
        return "Not measured yet: `python -m benchmarks.label_efficiency`."
    b, s = f["budget"], f["summary"]
    pool, simclr = label_efficiency_pool(b)
    test = "the whole test split" if b.get("max_test") is None else f"at most {b['max_test']:,} test images (stratified)"
    wall = (f" The table took {f['wall_s'] / 60:.0f} min of wall time, SimCLR pre-training "
            f"{f['pretrain_wall_s'] / 60:.0f} min of it." if "pretrain_wall_s" in f else "")
    lines = [f"`python -m benchmarks.label_efficiency` on {machine_text(f)}: {f['model']} at {b['input_size']} px, "
             f"{b['epochs']} epochs per cell (at least {b['min_steps']} steps of {b['batch_size']}), "
             f"{b.get('amp', 'off')} autocast, seeds {b['seeds']}, labels drawn from {pool} (its 100%), scored on "
             f"{test}; SimCLR {b['pretrain_epochs']} epochs on {simclr}.{wall} Test accuracy, mean [95% t interval], "
             f"and CPU seconds per run:", ""]
    for dataset in b["datasets"]:
        lines += [*label_efficiency_rows(s, dataset, b["inits"]), ""]
    for key in ("pretrained_vs_scratch_at_1pct", "simclr_vs_scratch_at_1pct"):
        d = s.get(key)
        if d:
            lines.append(f"- {d['init']} minus scratch, Fashion-MNIST, 1% of the labels, paired by seed: "
                         f"**{100 * d['delta']:+.2f} points** [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]")
    return "\n".join([*lines, "", "![label efficiency](../benchmarks/results/label_efficiency.png)"])
