"""The stages that train nothing (check_params, prepare, validate, alerts) do their work without
importing torch, torchvision or timm: each is run as `python -m stages.<name>` would run it,
in a fresh process on the default params, with its outputs in a temporary folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_fmnist

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "timm")

# Runs a stage's module as `python -m` does and reports, as the last line of stdout, its exit
# code and the heavy packages it imported.
RUN_STAGE = """
import json, runpy, sys
stage, *overrides = sys.argv[1:]
sys.argv = [stage, *overrides]
try:
    runpy.run_module(f"stages.{stage}", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as stop:
    code = stop.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & {HEAVY})
print(json.dumps({"exit": code, "heavy": heavy}))
""".replace("{HEAVY}", "{" + ", ".join(repr(h) for h in HEAVY) + "}")


def run_stage(stage: str, workdir: Path, *overrides: str, cache: Path) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SKILLPACK_ROOT": str(workdir), "XDG_CACHE_HOME": str(cache),
           "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    proc = subprocess.run([sys.executable, "-c", RUN_STAGE, stage, *overrides], cwd=workdir, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout + proc.stderr


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A folder with the project's params.yaml: the stages read and write paths relative to it."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy2(ROOT / "params.yaml", work / "params.yaml")
    return work


def test_stages_that_train_nothing_import_no_torch_or_timm(workdir, tmp_path):
    require_fmnist()
    outputs = {"check_params": "reports/params_check.txt", "prepare": "data/prepared/manifest.csv",
               "validate": "reports/validation.json", "alerts": "docker/prometheus/alerts.yml"}
    for stage, output in outputs.items():  # in the pipeline's order: validate reads prepare's store
        result, log = run_stage(stage, workdir, cache=tmp_path / "cache")
        assert result["exit"] == 0, log[-3000:]
        assert result["heavy"] == [], f"{stage} imported {result['heavy']}"
        assert (workdir / output).is_file(), f"{stage} wrote no {output}"


def test_a_timm_model_name_is_checked_without_importing_timm(workdir, tmp_path):
    """With no cached name list yet (a fresh cache folder), check_params lists timm's models in
    a child process: the stage's own process still imports neither torch nor timm."""
    cache = tmp_path / "cache"
    result, log = run_stage("check_params", workdir, "train.model=resnet18", "data.root=.", cache=cache)
    assert result == {"exit": 0, "heavy": []}, log[-3000:]
    assert list((cache / "skillpack").glob("timm-*-models.json"))

    result, log = run_stage("check_params", workdir, "train.model=resnet_nope", "data.root=.", cache=cache)
    assert result == {"exit": 1, "heavy": []}, log[-3000:]
    assert "train.model: unknown model 'resnet_nope'" in log


def test_policy_options_match_torchvisions_policies():
    """config.POLICY_OPTIONS validates train.augment.policy_options without torch: it must
    name exactly the keyword arguments of torchvision's policy classes."""
    from skillpack.config import POLICY_OPTIONS
    from skillpack.data.augment import POLICIES, policy_option_names

    assert POLICY_OPTIONS == {name: policy_option_names(name) for name in POLICIES}


@pytest.mark.fault('the MLflow server does not answer: one line naming the URI within 10 s, before any work',
                   guards=('traceback',))
def test_a_tracking_server_that_does_not_answer_is_one_line_within_10_seconds(workdir, tmp_path):
    import time

    from skillpack.deploy.monitoring import free_port

    uri = f"http://127.0.0.1:{free_port()}"            # nothing listens there
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SKILLPACK_ROOT": str(workdir), "MLFLOW_TRACKING_URI": uri}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "stages.validate"], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=60)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 1 and seconds < 10, (seconds, proc.stderr[-2000:])
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: MLflow tracking server {uri} does not answer")
