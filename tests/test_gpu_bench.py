"""The GPU pieces that a CPU can check: concurrent trainings in worker processes
(skillpack.train.concurrent) and benchmarks/gpu.py's smoke mode, so the script is known to run
before it meets a GPU."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, require_fmnist

GiB = 2 ** 30


def test_plan_derives_the_number_of_runs_from_free_gpu_memory_and_caps_each():
    from skillpack.train import (
        concurrent,  # an H200 with 130 of 141 GiB free and 16 cores: memory allows 58 runs of 2 GiB, the cores 16
    )
    plan = concurrent.plan("auto", threads=1, device="cuda", run_memory_gb=2.0, free_total=(130 * GiB, 141 * GiB),
                           cores=16)
    assert plan.workers == 16 and plan.memory_fraction == pytest.approx(0.9 * 130 / 16 / 141, abs=1e-4)
    assert concurrent.plan("auto", 1, "cuda", 40.0, free_total=(130 * GiB, 141 * GiB), cores=16).workers == 2
    given = concurrent.plan(4, 2, "cuda", free_total=(100 * GiB, 141 * GiB), cores=16)
    assert given.workers == 4 and given.memory_fraction * 4 * 141 == pytest.approx(90, abs=0.1)
    cpu = concurrent.plan("auto", threads=1, device="cpu", cores=2)
    assert (cpu.workers, cpu.memory_fraction) == (2, None)
    assert "2 processes x 1 torch threads on cpu" in cpu.describe()


def worker_info(meet_dir: str | None = None, workers: int = 1) -> dict:
    """What a worker process runs with (pid, torch threads, OMP_NUM_THREADS, memory cap). With
    `meet_dir`, each job first waits (up to 120 s) until `workers` different processes have
    signed in there, so a test sees every worker busy at once however slowly one of them
    started. Module-level: spawned workers import it."""
    import torch

    if meet_dir is not None:
        (Path(meet_dir) / str(os.getpid())).touch()
        deadline = time.time() + 120
        while len(list(Path(meet_dir).iterdir())) < workers and time.time() < deadline:
            time.sleep(0.05)
    cap = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cap = torch.cuda.get_per_process_memory_fraction() if hasattr(torch.cuda, "get_per_process_memory_fraction") \
            else None
    return {"pid": os.getpid(), "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "memory_fraction": cap}


def test_two_runs_at_once_in_two_worker_processes_with_one_thread_each(tmp_path):
    from skillpack.train import concurrent
    plan = concurrent.plan(2, threads=1, device="cpu")
    done = concurrent.run_all(worker_info, [(str(tmp_path), 2), (str(tmp_path), 2)], plan)
    infos = [info for info, _ in done]
    assert len({info["pid"] for info in infos}) == 2 and os.getpid() not in {info["pid"] for info in infos}
    assert all(info["torch_threads"] == 1 and info["omp_num_threads"] == "1" for info in infos)
    assert [pid for _, pid in done] == [info["pid"] for info in infos]


def test_gpu_benchmark_smoke_runs_every_part_on_a_cpu(tmp_path):
    """benchmarks/gpu.py --smoke: tiny data, one seed, one epoch, the resident path forced on
    the CPU, the ablation's two runs in two processes of one thread; its JSON has every key
    the GPU run must fill, and benchmarks/results/gpu.json is left alone."""
    require_fmnist()
    results = ROOT / "benchmarks" / "results" / "gpu.json"
    before = results.stat().st_mtime if results.exists() else None
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--smoke", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"\n[gpu smoke] {seconds:.1f}s\n{proc.stdout[-1500:]}")
    f = json.loads(out.read_text())
    for key in ("gpu_name", "recipes", "engine_img_s", "ceiling_img_s", "engine_vs_ceiling", "ablation_wall_s",
                "concurrent_runs"):
        assert key in f, key
    assert f["gpu_name"] is None and f["device"] == "cpu" and f["smoke"] and f["skipped"] == {}
    assert set(f["recipes"]) == {"gpu", "gpu_long", "gpu_best"}
    for recipe in f["recipes"].values():
        assert {"acc_median", "train_s_median", "seconds_to_0.92", "seconds_to_0.935", "seconds_to_0.95"} <= set(recipe)
        assert 0.0 <= recipe["acc_median"] <= 1.0 and recipe["train_s_median"] > 0
        assert all(run["resident"] for run in recipe["runs"])   # the GPU's path, on the CPU
        assert recipe["ceiling_img_s"] > 0 and recipe["engine_vs_ceiling"] > 0
    assert f["ceiling_img_s"] == f["ceilings"]["gpu"]["img_s"] and f["engine_img_s"] > 0
    assert f["concurrent_runs"] == 2 and f["ablation"]["processes"] == 2 and f["ablation_wall_s"] > 0
    assert f["parity"]["seeds"] == [0] and "compile" not in f   # compile: CUDA only
    assert (results.stat().st_mtime if results.exists() else None) == before


def test_every_recipe_validates_as_params_and_the_gpu_ones_scale_lr_linearly():
    import yaml

    from skillpack.config import load_params
    from skillpack.train.recipes import load_recipe

    recipes = yaml.safe_load((ROOT / "recipes.yaml").read_text())
    assert {"gpu", "gpu_long", "gpu_best"} <= set(recipes)
    base = load_params(ROOT / "params.yaml").train
    for name in recipes:
        params = load_recipe(name, params_path=ROOT / "params.yaml", recipes_path=ROOT / "recipes.yaml")
        assert params.train.model_dump()  # validated (unknown keys and bad values raise ParamsError)
    for name in ("gpu", "gpu_long", "gpu_best"):
        cfg = load_recipe(name, params_path=ROOT / "params.yaml", recipes_path=ROOT / "recipes.yaml").train
        # Goyal et al.'s rule: lr proportional to the batch, from params.yaml's (0.1 at 128), after a warm-up
        assert cfg.optimizer.lr / cfg.batch_size == pytest.approx(base.optimizer.lr / base.batch_size)
        assert cfg.batch_size >= 1024 and cfg.schedule.warmup_epochs >= 2 and cfg.amp == "bf16"
        assert cfg.loss.label_smoothing > 0 and cfg.resident == "auto"
    assert load_recipe("gpu_long", params_path=ROOT / "params.yaml",
                       recipes_path=ROOT / "recipes.yaml").train.ema.enabled
