"""The GPU benchmark: one command on a CUDA machine, ~8 minutes, no network.

    bash benchmarks/gpu_check.sh prepare-train   # here: pydantic wheels + Fashion-MNIST .gz into .gpu/ (git-ignored)
    OUT=/tmp/out bash benchmarks/gpu_check.sh train   # on the CUDA machine, with .gpu/ copied there: runs this
    python -m benchmarks.gpu --smoke --out /tmp/gpu.json   # anywhere, a CPU too: tiny data, 1 seed, 1 epoch

What it measures, in this order (the JSON is re-written after every part; a part that would
overrun --budget-s is skipped and named under "skipped"):

1. ceiling: the bare training step (forward, backward, optimizer step; no data path, no
   augmentation) of each recipe's model at its batch and amp, on one fixed batch resident on
   the device: img/s, the engine's upper bound. Then one warm-up epoch of the `gpu` recipe
   under CUDA's sync debug mode: how many times the host waited for the GPU inside the epoch.
2. recipes gpu, gpu_long (recipes.yaml) x seeds through the engine (skillpack.train.runs.train_model,
   runtime.resident auto = resident on CUDA): final test accuracy, training seconds (the epochs'
   own wall time, validation included; the per-epoch test evaluation that finds
   seconds_to_0.92/0.935/0.95 is not counted), the engine's img/s, medians over the seeds.
3. ablation: the default ablation's arms x seeds (ablations/default.yaml, fp32 like the CPU
   run) N at once on this GPU (skillpack.train.concurrent: processes with a per-process memory cap,
   N from the free memory): wall time, N, and every comparison's effect next to the CPU run's
   (reports/ablation.json).
4. recipe gpu_best x seeds.
5. parity: the `gpu` recipe on the host path (runtime.resident=false) with the same seeds: the
   resident path draws from CUDA's generator, so the two agree in distribution, not bit for
   bit; the accuracy medians are compared.
6. compile: the `gpu` recipe, first seed, runtime.compile=reduce-overhead (CUDA graphs) and
   max-autotune: compile seconds (reported apart), training seconds, accuracy.
7. sweep (only when named in --parts): the `gpu` recipe's learning rate, and SGD vs LARS vs
   LAMB at batch 4,096, one seed each (the large-batch optimizers tested fairly: same epochs,
   each with its own small lr grid).

Top-level keys: gpu_name, recipes (per recipe: acc_median, train_s_median,
seconds_to_0.92/0.935/0.95), engine_img_s (the gpu recipe), ceiling_img_s (its model at its
batch), engine_vs_ceiling, ablation_wall_s, concurrent_runs. --smoke never writes
benchmarks/results/gpu.json unless --out says so.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks.gpu_summary import THRESHOLDS, compare_with_cpu, summarise

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = ROOT / "benchmarks" / "results" / "gpu.json"
CARRIED_DATA = ROOT / ".gpu" / "fashion-mnist"
RECIPES = ("gpu", "gpu_long", "gpu_best")
PARTS = ("ceiling", "recipes", "ablation", "best", "parity", "compile")
SWEEP = {  # name -> overrides of the gpu recipe
    "lr0.4": ["train.optimizer.lr=0.4"], "lr0.8": [], "lr1.6": ["train.optimizer.lr=1.6"],
    "b4096_sgd_lr3.2": ["train.batch_size=4096", "train.optimizer.lr=3.2", "train.schedule.warmup_epochs=3"],
    "b4096_sgd_lr1.6": ["train.batch_size=4096", "train.optimizer.lr=1.6", "train.schedule.warmup_epochs=3"],
    "b4096_lars_lr2": ["train.batch_size=4096", "train.optimizer.name=lars", "train.optimizer.lr=2.0",
                       "train.schedule.warmup_epochs=3"],
    "b4096_lars_lr8": ["train.batch_size=4096", "train.optimizer.name=lars", "train.optimizer.lr=8.0",
                       "train.schedule.warmup_epochs=3"],
    "b4096_lamb_lr0.005": ["train.batch_size=4096", "train.optimizer.name=lamb", "train.optimizer.lr=0.005",
                           "train.optimizer.weight_decay=0.02", "train.schedule.warmup_epochs=3"],
    "b4096_lamb_lr0.02": ["train.batch_size=4096", "train.optimizer.name=lamb", "train.optimizer.lr=0.02",
                          "train.optimizer.weight_decay=0.02", "train.schedule.warmup_epochs=3"],
}
# what --smoke changes: tiny data, one short epoch, small batches, the resident path forced on a CPU too
SMOKE_DATA = ["data.max_train=700", "data.max_test=300"]
SMOKE_TRAIN = ["train.epochs=1", "train.batch_size=64", "runtime.resident=true"]


class Bench:
    def __init__(self, args):
        self.args, self.t0 = args, time.perf_counter()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.data_root = str(args.data_root or (CARRIED_DATA if CARRIED_DATA.is_dir() else ""))
        self.data_extra = [f"data.root={self.data_root}"] if self.data_root else []
        if args.smoke:
            self.data_extra += SMOKE_DATA
        self.train_extra = SMOKE_TRAIN if args.smoke else []
        self._splits: dict = {}
        from benchmarks.common import machine

        self.figures = {
            "gpu_name": torch.cuda.get_device_name(0) if self.device.type == "cuda" else None,
            "device": self.device.type, "smoke": args.smoke, "seeds": args.seeds, "budget_s": args.budget_s,
            "recipes": {}, "engine_img_s": None, "ceiling_img_s": None, "engine_vs_ceiling": None,
            "ablation_wall_s": None, "concurrent_runs": None, "ceilings": {}, "skipped": {},
            "machine": machine(), "generated_by": "benchmarks/gpu.py",
        }

    # ------------------------------------------------------------------ bookkeeping

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def say(self, message: str) -> None:
        print(f"[gpu {self.elapsed():5.0f}s] {message}", flush=True)

    def fits(self, name: str, estimate_s: float) -> bool:
        if self.elapsed() + estimate_s <= self.args.budget_s:
            return True
        self.figures["skipped"][name] = (f"budget: {self.elapsed():.0f}s spent + ~{estimate_s:.0f}s estimated > "
                                         f"{self.args.budget_s:.0f}s")
        self.say(f"skipped {name}: {self.figures['skipped'][name]}")
        return False

    def save(self) -> None:
        from skillpack.io import write_json

        self.figures["wall_s"] = round(self.elapsed(), 1)
        write_json(self.args.out, self.figures)

    def params(self, recipe: str, seed: int, extra=()):
        from skillpack.train.recipes import load_recipe

        return load_recipe(recipe, [f"seed={seed}", *self.data_extra, *self.train_extra, *extra],
                           params_path=ROOT / "params.yaml", recipes_path=ROOT / "recipes.yaml")

    def splits(self, params):
        """train / val / test of the run's data params and seed (prepare's own split), cached."""
        from skillpack.data.store import prepare_splits

        key = (json.dumps(params.data.model_dump(), sort_keys=True), params.seed)
        if key not in self._splits:
            source, splits = prepare_splits(params.data, params.seed)
            self._splits[key] = (len(source.classes), splits)
        return self._splits[key]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    # ------------------------------------------------------------------ 1. ceiling

    def ceiling(self, recipe: str) -> float:
        """img/s of the bare training step of the recipe's model, batch, amp and optimizer on
        one fixed real batch resident on the device (median of rounds)."""
        from skillpack.train.device import resolve_amp
        from skillpack.train.models import build_classifier, channel_stats
        from skillpack.train.optim import build_optimizer

        params = self.params(recipe, self.args.seeds[0])
        cfg = params.train
        num_classes, splits = self.splits(params)
        x, y = splits["train"].images, splits["train"].labels
        batch = min(cfg.batch_size, len(y))
        torch.manual_seed(0)
        model = build_classifier(cfg.model, num_classes, x.shape[1:], cfg.head, *channel_stats(x[:10000]))
        model = model.to(self.device, memory_format=torch.channels_last).train()
        images = torch.from_numpy(x[:batch].transpose(0, 3, 1, 2).copy()).to(self.device)
        images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.as_tensor(y[:batch], dtype=torch.long, device=self.device)
        optimizer = build_optimizer(model, cfg.optimizer)
        amp = resolve_amp(cfg.amp, self.device)

        def step():
            with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = torch.nn.functional.cross_entropy(model(images).float(), labels,
                                                         label_smoothing=cfg.loss.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        rounds, steps = (2, 2) if self.args.smoke else (5, 30)
        for _ in range(2 if self.args.smoke else 10):
            step()
        self.sync()
        rates = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            self.sync()
            rates.append(steps * batch / (time.perf_counter() - t0))
        rate = statistics.median(rates)
        self.figures["ceilings"][recipe] = {"model": cfg.model, "batch": batch, "amp": str(amp).replace("torch.", ""),
                                            "img_s": round(rate, 1)}
        self.say(f"ceiling {recipe}: {cfg.model} batch {batch} {amp}: {rate:,.0f} img/s")
        return rate

    def sync_check(self) -> None:
        """One epoch of the gpu recipe with CUDA's sync debug mode on inside the epochs: each
        time the host waits for the GPU there, torch warns; they are counted. Also the first
        (warm-up) engine run of the process: cuDNN's autotuning and CUDA's start are paid here."""
        from skillpack.train.engine import Trainer

        counts, original = [], Trainer._train_epoch

        def counted(trainer, *args, **kwargs):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    return original(trainer, *args, **kwargs)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
                    counts.append(sum("synchroniz" in str(w.message) for w in caught))

        Trainer._train_epoch = counted
        try:
            self.recipe_run("gpu", self.args.seeds[0], ["train.epochs=1"], evaluate_test=False)
        finally:
            Trainer._train_epoch = original
        self.figures["syncs_inside_epoch"] = counts[0] if counts else None
        self.say(f"host synchronisations inside a training epoch: {self.figures['syncs_inside_epoch']}")

    # ------------------------------------------------------------------ 2. recipes

    def recipe_run(self, recipe: str, seed: int, extra=(), evaluate_test: bool = True) -> dict:
        from skillpack.train.engine import evaluate_on_device
        from skillpack.train.runs import RunData, train_model

        params = self.params(recipe, seed, extra)
        num_classes, splits = self.splits(params)
        train, val, test = splits["train"], splits["val"], splits["test"]
        x_test = torch.from_numpy(test.images.transpose(0, 3, 1, 2).copy()).to(self.device)
        y_test = torch.as_tensor(test.labels, dtype=torch.long, device=self.device)
        trace, elapsed = [], [0.0]

        def on_epoch(record, history, evaluated):
            elapsed[0] += record.seconds
            acc = evaluate_on_device(evaluated, x_test, y_test, 8192, self.device)[1].item() if evaluate_test \
                else float("nan")
            trace.append({"epoch": record.epoch, "train_s": round(elapsed[0], 3), "test_acc": acc})

        trained = train_model(params.train, RunData((train.images, train.labels), (val.images, val.labels),
                                                    num_classes), seed, on_epoch=on_epoch)
        batch = params.train.batch_size
        n = len(train.labels)
        per_epoch = (n // batch) * batch if n > batch else n
        run = {"recipe": recipe, "seed": seed, "extra": list(extra), "final_acc": trace[-1]["test_acc"],
               "train_s": round(elapsed[0], 3), "compile_s": round(trained.compile_seconds, 2),
               "resident": trained.resident, "epochs": len(trace),
               "img_s": round(per_epoch * len(trace) / elapsed[0], 1) if elapsed[0] else None,
               "seconds_to": {f"{t:.3f}": next((p["train_s"] for p in trace if p["test_acc"] >= t), None)
                              for t in THRESHOLDS},
               "trace": trace}
        self.say(f"{recipe} seed {seed} {' '.join(extra)}: test {run['final_acc']:.4f} after {run['train_s']:.1f}s "
              f"of training ({run['img_s']} img/s, resident {run['resident']}); to "
              + ", ".join(f"{t}: {v}" for t, v in run["seconds_to"].items()))
        return run

    def recipe(self, recipe: str) -> None:
        runs, last_wall = [], None
        for seed in self.args.seeds:
            estimate = 1.1 * last_wall if last_wall else self.estimate(recipe)
            if not self.fits(f"{recipe} seed {seed}", estimate):
                break
            t0 = time.perf_counter()
            runs.append(self.recipe_run(recipe, seed))
            last_wall = time.perf_counter() - t0
            self.figures["recipes"][recipe] = summarise(runs)
            self.save()

    def estimate(self, recipe: str) -> float:
        """Seconds one run of the recipe may take: from the ceiling at half its rate, + 10 s."""
        params = self.params(recipe, self.args.seeds[0])
        ceiling = self.figures["ceilings"].get(recipe, {}).get("img_s")
        if not ceiling or self.args.smoke:
            return 10.0
        n = 54_000 if params.data.max_train is None else params.data.max_train
        return params.train.epochs * n / (0.5 * ceiling) + 10

    # ------------------------------------------------------------------ 3. ablation

    def ablation(self) -> None:
        from skillpack.config import load_params
        from skillpack.data.store import prepare_splits, write_store
        from skillpack.evidence import ablation as ab
        from skillpack.evidence import runs as ablation_runs
        from skillpack.evidence.claims import load_claims
        from skillpack.evidence.report import comparisons
        from skillpack.train import concurrent

        spec_path = str(ROOT / "ablations" / "default.yaml")
        spec = ab.load_spec(spec_path, quick=self.args.smoke, params_path=ROOT / "params.yaml")
        arms = self.args.ablation_arms or (["baseline", "label_smoothing"] if self.args.smoke else None)
        if arms:  # smoke: two runs, a baseline and one arm, one seed
            spec.arms = [a for a in spec.arms if a.name in arms]
            spec.cumulative = [a for a in spec.cumulative if a.name in arms]
        if self.args.smoke:
            spec.seeds = spec.seeds[:1]
        extra = {}  # the spec's own train.amp (bf16), as the CPU run trained
        if self.args.smoke:
            extra.update({"runtime.resident": True, "train.epochs": 1})
        params = load_params(ROOT / "params.yaml", self.data_extra)
        work = Path(tempfile.mkdtemp(prefix="skillpack-gpu-ablation-"))
        source, splits = prepare_splits(params.data, params.seed)  # what the prepare stage stores
        write_store(work / "prepared", source, splits)
        store, data = ablation_runs.prepared_data(work / "prepared")
        t0 = time.perf_counter()
        teachers = {}
        wanted = {a.overrides.get("train.loss.distill.teacher", "").split(":", 1)[-1] for a in spec.arms + spec.cumulative}
        for name in spec.teachers:
            if name in wanted:
                teachers[name] = str(ablation_runs.train_teacher(spec, name, data, store.classes, work / f"{name}.pt",
                                                                 extra))
        threads = 1
        plan = concurrent.plan(self.args.workers, threads, self.device.type, self.args.run_memory_gb,
                               max_workers=2 if self.args.smoke else concurrent.MAX_WORKERS)
        self.say(f"ablation {spec.name}: {len(spec.arms + spec.cumulative) * len(spec.seeds)} runs, "
              f"{plan.describe()}")
        jobs = [(spec_path, self.args.smoke, arm.name, seed, str(work / "prepared"), teachers, threads, extra)
                for arm in spec.arms + spec.cumulative for seed in spec.seeds]
        done = concurrent.run_all(ablation_runs.pool_run, jobs, plan)
        wall = time.perf_counter() - t0
        runs = [result for result, _ in done]
        self.figures.update({"ablation_wall_s": round(wall, 1), "concurrent_runs": plan.workers,
                             "ablation": {"spec": spec.name, "runs": len(runs), "plan": plan.describe(),
                                          "processes": len({pid for _, pid in done}),
                                          "run_seconds_median": round(statistics.median(
                                              r["wall_seconds"] for r in runs), 2)}})
        if not arms:
            self.figures["ablation"].update(compare_with_cpu(spec, runs, comparisons, load_claims()))
        self.say(f"ablation: {len(runs)} runs in {wall:.0f}s on {plan.workers} processes")

    # ------------------------------------------------------------------ 5-7. parity, compile, sweep

    def parity(self) -> None:
        resident = self.figures["recipes"].get("gpu")
        if not resident:
            self.figures["skipped"]["parity"] = "the gpu recipe was not measured"
            return
        runs = []
        for run in resident["runs"]:
            if not self.fits(f"parity seed {run['seed']}", 4 * run["train_s"] + 10):
                break
            runs.append(self.recipe_run("gpu", run["seed"], ["runtime.resident=false"]))
        if runs:
            host = summarise(runs)
            seeds = [r["seed"] for r in runs]
            same = [r["final_acc"] for r in resident["runs"] if r["seed"] in seeds]
            self.figures["parity"] = {
                "seeds": seeds, "host_acc_median": host["acc_median"], "resident_acc_median": statistics.median(same),
                "acc_diff_points": round(100 * (statistics.median(same) - host["acc_median"]), 2),
                "host_train_s_median": host["train_s_median"], "host_img_s_median": host["engine_img_s"],
                "resident_speedup": round(host["train_s_median"] / statistics.median(
                    r["train_s"] for r in resident["runs"] if r["seed"] in seeds), 2)}

    def compile(self) -> None:
        self.figures["compile"] = {}
        for mode in ("reduce-overhead", "max-autotune"):
            if not self.fits(f"compile {mode}", 150):
                break
            run = self.recipe_run("gpu", self.args.seeds[0], [f"runtime.compile={mode}"])
            self.figures["compile"][mode] = {k: run[k] for k in ("final_acc", "train_s", "compile_s", "img_s",
                                                                 "seconds_to")}
            self.save()

    def sweep(self) -> None:
        self.figures["sweep"] = {}
        for name, extra in SWEEP.items():
            if not self.fits(f"sweep {name}", 20):
                break
            run = self.recipe_run("gpu", self.args.seeds[0], extra)
            self.figures["sweep"][name] = {k: run[k] for k in ("final_acc", "train_s", "img_s", "seconds_to")}
            self.save()

    # ------------------------------------------------------------------ all

    def run(self) -> dict:
        parts = self.args.parts
        if "ceiling" in parts:
            for recipe in RECIPES:
                self.ceiling(recipe)
            if self.device.type == "cuda":
                self.sync_check()
            self.save()
        if "recipes" in parts:
            for recipe in ("gpu", "gpu_long"):
                self.recipe(recipe)
        if "ablation" in parts and self.fits("ablation", 30 if self.args.smoke else 180):
            self.ablation()
            self.save()
        if "best" in parts:
            self.recipe("gpu_best")
        if "parity" in parts:
            self.parity()
            self.save()
        if "compile" in parts and self.device.type == "cuda":
            self.compile()
        if "sweep" in parts:
            self.sweep()
        self.headline()
        self.save()
        return self.figures

    def headline(self) -> None:
        gpu = self.figures["recipes"].get("gpu")
        ceiling = self.figures["ceilings"].get("gpu", {}).get("img_s")
        for name, summary in self.figures["recipes"].items():
            c = self.figures["ceilings"].get(name, {}).get("img_s")
            summary["ceiling_img_s"] = c
            summary["engine_vs_ceiling"] = round(summary["engine_img_s"] / c, 3) if c and summary["engine_img_s"] else None
        if gpu:
            self.figures["engine_img_s"] = gpu["engine_img_s"]
        self.figures["ceiling_img_s"] = ceiling
        if gpu and ceiling:
            self.figures["engine_vs_ceiling"] = round(gpu["engine_img_s"] / ceiling, 3)
        for name, s in self.figures["recipes"].items():
            self.say(f"{name}: acc median {s['acc_median']:.4f}, train {s['train_s_median']:.1f}s, "
                  + ", ".join(f"to {t}: {s[f'seconds_to_{t}']}" for t in ("0.92", "0.935", "0.95"))
                  + f", {s['engine_img_s']} img/s = {s['engine_vs_ceiling']} of the step ceiling")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help=f"results file (default {RESULTS_FILE.relative_to(ROOT)} on a GPU; "
                                                 "--smoke: a temporary file)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=[*PARTS, "sweep"])
    parser.add_argument("--budget-s", type=float, default=450.0, help="skip what would end after this many seconds")
    parser.add_argument("--data-root", help="Fashion-MNIST .gz folder (default .gpu/fashion-mnist if carried, "
                                            "else params.yaml's data.root)")
    parser.add_argument("--workers", default="auto", type=lambda v: v if v == "auto" else int(v),
                        help="ablation runs at once (auto: from free GPU memory)")
    parser.add_argument("--run-memory-gb", type=float, default=2.0, help="auto workers: GPU memory per run")
    parser.add_argument("--ablation-arms", nargs="+", help="only these arms of the default ablation (and no "
                                                          "comparison with the CPU run)")
    parser.add_argument("--smoke", action="store_true", help="tiny data, 1 seed, 1 epoch: the script works (CPU too)")
    parser.add_argument("--allow-cpu", action="store_true", help="a full run without a GPU (hours)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds = args.seeds[:1]
        args.out = args.out or Path(tempfile.mkdtemp(prefix="skillpack-gpu-smoke-")) / "gpu.json"
    elif not torch.cuda.is_available() and not args.allow_cpu:
        parser.error("no CUDA device: run with --smoke (or --allow-cpu for hours of CPU training)")
    args.out = args.out or RESULTS_FILE
    torch.set_num_threads(min(torch.get_num_threads(), 2) if args.smoke else torch.get_num_threads())
    bench = Bench(args)
    bench.say(f"{bench.figures['gpu_name'] or 'no GPU: ' + bench.device.type}; parts {' '.join(args.parts)}; "
              f"seeds {args.seeds}; budget {args.budget_s:.0f}s; data {bench.data_root or 'params.yaml data.root'}")
    figures = bench.run()
    bench.say(f"wrote {args.out} after {bench.elapsed():.0f}s")
    return figures


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
