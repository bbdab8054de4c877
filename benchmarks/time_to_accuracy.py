"""Wall time for each recipe of recipes.yaml to reach 92 / 93 / 93.5 / 94 / 95 % Fashion-MNIST
test accuracy, over several seeds: per recipe the mean final test accuracy with its 95% t
interval (`acc`, `acc_ci_low`, `acc_ci_high`), the median accuracy and the median times.

    python -m benchmarks.time_to_accuracy [--recipes default long] [--seeds 0 1 2]
    python -m benchmarks.time_to_accuracy --recipes cpu_best --seeds 100 101 102   # held-out seeds

Training wall time counts the epochs (train + the per-epoch validation pass); the test
evaluation done after each epoch to find the crossing is not counted. Writes
benchmarks/results/time_to_accuracy.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import statistics

from benchmarks.common import RESULTS, machine, save
from skillpack.data.store import prepare_splits
from skillpack.machine import one_line
from skillpack.stats import mean_interval
from skillpack.train.recipes import load_recipe
from skillpack.train.runs import RunData, evaluate_model, train_model

THRESHOLDS = (0.92, 0.93, 0.935, 0.94, 0.95)


def run_one(recipe: str, seed: int, extra: tuple[str, ...] = ()) -> dict:
    params = load_recipe(recipe, [f"seed={seed}", *extra])
    source, splits = prepare_splits(params.data, params.seed)
    train, val, test = splits["train"], splits["val"], splits["test"]
    trace, elapsed = [], [0.0]

    def on_epoch(record, history, evaluated):
        elapsed[0] += record.seconds
        acc = evaluate_model(evaluated, test.images, test.labels).accuracy
        trace.append({"epoch": record.epoch, "train_s": round(elapsed[0], 1), "test_acc": acc})
        print(f"  {recipe} seed {seed} epoch {record.epoch}: test {acc:.4f} at {elapsed[0]:.0f}s", flush=True)

    data = RunData((train.images, train.labels), (val.images, val.labels), len(source.classes))
    train_model(params.train, data, seed, on_epoch=on_epoch)
    reached = {f"{t:.3f}": next((p["train_s"] for p in trace if p["test_acc"] >= t), None) for t in THRESHOLDS}
    return {"recipe": recipe, "seed": seed, "final_acc": trace[-1]["test_acc"], "train_s": trace[-1]["train_s"],
            "seconds_to": reached, "trace": trace, "machine": machine()}


def previous_runs(exclude: list[str]) -> list[dict]:
    """Runs of other recipes from the last results file, so one recipe can be re-measured alone;
    each keeps the machine it ran on (runs from before runs recorded it: the file's)."""
    path = RESULTS / "time_to_accuracy.json"
    if not path.exists():
        return []
    previous = json.loads(path.read_text())
    return [{**r, "machine": r.get("machine", previous.get("machine"))} for r in previous["runs"]
            if r["recipe"] not in exclude]


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict], recipe: str) -> dict:
    """A recipe's runs in figures; a threshold that a run was not measured at (runs of an older
    threshold list) counts as not reached by it."""
    mine = [r for r in runs if r["recipe"] == recipe]
    accuracy = mean_interval([r["final_acc"] for r in mine])
    thresholds = list(dict.fromkeys(t for r in mine for t in r["seconds_to"]))
    return {
        "acc": accuracy["mean"], "acc_ci_low": accuracy["ci_low"], "acc_ci_high": accuracy["ci_high"],
        "acc_median": statistics.median(r["final_acc"] for r in mine),
        "train_s": statistics.median(r["train_s"] for r in mine),
        "seconds_to": {t: median_or_none([r["seconds_to"].get(t) for r in mine]) for t in thresholds},
        "seeds": [r["seed"] for r in mine],
        "reached_by_seeds": {t: sum(r["seconds_to"].get(t) is not None for r in mine) for t in thresholds},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["default", "long"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--replot", action="store_true",
                        help="train nothing: re-summarise and re-plot the runs of the last results file")
    args = parser.parse_args(argv)
    if args.replot:
        runs, args.seeds = previous_runs(exclude=[]), json.loads((RESULTS / "time_to_accuracy.json").read_text())["seeds"]
    else:
        runs = [run_one(recipe, seed) for recipe in args.recipes for seed in args.seeds]
        runs = [*previous_runs(exclude=args.recipes), *runs]
    recipes = list(dict.fromkeys(r["recipe"] for r in runs))
    summary = {recipe: summarise(runs, recipe) for recipe in recipes}
    figures = {"seeds": args.seeds, "recipes": summary, "runs": runs}
    for recipe in recipes:
        figures[f"{recipe}_acc"] = summary[recipe]["acc"]
        figures[f"{recipe}_train_s"] = summary[recipe]["train_s"]
    print("| recipe | mean test acc [95% CI] | median train s | "
          + " | ".join(f"s to {float(t):.1%}" for t in THRESHOLDS) + " |")
    print("|---|---|---|" + "---|" * len(THRESHOLDS))
    for recipe, s in summary.items():
        cells = [f"{s['seconds_to'][t]:.0f} ({s['reached_by_seeds'][t]}/{len(s['seeds'])})"
                 if s["seconds_to"].get(t) is not None else "not reached" for t in (f"{x:.3f}" for x in THRESHOLDS)]
        print(f"| {recipe} | {s['acc']:.4f} [{s['acc_ci_low']:.4f}, {s['acc_ci_high']:.4f}] | {s['train_s']:.0f} | "
              + " | ".join(cells) + " |")
    path = save("time_to_accuracy", figures)
    plot(runs, path.with_suffix(".png"))
    print(f"wrote {path} and its .png")
    return figures


def plot(runs: list[dict], path) -> None:
    from skillpack.plots import plot_accuracy_over_time

    lines = [{"group": r["recipe"], "minutes": [p["train_s"] / 60 for p in r["trace"]],
              "accuracy": [p["test_acc"] for p in r["trace"]]} for r in runs]
    machines = {one_line(r["machine"]) if "cpu_flags" in r["machine"] else f"{r['machine']['cpu']} (model not recorded)"
                for r in runs}
    plot_accuracy_over_time(lines, path, "Fashion-MNIST test accuracy against training time, one line per seed "
                                         f"(python -m benchmarks.time_to_accuracy)\n{'; '.join(sorted(machines))}",
                            list(THRESHOLDS))


if __name__ == "__main__":
    main()
