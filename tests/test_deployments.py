"""The documented deployment path, exactly: `prefect server start` on 127.0.0.1, `prefect
work-pool create skillpack --type process`, `prefect --no-prompt deploy --all` from
prefect.yaml, `prefect worker start --pool skillpack` - with no SKILLPACK_ROOT in sight - then
the retrain run through the worker, the monitor flow fed by a real Prometheus, and the served
deployments that must not pause the pool's ones."""
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import pytest
from conftest import project_env, run

from flows.deployments import SERVED_SUFFIX, deployment_specs
from skillpack.deploy.monitoring import free_port

RETRAIN, MONITOR, ABLATION = "skillpack-retrain/nightly", "skillpack-monitor/every-15-minutes", \
    "skillpack-ablation/on-demand"


def test_prefect_yaml_names_existing_flows_on_the_process_pool():
    specs = {s["name"]: s for s in deployment_specs()}
    assert set(specs) == {"nightly", "every-15-minutes", "on-demand", "search"}
    for spec in specs.values():
        path, func = spec["entrypoint"].split(":")
        assert f"def {func}(" in open(path).read()
        assert spec["work_pool"]["name"] == "skillpack"
    assert "schedules" not in specs["on-demand"] and "schedules" not in specs["search"]
    with pytest.raises(SystemExit, match="no deployment named"):
        deployment_specs(only=["hourly"])


@contextmanager
def background(cmd: list[str], cwd, env, stop=signal.SIGINT):
    """A long-running command, stopped the way a user (Ctrl-C) or a service manager (SIGTERM)
    stops it, killed if it hangs."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        proc.send_signal(stop)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def documented_env(repo, home) -> dict:
    """The environment a user has after following the README: no SKILLPACK_ROOT."""
    env = {k: v for k, v in project_env(repo).items() if k not in ("SKILLPACK_ROOT", "MLFLOW_TRACKING_URI")}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api",
               PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}")
    return env


def wait_healthy(api: str, proc, timeout: float = 150) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prefect server exited {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"prefect server not healthy within {timeout}s")


@pytest.fixture(scope="module")
def deployed(tiny_repo, tmp_path_factory):
    """The README's commands, in order, in the project repo."""
    env = documented_env(tiny_repo, tmp_path_factory.mktemp("prefect_home"))
    port = env["PREFECT_API_URL"].split(":")[-1].split("/")[0]
    with background(["prefect", "server", "start", "--host", "127.0.0.1", "--port", port], tiny_repo, env) as server:
        wait_healthy(env["PREFECT_API_URL"], server)
        run(["prefect", "work-pool", "create", "skillpack", "--type", "process"], tiny_repo, env)
        run(["prefect", "--no-prompt", "deploy", "--all"], tiny_repo, env)
        yield env


def api(env, method: str, path: str, **body):
    response = httpx.request(method, f"{env['PREFECT_API_URL']}{path}", json=body if method != "GET" else None,
                             timeout=30)
    response.raise_for_status()
    return response.json()


def deployment(env, name: str) -> dict:
    flow, dep = name.split("/")
    return api(env, "GET", f"/deployments/name/{flow}/{dep}")


def test_deploy_all_registers_the_schedules_on_the_process_pool(deployed, tiny_repo):
    assert api(deployed, "GET", "/work_pools/skillpack")["type"] == "process"
    nightly, every15, on_demand = (deployment(deployed, n) for n in (RETRAIN, MONITOR, ABLATION))
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
    assert [s["schedule"]["interval"] for s in every15["schedules"]] == [900.0]
    assert on_demand["schedules"] == [] and on_demand["parameters"] == {"spec_path": "ablations/default.yaml"}
    for dep in (nightly, every15, on_demand):
        assert dep["work_pool_name"] == "skillpack" and not dep["paused"]
        # Prefect's default pull step: the directory `prefect deploy` ran in, so no env var is needed
        assert dep["pull_steps"] == [{"prefect.deployments.steps.set_working_directory":
                                      {"directory": str(tiny_repo)}}]


def wait_for_final_state(env, flow_run_id: str, worker, timeout: float) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = api(env, "GET", f"/flow_runs/{flow_run_id}")["state"]
        if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state
        if worker.poll() is not None:
            raise AssertionError(f"worker exited {worker.returncode}:\n{worker.stdout.read()[-3000:]}")
        time.sleep(2)
    raise AssertionError(f"flow run {flow_run_id} not finished within {timeout}s (state {state['type']})")


def test_a_worker_runs_the_retrain_deployment_and_mlflow_records_the_decision(deployed, tiny_repo):
    from mlflow import MlflowClient

    flow_run = api(deployed, "POST", f"/deployments/{deployment(deployed, RETRAIN)['id']}/create_flow_run")
    with background(["prefect", "worker", "start", "--pool", "skillpack"], tiny_repo.parent, deployed) as worker:
        state = wait_for_final_state(deployed, flow_run["id"], worker, timeout=900)
    assert state["type"] == "COMPLETED", state
    registry = MlflowClient(tracking_uri=f"sqlite:///{tiny_repo / 'mlflow.db'}")
    candidate = registry.get_model_version_by_alias("skillpack-classifier", "candidate-onnx")
    champion = registry.get_model_version_by_alias("skillpack-classifier", "champion")
    assert candidate.tags["promotion.reason"] and candidate.tags["promotion.promoted"] in ("True", "False")
    assert (champion.version == candidate.version) == (candidate.tags["promotion.promoted"] == "True") or \
        "already the champion" in candidate.tags["promotion.reason"]
    artifacts = api(deployed, "POST", "/artifacts/filter", artifacts={"key": {"any_": ["retrain-decision"]}})
    assert any(a["flow_run_id"] == flow_run["id"] for a in artifacts)


def serve_service_metrics(port: int):
    """The service's own metrics registry on a loopback port, fed labels through its real API."""
    from prometheus_client import start_http_server

    from skillpack.deploy.serving.metrics import ServiceMetrics

    metrics = ServiceMetrics(["a", "b"], None, None, feedback_window=100, drift_window=100)
    server, _ = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    return metrics, server


def run_monitor(env, repo, prometheus: str) -> dict:
    import json

    proc = run([sys.executable, "-m", "flows.monitor", "--prometheus", prometheus], repo, env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_monitor_flow_reads_a_real_prometheus_and_triggers_retrain_on_low_accuracy(deployed, tiny_repo,
                                                                                       tmp_path):
    from skillpack.config import load_params
    from skillpack.deploy.monitoring import PrometheusServer

    params = load_params(tiny_repo / "params.yaml").monitor
    port = free_port()
    metrics, exporter = serve_service_metrics(port)
    try:
        with PrometheusServer(params, tmp_path, f"127.0.0.1:{port}") as prometheus:
            base = prometheus.api.removesuffix("/api/v1")
            for _ in range(params.min_feedback):
                metrics.observe_feedback(True)
            wait_for_value(prometheus.api, "skillpack_feedback_in_window", params.min_feedback)
            healthy = run_monitor(deployed, tiny_repo, base)
            # (the exporter is this test process: its memory is a real reading and may breach)
            assert healthy["retrain_flow_run"] is None and "accuracy_min" not in healthy["breached"]
            for _ in range(params.min_feedback):
                metrics.observe_feedback(False)  # accuracy 0.5 over the last 2 x min_feedback labels
            wait_for_value(prometheus.api, "skillpack_rolling_accuracy", 0.5)
            breached = run_monitor(deployed, tiny_repo, base)
    finally:
        exporter.shutdown()
    readings = {r["signal"]: r for r in breached["readings"]}
    assert readings["accuracy_min"]["value"] == 0.5 and "accuracy_min" in breached["breached"]
    assert readings["memory_mb_max"]["value"] > 0  # read from the same scrape
    triggered = api(deployed, "GET", f"/flow_runs/{breached['retrain_flow_run']}")
    assert triggered["deployment_id"] == deployment(deployed, RETRAIN)["id"]
    assert "triggered-by-monitor" in triggered["tags"]


def wait_for_value(prometheus_api: str, expr: str, expected: float, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            result = httpx.get(f"{prometheus_api}/query", params={"query": expr}, timeout=5).json()["data"]["result"]
        except httpx.HTTPError:  # not listening yet
            result = []
        if result and float(result[0]["value"][1]) == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never read {expr} == {expected}")


def test_stopping_served_deployments_leaves_the_pool_deployments_scheduled(deployed, tiny_repo):
    served_name = RETRAIN + SERVED_SUFFIX
    with background([sys.executable, "-m", "flows.deployments", "--only", "nightly"], tiny_repo, deployed,
                    stop=signal.SIGTERM) as proc:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                served = deployment(deployed, served_name)
            except httpx.HTTPStatusError:  # not registered yet
                served = {}
            if served.get("status") == "READY":  # its runner is polling: started, so a SIGTERM pauses
                break
            time.sleep(1)
        else:
            raise AssertionError(f"{served_name} never became READY")
        assert [s["schedule"]["cron"] for s in served["schedules"]] == ["0 2 * * *"]
    stopped = deployment(deployed, served_name)  # Prefect pauses what a stopped process served ...
    assert stopped["paused"] or not any(s["active"] for s in stopped["schedules"]), stopped
    nightly = deployment(deployed, RETRAIN)      # ... and the pool's deployment of the same flow runs on
    assert not nightly["paused"] and all(s["active"] for s in nightly["schedules"])


def stages_run_by(env, flow_run_id: str) -> list[str]:
    """The DVC stages a flow run ran (not skipped as up to date), from the logs in Prefect's API of
    the run and of its subflow runs (the retrain flow runs the pipeline flow as a subflow)."""
    import re

    subflows = api(env, "POST", "/flow_runs/filter", flow_runs={"parent_flow_run_id": {"any_": [flow_run_id]}})
    ids = [flow_run_id, *(run["id"] for run in subflows)]
    logs = api(env, "POST", "/logs/filter", logs={"flow_run_id": {"any_": ids}}, sort="TIMESTAMP_ASC", limit=200)
    return re.findall(r"Running stage '([a-z_]+)'", "\n".join(entry["message"] for entry in logs))


def wait_until_crashed(env, flow_run_id: str) -> dict:
    from flows.deployments import ZOMBIE_AFTER_S

    deadline = time.time() + ZOMBIE_AFTER_S + 90
    state = api(env, "GET", f"/flow_runs/{flow_run_id}")["state"]
    while state["type"] == "RUNNING" and time.time() < deadline:
        time.sleep(5)
        state = api(env, "GET", f"/flow_runs/{flow_run_id}")["state"]
    return state


@pytest.mark.benchmark_only   # about 4 minutes: heartbeats come every 30 s, a run is a zombie after 90 s
@pytest.mark.fault("a worker killed mid-training: the flow run is marked Crashed by the heartbeat automation, not "
                   "left Running, and rerunning the deployment runs only the stages that had not finished",
                   guards=("lost",))
def test_a_killed_worker_s_flow_run_is_marked_crashed_and_a_rerun_resumes_at_its_stage(deployed, tiny_repo):
    import os

    from conftest import set_params

    created = run([sys.executable, "-m", "flows.deployments", "--automations-only"], tiny_repo, deployed)
    again = run([sys.executable, "-m", "flows.deployments", "--automations-only"], tiny_repo, deployed)
    assert created.stdout.split()[-1] == again.stdout.split()[-1]          # one automation, not two
    kept = {name: (tiny_repo / name).read_text() for name in ("params.yaml", "dvc.lock")}
    set_params(tiny_repo, {"train.optimizer.momentum": 0.85})   # train and what follows must run again
    try:
        killed = api(deployed, "POST", f"/deployments/{deployment(deployed, RETRAIN)['id']}/create_flow_run")
        worker = subprocess.Popen(["prefect", "worker", "start", "--pool", "skillpack"], cwd=tiny_repo.parent,
                                  env=deployed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            deadline = time.time() + 300
            while "train" not in stages_run_by(deployed, killed["id"]):
                assert time.time() < deadline, "the flow run never reached the train stage"
                time.sleep(1)
            time.sleep(3)                                   # mid-training
        finally:
            os.killpg(worker.pid, signal.SIGKILL)           # the worker and the flow run's process, as a lost machine
        assert stages_run_by(deployed, killed["id"]) == ["check_params", "train"]
        assert wait_until_crashed(deployed, killed["id"])["type"] == "CRASHED"
        rerun = api(deployed, "POST", f"/deployments/{deployment(deployed, RETRAIN)['id']}/create_flow_run")
        with background(["prefect", "worker", "start", "--pool", "skillpack"], tiny_repo.parent, deployed) as worker:
            assert wait_for_final_state(deployed, rerun["id"], worker, timeout=600)["type"] == "COMPLETED"
        # check_params had finished (DVC recorded it): the rerun starts at the stage the kill cut short
        assert stages_run_by(deployed, rerun["id"]) == ["train", "evaluate", "compress", "export"]
    finally:   # the shared tiny repo back as it was: its params, lock file and outputs (from DVC's cache)
        for name, text in kept.items():
            (tiny_repo / name).write_text(text)
        run([sys.executable, "-m", "dvc", "checkout", "-f"], tiny_repo, project_env(tiny_repo))
