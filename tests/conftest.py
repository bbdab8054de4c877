"""Shared fixtures: real Fashion-MNIST subsets and a throw-away git + DVC copy of the project."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import skillpack  # noqa: F401,E402  (OMP, DVC, MLflow and Prefect environment defaults, before torch)

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ["dvc.yaml", "params.yaml", "pyproject.toml", "recipes.yaml", "claims.yaml", "skillpack", "stages",
                 "flows", "ablations", "prefect.yaml"]
FMNIST = Path("/usr/share/datasets/fashion-mnist")

# The small real subset the end-to-end tests train on.
TINY_OVERRIDES = {
    "data.max_train": 2000, "data.max_test": 1000, "train.epochs": 2, "train.batch_size": 128,
    "train.schedule.warmup_epochs": 0, "clean.oof.folds": 2, "clean.oof.epochs": 1,
    "compress.seeds": [0, 1], "compress.finetune_epochs": 1, "compress.student": "sp_dwcnn_s",
    "compress.student_epochs": 1, "compress.quantize.calibration_images": 128,
    "export.latency_batches": [1, 8], "export.latency_seconds": 0.05, "export.aoti_cpu": False,
}


class StopTraining(Exception):
    """Raised from an on_epoch callback: a run interrupted after its first epoch."""


def stop_after_first_epoch(record, history, model):
    raise StopTraining


def require_fmnist() -> None:
    """Data tests fail (not skip) without the data; pure unit tests run regardless."""
    if not FMNIST.is_dir():
        pytest.fail(f"{FMNIST} missing: `apt-get install dataset-fashion-mnist` (make test does it)", pytrace=False)


@pytest.fixture(scope="session")
def fmnist():
    from skillpack.data import load_source

    require_fmnist()
    return load_source("fashion_mnist")


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SKILLPACK_ROOT", str(tmp_path))
    return uri


def set_params(repo: Path, overrides: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in overrides.items():
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def make_project_repo(dest: Path, overrides: dict | None = None) -> Path:
    """A fresh git repo holding a copy of the project, `dvc init`-ed, committed."""
    if (overrides or {}).get("data.source", "fashion_mnist") == "fashion_mnist":
        require_fmnist()
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "results"))
        else:
            shutil.copy2(src, dest / name)
    (dest / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/.prefect/\n__pycache__/\n")
    set_params(dest, {**TINY_OVERRIDES, **(overrides or {})})
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "config", "user.email", "test@skillpack"], dest)
    run(["git", "config", "user.name", "skillpack tests"], dest)
    run([sys.executable, "-m", "dvc", "init", "-q"], dest)
    shutil.copy2(ROOT / ".dvc" / "config", dest / ".dvc" / "config")  # the project's default remote ...
    run([sys.executable, "-m", "dvc", "remote", "modify", "--local", "local", "url", str(dest.parent / "dvc-remote")],
        dest)  # ... pointed, for tests only, at a temporary folder instead of ~/.cache
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "project"], dest)
    return dest


def project_env(repo: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo / 'mlflow.db'}"
    env["SKILLPACK_ROOT"] = str(repo)
    env["PYTHONPATH"] = str(repo)
    return env


@pytest.fixture(scope="session")
def prefect_server():
    """Prefect's own server (the test harness starts a real one on a free local port)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """The project in a temp git repo, pipeline reproduced once on the tiny real subset."""
    repo = make_project_repo(tmp_path_factory.mktemp("project"))
    run([sys.executable, "-m", "dvc", "repro"], repo, env=project_env(repo))
    return repo


def small_split(source, n: int, seed: int = 0):
    """First-n-per-class-balanced numpy arrays from a loaded source's train split."""
    rng = np.random.default_rng(seed)
    split = source.splits["train"]
    index = np.sort(rng.choice(len(split.labels), size=n, replace=False))
    return split.images[index], split.labels[index]
