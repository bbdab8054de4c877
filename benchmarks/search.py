"""Hyper-parameter search, architecture search, and how optimistic the searched best is.

    python -m benchmarks.search                  # 20 tune trials, 12 architecture trials, 3 epochs on 5,000 images
    python -m benchmarks.search --quick          # the whole path at a toy budget, under a minute (benchmarks/cache/)
    python -m benchmarks.search --trials 40 --nas-trials 20 --epochs 5 --max-train 10000 --timeout-s 3600

1. `skillpack tune` (params tune: search/default.yaml, the median pruner, params' train.model) on a
   stratified subset of --max-train training images (a tenth of it carved as validation), each
   trial at most --epochs epochs: trials, pruned, best_val (the best trial's validation accuracy).
   The same study again under --other-pruner (Hyperband) gives `pruners`: per pruner its trials,
   pruned, epochs trained and best_val - the numbers the default pruner is chosen with.
2. The best trial's params re-trained on seeds the search never saw (--heldout-seeds), on the same
   budget a completed trial had (--epochs epochs on the same images), and scored on the test set:
   heldout_test_mean and its 95% t interval. best_val beside it is the maximum of noisy trials,
   picked on the same validation images it is reported on: the gap shows the search's optimism.
3. `skillpack tune --nas` (params tune.nas) on the same images: --nas-trials trials of --epochs
   epochs each (Optuna prunes no multi-objective study, so every trial runs to the end); the
   Pareto front (validation accuracy, ONNX Runtime latency at batch 1 in ms, parameters, name)
   and the chosen architecture, whose trained model's ONNX export is checked against eager torch
   (chosen_onnx_max_abs_diff, to be under the export tests' tolerance).

--timeout-s stops each study from starting a trial after that many seconds. The studies, their
plots and the recipes they write go to a temporary folder (recipes.yaml is left alone); the runs
go to MLflow (MLFLOW_TRACKING_URI, else ./mlflow.db; --quick: a temporary database). Writes
benchmarks/results/search.json (--quick: benchmarks/cache/search_quick.json).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from benchmarks.common import RESULTS, machine
from skillpack import paths
from skillpack.config import load_params
from skillpack.train.runs import RunData

CACHE = RESULTS.parent / "cache"


@dataclass(frozen=True)
class Budget:
    trials: int = 20                  # tune's trials (complete, pruned or failed)
    nas_trials: int = 12              # the architecture search's trials
    epochs: int = 3                   # per trial, and per held-out re-training
    max_train: int = 5000             # stratified train images (a tenth of them carved as validation)
    max_test: int | None = None       # test images the held-out seeds are scored on (None: all 10,000)
    timeout_s: float | None = None    # per study: no trial starts after this many seconds
    heldout_seeds: tuple[int, ...] = (100, 101, 102)
    latency_runs: int = 50            # timed ONNX Runtime calls per architecture
    other_pruner: str | None = "hyperband"  # the same tune study again with this pruner (None: skip)


QUICK = Budget(trials=2, nas_trials=2, epochs=1, max_train=600, max_test=1000, latency_runs=10, other_pruner=None)


def search_data(budget: Budget) -> tuple[RunData, tuple]:
    """(train and val of --max-train images, test) as the prepare stage carves them."""
    from skillpack.data.store import prepare_splits

    params = load_params(paths.PARAMS, [f"data.max_train={budget.max_train}",
                                        f"data.max_test={'null' if budget.max_test is None else budget.max_test}"])
    source, splits = prepare_splits(params.data, params.seed)
    data = RunData(*((splits[s].images, splits[s].labels) for s in ("train", "val")), len(source.classes))
    return data, (splits["test"].images, splits["test"].labels)


def overrides(budget: Budget) -> tuple[str, ...]:
    timeout = "null" if budget.timeout_s is None else budget.timeout_s
    return (f"train.epochs={budget.epochs}", f"tune.n_trials={budget.trials}", f"tune.timeout_s={timeout}",
            "tune.study=bench-search", "tune.recipe=bench-search", f"tune.nas.n_trials={budget.nas_trials}",
            f"tune.nas.timeout_s={timeout}", f"tune.nas.epochs={budget.epochs}", "tune.nas.max_train=null",
            f"tune.nas.latency_runs={budget.latency_runs}", "tune.nas.study=bench-search-nas",
            "tune.nas.recipe=bench-search-nas")


def pruner_figures(summary, wall_s: float) -> dict:
    """What a pruner cost and found: trials by end state, epochs trained, best validation accuracy."""
    return {"trials": sum(summary.counts.values()), "pruned": summary.counts.get("PRUNED", 0),
            "epochs_trained": summary.epochs_trained, "best_val": summary.best_value, "wall_s": round(wall_s, 1)}


def timed_tune(run, data) -> tuple:
    from skillpack.train.tune import tune

    started = time.perf_counter()
    summary = tune(run, data)
    return summary, time.perf_counter() - started


def other_pruner_study(budget: Budget, data: RunData, folder: Path) -> dict:
    """The same study (space, sampler seed, trials, epochs) under budget.other_pruner."""
    from skillpack.train.tune import TuneRun

    name = f"bench-search-{budget.other_pruner}"
    run = TuneRun(paths.PARAMS, (*overrides(budget), f"tune.pruner={budget.other_pruner}", f"tune.study={name}",
                                 f"tune.recipe={name}"), folder=folder / "tune", recipes_path=folder / "recipes.yaml")
    return pruner_figures(*timed_tune(run, data))


def heldout_accuracies(recipe: dict, data: RunData, test: tuple, seeds: tuple[int, ...]) -> list[float]:
    """The recipe (a best trial's params) trained afresh on each seed, scored on the test images."""
    from skillpack.train.runs import evaluate_model, train_model
    from skillpack.train.search_space import as_overrides

    scores = []
    for seed in seeds:
        params = load_params(paths.PARAMS, [*as_overrides(recipe), f"seed={seed}"])
        model = train_model(params.train, data, seed).model
        scores.append(evaluate_model(model, *test).accuracy)
        print(f"[search] held-out seed {seed}: test accuracy {scores[-1]:.4f}", flush=True)
    return scores


def run_searches(budget: Budget, folder: Path) -> dict:
    """Both studies and the held-out re-trainings: the figures of search.json (machine aside)."""
    from skillpack.deploy.architecture_search import search_architectures
    from skillpack.deploy.export import PARITY_MAX_ABS_DIFF
    from skillpack.stats import mean_interval
    from skillpack.train.tune import TuneRun

    started = time.perf_counter()
    data, test = search_data(budget)
    (folder / "recipes.yaml").write_text("")
    run = TuneRun(paths.PARAMS, overrides(budget), folder=folder / "tune", recipes_path=folder / "recipes.yaml")
    searched, searched_s = timed_tune(run, data)
    pruners = {load_params(paths.PARAMS, run.overrides).tune.pruner: pruner_figures(searched, searched_s)}
    if budget.other_pruner:
        pruners[budget.other_pruner] = other_pruner_study(budget, data, folder)
    scores = heldout_accuracies(searched.recipe, data, test, budget.heldout_seeds)
    interval = mean_interval(scores)
    nas = search_architectures(run, data)
    chosen = nas.chosen or {}
    figures = {
        "trials": sum(searched.counts.values()), "pruned": searched.counts.get("PRUNED", 0),
        "best_val": searched.best_value, "best_params": searched.recipe, "pruners": pruners,
        "heldout_test_mean": interval["mean"], "heldout_test_ci": [interval["ci_low"], interval["ci_high"]],
        "heldout_test": scores, "heldout_seeds": list(budget.heldout_seeds),
        "nas_trials": sum(nas.counts.values()),
        "pareto": [{k: row[k] for k in ("name", "val_acc", "latency_ms", "params")} for row in nas.front],
        "chosen": chosen.get("name"), "chosen_onnx_max_abs_diff": chosen.get("onnx_max_abs_diff"),
        "chosen_onnx_parity_ok": chosen.get("onnx_max_abs_diff", float("inf")) < PARITY_MAX_ABS_DIFF,
        "parity_max_abs_diff": PARITY_MAX_ABS_DIFF, "test_images": len(test[1]),
        "wall_s": round(time.perf_counter() - started, 1)}
    return figures


def budget_from(args) -> Budget:
    budget = QUICK if args.quick else Budget()
    given = {"trials": args.trials, "nas_trials": args.nas_trials, "epochs": args.epochs,
             "max_train": args.max_train, "timeout_s": args.timeout_s,
             "heldout_seeds": tuple(args.heldout_seeds) if args.heldout_seeds else None}
    budget = replace(budget, **{k: v for k, v in given.items() if v is not None})
    return replace(budget, other_pruner=None) if args.other_pruner == "none" else \
        replace(budget, other_pruner=args.other_pruner or budget.other_pruner)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a toy budget, written beside the cache, not to results/")
    for flag in ("--trials", "--nas-trials", "--epochs", "--max-train"):
        parser.add_argument(flag, type=int)
    parser.add_argument("--timeout-s", type=float)
    parser.add_argument("--other-pruner", choices=["median", "hyperband", "none"],
                        help="the tune study again under this pruner (default hyperband; --quick: none)")
    parser.add_argument("--heldout-seeds", type=int, nargs="+")
    parser.add_argument("--out", type=Path, help="the results file (default: results/search.json, "
                                                 "--quick: cache/search_quick.json)")
    args = parser.parse_args(argv)
    budget = budget_from(args)
    if len(budget.heldout_seeds) < 3:
        parser.error(f"--heldout-seeds: {len(budget.heldout_seeds)} given, an interval needs at least 3")
    with tempfile.TemporaryDirectory(prefix="search-") as tmp:
        if args.quick and "MLFLOW_TRACKING_URI" not in os.environ:   # runs and artifacts in the temporary folder
            os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{Path(tmp) / 'mlflow.db'}", SKILLPACK_ROOT=tmp)
        figures = {**run_searches(budget, Path(tmp)), "budget": asdict(budget), "quick": args.quick,
                   "machine": machine(), "generated_by": "benchmarks/search.py"}
    out = args.out or (CACHE / "search_quick.json" if args.quick else RESULTS / "search.json")
    from skillpack.io import write_json

    write_json(out, figures)
    print(json.dumps({k: figures[k] for k in ("trials", "pruned", "best_val", "heldout_test_mean", "heldout_test_ci",
                                              "chosen", "chosen_onnx_max_abs_diff", "wall_s")}), f"-> {out}")
    return figures


if __name__ == "__main__":
    main()
