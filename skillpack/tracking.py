"""MLflow runs: one of the two modules that talk to MLflow (skillpack.model_registry: the model registry).

Every stage execution is one run in the experiment from params (default `skillpack`),
tagged with the git commit, the data hash and the stage. When MLFLOW_PARENT_RUN_ID is set
(the Prefect pipeline flow sets it), the run nests under that parent.
Default tracking URI: an absolute sqlite:///<repo>/mlflow.db; MLFLOW_TRACKING_URI overrides.
"""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

from skillpack.io import UserError

PARENT_ENV = "MLFLOW_PARENT_RUN_ID"
REPRO_ENV = "SKILLPACK_REPRO_ID"   # set by the pipeline flow: its parent run's id
REPRO_TAG = "skillpack.repro_id"


def repo_root() -> Path:
    return Path(os.environ.get("SKILLPACK_ROOT", Path.cwd())).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def git_commit(root: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root or repo_root(), capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


# MLflow 3's UI opens an experiment on its GenAI "Overview" unless the experiment says it is
# model training: the tag its UI reads (mlflow.experimentKind) set to custom model development.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


class TrackingUnavailable(UserError, RuntimeError):
    """The tracking server does not answer: said in one line, before a stage does any work."""


REACHABLE_TIMEOUT_S = 3.0


def require_reachable(uri: str) -> None:
    """A tracking server (http[s]://) must answer its /health within a few seconds: MLflow's
    own client would retry for minutes (its defaults: 7 retries with backoff, 120 s timeouts)
    before a stage learns that nothing will be tracked."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=REACHABLE_TIMEOUT_S).close()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingUnavailable(f"MLflow tracking server {uri} does not answer ({reason}): start it, or unset "
                                  f"MLFLOW_TRACKING_URI to track into {repo_root() / 'mlflow.db'}") from None


@contextmanager
def _first_use_lock():
    """Processes opening a new SQLite database at once would each create MLflow's tables (and all
    but one fail): the first query of each process waits for a lock file beside the database."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    with open(uri.removeprefix("sqlite:///") + ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def setup(experiment: str = "skillpack") -> str:
    """Point MLflow at the tracking URI and make sure the experiment exists with its artifacts
    in an absolute folder beside the database (not ./mlruns of whatever the cwd is), tagged as
    a model-training experiment so that the UI opens on its training runs."""
    import mlflow

    require_reachable(tracking_uri())
    mlflow.set_tracking_uri(tracking_uri())
    with _first_use_lock():
        existing = mlflow.get_experiment_by_name(experiment)
    if existing is None:
        # a tracking server (http[s]://) stores artifacts itself (--serve-artifacts); a local
        # database gets them beside it
        local = not tracking_uri().startswith(("http://", "https://"))
        location = (repo_root() / "mlartifacts").as_uri() if local else None
        try:
            mlflow.create_experiment(experiment, artifact_location=location, tags=EXPERIMENT_KIND)
        except Exception:  # created concurrently by another process
            pass
    elif any(existing.tags.get(k) != v for k, v in EXPERIMENT_KIND.items()):
        for key, value in EXPERIMENT_KIND.items():
            mlflow.MlflowClient().set_experiment_tag(existing.experiment_id, key, value)
    return mlflow.set_experiment(experiment).experiment_id


def stage_run_name(stage: str, params: dict | None, data_hash: str) -> str:
    """`<stage> <short hash of its params and data>`: re-runs with other inputs are told apart
    in the UI, and the same inputs get the same name."""
    import hashlib
    import json

    blob = json.dumps([params or {}, data_hash], sort_keys=True, default=str).encode()
    return f"{stage} {hashlib.sha256(blob).hexdigest()[:8]}"


def repro_id() -> str:
    """The id every stage run of one pipeline execution shares, so that the UI can group them
    (runs table, Group by: tag skillpack.repro_id). Under the Prefect flow it is the parent
    run's id; under a plain `dvc repro` it is derived from the dvc process that runs the stages
    (its pid and start time), which every stage command has as an ancestor."""
    if os.environ.get(REPRO_ENV):
        return os.environ[REPRO_ENV]
    import hashlib

    import psutil

    try:
        for proc in psutil.Process().parents():
            cmd = proc.cmdline()
            if any(Path(part).name == "dvc" for part in cmd[:3]) and ({"repro", "exp"} & set(cmd)):
                return "dvc-" + hashlib.sha256(f"{proc.pid}:{proc.create_time()}".encode()).hexdigest()[:12]
    except psutil.Error:
        pass
    return ""


# Set once the tracking server stopped answering in the middle of a stage: from then on this
# process's tracking calls are skipped (the stage still writes its outputs), said in one line.
_SERVER_LOST: list[str] = []
_GONE = ("Max retries exceeded", "Connection refused", "ConnectionError", "Failed to establish",
         "Read timed out", "RemoteDisconnected", "Connection aborted")


def _server_gone(err: BaseException) -> bool:
    remote = tracking_uri().startswith(("http://", "https://"))
    return remote and any(sign in f"{type(err).__name__}: {err}" for sign in _GONE)


def _lose_server(call: str) -> None:
    import sys

    if not _SERVER_LOST:
        print(f"[tracking] MLflow at {tracking_uri()} stopped answering ({call}): the stage's outputs are written, "
              f"the rest of its tracking is not; once the server is back, `dvc repro --force <stage>` logs it again",
              file=sys.stderr, flush=True)
    _SERVER_LOST.append(call)


def survives_a_lost_server(fallback=None):
    """A tracking call that, when a tracking server stops answering, says so once and returns
    `fallback` (here and in every later call) instead of failing the stage that made it."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            if _SERVER_LOST:
                return fallback
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if not _server_gone(err):
                    raise
                _lose_server(fn.__name__)
                return fallback
        return call
    return wrap


@contextmanager
def stage_run(stage: str, experiment: str, params: dict | None = None, data_hash: str = "",
              extra_tags: dict | None = None):
    import mlflow

    setup(experiment)
    tags = {"stage": stage, "git_commit": git_commit(), "data_hash": data_hash, REPRO_TAG: repro_id(),
            **(extra_tags or {})}
    parent = os.environ.get(PARENT_ENV) or None
    run = mlflow.start_run(run_name=stage_run_name(stage, params, data_hash), parent_run_id=parent, tags=tags)
    status = "FAILED"
    try:
        if params:
            survives_a_lost_server()(mlflow.log_params)({k: ("None" if v is None else v) for k, v in params.items()})
        yield run
        status = "FINISHED"
    finally:
        survives_a_lost_server()(mlflow.end_run)(status)


@survives_a_lost_server()
def log_metrics(metrics: dict, step: int | None = None) -> None:
    import mlflow

    finite = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
    mlflow.log_metrics(finite, step=step)


@survives_a_lost_server()
def log_params(params: dict) -> None:
    """Params of the active run known only once it has worked (a budget's minutes)."""
    import mlflow

    mlflow.log_params({k: ("None" if v is None else v) for k, v in params.items()})


@survives_a_lost_server()
def set_tags(tags: dict) -> None:
    """Tags of the active run (what is known only once the stage has worked: the precision a
    training used on this CPU)."""
    import mlflow

    mlflow.set_tags({k: str(v) for k, v in tags.items()})


@survives_a_lost_server()
def log_artifact(path: str | Path, folder: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path=folder)


def log_child_run(parent_run_id: str, experiment: str, name: str, params: dict, metrics: dict, tags: dict,
                  series: dict[str, list[float]] | None = None, status: str = "FINISHED") -> str:
    """A finished child run under `parent_run_id`, through the client API (thread-safe: the
    fluent API keeps its active-run stack per thread), in one batch: `series` are metrics by
    step (step 1, 2, ...: a curve per epoch); `status` FINISHED, KILLED (a pruned trial) or FAILED."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri=tracking_uri())
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    run = client.create_run(experiment_id, run_name=name,
                            tags={"mlflow.parentRunId": parent_run_id, "git_commit": git_commit(), **tags})
    now = int(__import__("time").time() * 1000)
    curves = [Metric(k, float(v), now, step) for k, values in (series or {}).items()
              for step, v in enumerate(values, start=1)]
    client.log_batch(run.info.run_id,
                     metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()
                              if isinstance(v, (int, float)) and v == v] + curves,
                     params=[Param(k, str(v)) for k, v in params.items()],
                     tags=[RunTag(k, str(v)) for k, v in tags.items()])
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def start_parent_run(experiment: str, name: str, tags: dict) -> str:
    """The id of an open run for log_child_run's runs to nest under; finish_parent_run closes it."""
    from mlflow import MlflowClient

    setup(experiment)
    client = MlflowClient(tracking_uri=tracking_uri())
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.create_run(experiment_id, run_name=name, tags={"git_commit": git_commit(), **tags}).info.run_id


def finish_parent_run(run_id: str, metrics: dict, tags: dict, artifacts: list[Path]) -> None:
    """Figures, tags and files (at the run's artifact root) of a run start_parent_run opened, then close it."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri())
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    for key, value in {**tags, **metrics}.items():
        (client.log_metric if key in metrics else client.set_tag)(run_id, key, value)
    client.set_terminated(run_id, "FINISHED")
