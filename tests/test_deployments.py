"""Scheduled deployments: prefect.yaml's deployments served by `python -m flows.deployments`
against Prefect's own server carry their cron schedules, and a run of one executes the flow."""
import subprocess
import sys
import time

import pytest

from conftest import project_env
from flows.deployments import deployment_specs


def test_prefect_yaml_names_existing_flows_with_cron_schedules():
    specs = deployment_specs()
    assert {s["name"] for s in specs} == {"nightly", "weekly"}
    for spec in specs:
        path, func = spec["entrypoint"].split(":")
        assert f"def {func}(" in open(path).read()
        assert spec["schedules"] and all(len(s["cron"].split()) == 5 for s in spec["schedules"])
    with pytest.raises(SystemExit, match="no deployment named"):
        deployment_specs(only=["hourly"])


def _wait_for_deployment(client, name: str, proc, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"flows.deployments exited {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
        try:
            return client.read_deployment_by_name(name)
        except Exception:  # not registered yet
            time.sleep(1)
    raise AssertionError(f"deployment {name} not registered within {timeout}s")


def test_served_deployments_are_scheduled_and_the_nightly_retrain_records_its_decision(tiny_repo, prefect_server):
    from mlflow import MlflowClient

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    env = {**project_env(tiny_repo), "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen([sys.executable, "-m", "flows.deployments"], cwd=tiny_repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with get_client(sync_client=True) as client:
            nightly = _wait_for_deployment(client, "skillpack-retrain/nightly", proc)
            weekly = _wait_for_deployment(client, "skillpack-ablation/weekly", proc)
            assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
            assert [s.schedule.cron for s in weekly.schedules] == ["0 3 * * 6"]
            assert weekly.parameters == {"spec_path": "ablations/default.yaml"}
            assert all(s.active for s in nightly.schedules + weekly.schedules)
        flow_run = run_deployment("skillpack-retrain/nightly", timeout=600)
        assert flow_run.state.is_completed(), flow_run.state
        registry = MlflowClient(tracking_uri=f"sqlite:///{tiny_repo / 'mlflow.db'}")
        champion = registry.get_model_version_by_alias("skillpack-classifier", "champion")
        candidate = registry.get_model_version_by_alias("skillpack-classifier", "candidate-onnx")
        assert champion.version == candidate.version  # the first candidate becomes the champion ...
        assert "no champion yet" in champion.tags["promotion.reason"]  # ... and says why
    finally:
        proc.terminate()
        proc.wait(timeout=60)
