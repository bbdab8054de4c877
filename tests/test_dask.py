"""The ablation flow on a two-worker local Dask cluster (prefect-dask), chosen in params.yaml."""
from __future__ import annotations

import json
import re
import sys
import time

import pytest
import yaml
from conftest import ROOT, copy_project, project_env, run

# The quick profile of a tiny spec: one arm against the baseline and a two-step chain
# (whose steps share their configurations, and so their stored results, with the arms):
# 4 arms x 2 seeds (8 runs, 3 configurations x 2 seeds to train) of one epoch on 400 images.
TINY_SPEC = {
    "name": "dask_tiny",
    "seeds": [0, 1, 2],
    "base": {"train.model": "sp_cnn_s", "train.epochs": 2, "train.batch_size": 64, "train.threads": 2,
             "train.schedule.warmup_epochs": 0, "train.augment.hflip": False, "train.augment.crop_padding": 0,
             "train.loss.label_smoothing": 0.0},
    "regimes": {"standard": {"max_train": 2000}},
    "arms": [{"name": "baseline"},
             {"name": "label_smoothing", "claims": ["loss.label_smoothing"],
              "overrides": {"train.loss.label_smoothing": 0.1}}],
    "cumulative": [{"name": "chain_baseline"},
                   {"name": "chain_augmentation", "claims": ["ablation.cumulative"],
                    "overrides": {"train.augment.hflip": True, "train.augment.crop_padding": 2}}],
    "quick": {"seeds": [0, 1], "base": {"train.epochs": 1},
              "regimes": {"standard": {"max_train": 400}}},
}
ARMS = ("baseline", "label_smoothing", "chain_baseline", "chain_augmentation")


def test_ablation_runs_on_a_two_worker_local_dask_cluster(prepared_project, prefect_server, tmp_path):
    from skillpack.config import load_params
    from skillpack.data import PreparedStore
    from skillpack.evidence import ablation as ab
    from skillpack.evidence.runs import regime_split
    from skillpack.train.runs import RunData, train_and_evaluate

    t0 = time.perf_counter()
    repo = copy_project(prepared_project, tmp_path / "dask",
                        {"ablation": {"task_runner": {"kind": "dask", "workers": 2}}})
    env = {**project_env(repo), "PREFECT_API_URL": prefect_server}   # the test run's Prefect server
    (repo / "ablations" / "dask_tiny.yaml").write_text(yaml.safe_dump(TINY_SPEC, sort_keys=False))
    t1 = time.perf_counter()
    proc = run([sys.executable, "-m", "flows.ablation", "ablations/dask_tiny.yaml", "--quick"], repo, env=env)
    t2 = time.perf_counter()
    log = proc.stdout + proc.stderr
    assert "8 runs on the dask task runner (2 workers)" in log, log[-3000:]

    # complete: every (arm, seed) ran, was stored and reported
    report = json.loads((repo / "reports" / "ablation_quick.json").read_text())
    assert report["spec"] == "dask_tiny"
    runs = {(r["arm"], r["seed"]): r for r in report["runs"]}
    assert set(runs) == {(a, s) for a in ARMS for s in (0, 1)}
    assert [a["name"] for a in report["arms"]] == ["label_smoothing"] and report["arms"][0]["n_seeds"] == 2
    assert [a["name"] for a in report["cumulative"]] == ["chain_augmentation"]
    stored = list((repo / "ablations" / "results" / "dask_tiny").glob("*.json"))
    assert len(stored) == 6   # 3 configurations x 2 seeds

    # in two worker processes, each training with one torch thread
    done = re.findall(r"seed (\d): test accuracy [0-9.]+ in \d+s \(pid (\d+), (\d+) torch threads\)", log)
    assert len(done) >= 6, log[-3000:]   # 6 configurations; a chain step may also recompute its arm's
    assert {threads for _, _, threads in done} == {"1"}
    assert len({pid for _, pid, _ in done}) == 2

    # the same figures as the run computed here, in one process
    spec = ab.load_spec(repo / "ablations" / "dask_tiny.yaml", quick=True, params_path=repo / "params.yaml")
    store = PreparedStore(repo / "data" / "prepared")
    data = {split: store.arrays(split) for split in ("train", "val", "test")}
    assert load_params(repo / "params.yaml").ablation.task_runner.kind == "dask"
    for name, seed in (("label_smoothing", 1), ("chain_augmentation", 0)):
        arm = spec.arm(name)
        cfg = ab.run_params(spec, arm, seed).train.model_copy(update={"threads": 1})
        train = regime_split(*data["train"], ab.regime_options(spec, arm.regime), seed)  # drawn per seed
        val = tuple(a[:1000] for a in data["val"])
        here = train_and_evaluate(cfg, seed, RunData(train, val, len(store.classes)), data["test"])
        for key in ("test_accuracy", "final_val_acc", "train_loss", "val_loss", "intra_class_distance"):
            assert runs[(name, seed)][key] == pytest.approx(here[key], abs=1e-6), (name, seed, key)
    t3 = time.perf_counter()
    print(f"\n[dask] project copy {t1 - t0:.1f}s, flow on 2 Dask workers {t2 - t1:.1f}s, "
          f"reference run {t3 - t2:.1f}s")


def test_task_runner_params_build_the_runner():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.ablation import build_task_runner, runner_params, torch_threads
    from skillpack.config import ParamsError

    default = runner_params(params_path=ROOT / "params.yaml")
    assert default.kind == "process" and default.workers == "auto" and torch_threads(default) == 1
    threads = runner_params({"kind": "thread", "workers": 1}, ROOT / "params.yaml")
    assert isinstance(build_task_runner(threads), ThreadPoolTaskRunner) and torch_threads(threads) is None
    local = runner_params({"kind": "dask", "workers": 2}, ROOT / "params.yaml")
    runner = build_task_runner(local, "http://127.0.0.1:4200/api")
    assert isinstance(runner, DaskTaskRunner) and torch_threads(local) == 1
    assert runner.cluster_kwargs["n_workers"] == 2 and runner.cluster_kwargs["threads_per_worker"] == 1
    assert runner.cluster_kwargs["processes"] is True
    assert runner.cluster_kwargs["env"] == {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}
    remote = build_task_runner(runner_params({"kind": "dask", "address": "tcp://127.0.0.1:8786"},
                                             ROOT / "params.yaml"))
    assert remote.address == "tcp://127.0.0.1:8786"
    with pytest.raises(ParamsError, match="kind"):
        runner_params({"kind": "spark"}, ROOT / "params.yaml")
    # process: N runs at once on this machine (on CUDA each process capped at its share of GPU memory)
    from prefect.task_runners import ProcessPoolTaskRunner

    from skillpack.train import concurrent
    pool = runner_params({"kind": "process", "workers": 2}, ROOT / "params.yaml")
    runner = build_task_runner(pool, "http://127.0.0.1:4200/api", device="cpu")
    assert isinstance(runner, ProcessPoolTaskRunner) and torch_threads(pool) == 1
    assert runner._max_workers == 2 and runner._initializer is concurrent.init_worker
    # 1 torch thread, no GPU memory cap on a CPU, and the flow's API for the workers
    assert runner._initargs == (1, None, {"PREFECT_API_URL": "http://127.0.0.1:4200/api"})
    auto = runner_params({"kind": "process", "workers": "auto"}, ROOT / "params.yaml")
    assert build_task_runner(auto, device="cpu")._max_workers == concurrent.plan("auto", 1, "cpu").workers
