"""The search block of docs/benchmarks.md (`skillpack tune`, `skillpack tune --nas`, the pruners
compared, the searched best on held-out seeds), rendered from search.json by benchmarks.docs."""
from __future__ import annotations

from benchmarks.docs_deploy import RESULTS, load_result, machine_text


def search_command(budget: dict) -> str:
    return (f"python -m benchmarks.search --trials {budget['trials']} --nas-trials {budget['nas_trials']} "
            f"--epochs {budget['epochs']} --max-train {budget['max_train']}")


def pruner_rows(pruners: dict) -> list[str]:
    rows = ["| pruner | trials | pruned | epochs trained | best validation accuracy | wall |", "|---|---|---|---|---|---|"]
    for name, p in pruners.items():
        best = "none completed" if p["best_val"] is None else f"{p['best_val']:.4f}"
        rows.append(f"| {name} | {p['trials']} | {p['pruned']} | {p['epochs_trained']} | {best} | {p['wall_s'] / 60:.1f} min |")
    return rows


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
        *pruner_rows(f["pruners"]), "",
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
