"""The only module that talks to MLflow.

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


def setup(experiment: str = "skillpack") -> str:
    """Point MLflow at the tracking URI and make sure the experiment exists with its artifacts
    in an absolute folder beside the database (not ./mlruns of whatever the cwd is), tagged as
    a model-training experiment so that the UI opens on its training runs."""
    import mlflow

    require_reachable(tracking_uri())
    mlflow.set_tracking_uri(tracking_uri())
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


def registered_version_with_weights(registered_name: str, weights_sha256: str,
                                    tag: str = "weights_sha256") -> str | None:
    """The version of `registered_name` whose weights (or file: `tag`) have this hash, if one was registered."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        found = MlflowClient().search_model_versions(f"name='{registered_name}' and tags.{tag}='{weights_sha256}'")
    except MlflowException:  # no such registered model yet
        return None
    return str(max(int(v.version) for v in found)) if found else None


@survives_a_lost_server()
def describe_version(registered_name: str, version: str, tags: dict, description: str | None = None) -> None:
    """Tags (metrics, data hash, git commit) and the description (the model card) of a version."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, str(value))
    if description is not None:
        client.update_model_version(registered_name, version, description=description)


@survives_a_lost_server()
def describe_alias(registered_name: str, alias: str, tags: dict) -> str | None:
    """Tag the version an alias points to (the evaluate stage adds its test metrics to the
    version train registered); None when the alias does not exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        version = str(MlflowClient().get_model_version_by_alias(registered_name, alias).version)
    except MlflowException:
        return None
    describe_version(registered_name, version, tags)
    return version


def lineage_tags(data_hash: str) -> dict:
    return {"data_hash": data_hash, "git_commit": git_commit()}


def registration_line(registered_name: str, version: str | None, new: bool, alias: str) -> str:
    """What a stage prints about the version it registered (or did not)."""
    if version is None:
        return "not registered: the tracking server stopped answering"
    if new:
        return f"registered {registered_name} v{version} @{alias}"
    return f"unchanged: {registered_name} v{version} @{alias}, no new version"


@survives_a_lost_server(fallback=(None, False))
def log_and_register_model(model, example, registered_name: str, alias: str, weights_sha256: str,
                           tags: dict | None = None, description: str = "") -> tuple[str, bool]:
    """Log the torch model (torch.export format, no pickle), register it with `tags` and the
    description, and set the alias: (version, True). Weights already registered (a re-run
    that trained nothing) get the alias again but no new version: (that version, False)."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow import MlflowClient

    existing = registered_version_with_weights(registered_name, weights_sha256)
    if existing is not None:
        MlflowClient().set_registered_model_alias(registered_name, alias, existing)
        return existing, False
    info = mlflow.pytorch.log_model(
        model, name="model", input_example=example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        registered_model_name=registered_name,
    )
    version = str(info.registered_model_version)
    describe_version(registered_name, version, {"weights_sha256": weights_sha256, "format": "torch.export",
                                                **(tags or {})}, description)
    MlflowClient().set_registered_model_alias(registered_name, alias, version)
    return version, True


def register_trained_model(model, example, figures: dict, description: str, registry, lineage: dict) -> str:
    """Register the train stage's model under `registry.model` with the candidate alias, its
    figures (model, seed, val_acc, params, macs) and `lineage` as version tags: the line saying
    what happened."""
    tags = {**lineage, "model": figures["model"], "seed": figures["seed"], "val_acc": f"{figures['val_acc']:.4f}",
            "params": figures["params"], "macs": figures["macs"]}
    alias = registry.aliases.candidate
    version, new = log_and_register_model(model, example, registry.model, alias, figures["weights_sha256"], tags,
                                          description)
    return registration_line(registry.model, version, new, alias)


@survives_a_lost_server(fallback=(None, False))
def register_onnx_model(onnx_path, registered_name: str, alias: str, file_sha256: str, example, description: str = "",
                        tags: dict | None = None) -> tuple[str, bool]:
    """Log an ONNX file as a pyfunc (skillpack/deploy/serving/pyfunc.py: raw uint8 images in, class
    names and probabilities out; signature and input example of raw pixels) in the active run
    and register it as a version of `registered_name` with the alias, the description (the
    model card) and tags (its metrics): (version, True). A file already registered gets the
    alias again, no new version: (that version, False)."""
    import mlflow.pyfunc
    import onnxruntime
    from mlflow import MlflowClient

    client = MlflowClient()
    version = registered_version_with_weights(registered_name, file_sha256, tag="onnx_sha256")
    new = version is None
    if new:
        code = Path(__file__).resolve().parent / "deploy" / "serving" / "pyfunc.py"
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code), artifacts={"onnx": str(onnx_path)}, input_example=example,
            pip_requirements=[f"onnxruntime=={onnxruntime.__version__}", "numpy", "pandas",
                              f"mlflow=={mlflow.__version__}"],
            registered_model_name=registered_name)
        version = str(info.registered_model_version)
        describe_version(registered_name, version, {"onnx_sha256": file_sha256, "format": "onnx", **(tags or {})},
                         description)
    client.set_registered_model_alias(registered_name, alias, version)
    return version, new


def log_child_run(parent_run_id: str, experiment: str, name: str, params: dict, metrics: dict, tags: dict) -> str:
    """A finished child run under `parent_run_id`, through the client API (thread-safe: the
    fluent API keeps its active-run stack per thread)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri=tracking_uri())
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    run = client.create_run(experiment_id, run_name=name,
                            tags={"mlflow.parentRunId": parent_run_id, "git_commit": git_commit(), **tags})
    now = int(__import__("time").time() * 1000)
    client.log_batch(run.info.run_id,
                     metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()
                              if isinstance(v, (int, float)) and v == v],
                     params=[Param(k, str(v)) for k, v in params.items()],
                     tags=[RunTag(k, str(v)) for k, v in tags.items()])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def apply_promotion(registered_name: str, candidate_version: str, champion_alias: str, decision) -> str:
    """Record a promotion decision on the candidate version (tags + a line in its description)
    and move `champion_alias` to it when the decision says so. Returns the champion's version."""
    from mlflow import MlflowClient

    client = MlflowClient()
    describe_version(registered_name, candidate_version, {
        "promotion.promoted": decision.promote, "promotion.reason": decision.reason,
        "promotion.delta_points": decision.delta_points, "promotion.ci_low_points": decision.ci_low_points,
        "promotion.ci_high_points": decision.ci_high_points, "promotion.p": decision.p})
    version = client.get_model_version(registered_name, candidate_version)
    client.update_model_version(registered_name, candidate_version,
                                description=f"{version.description or ''}\n\n**Promotion:** {decision.reason}".strip())
    if decision.promote:
        client.set_registered_model_alias(registered_name, champion_alias, candidate_version)
        return str(candidate_version)
    return str(client.get_model_version_by_alias(registered_name, champion_alias).version)


def sync_aliases(registered_name: str, aliases, weights_sha256: str | None, onnx_sha256: str | None) -> dict:
    """Point each alias of `aliases` (params' registry.aliases, by role) at its version: candidate
    at the version holding these weights, candidate_onnx at the one holding this ONNX file, champion
    at the newest version a promotion chose. Idempotent: what the stages set is set again, and
    after a rename of an alias (registry params, which re-run no stage) the new name follows.
    Returns {alias: version or None when there is nothing to point at}."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    targets = {
        aliases.candidate: registered_version_with_weights(registered_name, weights_sha256) if weights_sha256 else None,
        aliases.candidate_onnx: (registered_version_with_weights(registered_name, onnx_sha256, tag="onnx_sha256")
                                 if onnx_sha256 else None),
        aliases.champion: registered_version_with_weights(registered_name, "True", tag="`promotion.promoted`"),
    }
    for alias, version in targets.items():
        if version is not None:
            client.set_registered_model_alias(registered_name, alias, version)
    return targets


def sync_repo_aliases(repo: Path, registry) -> dict:
    """sync_aliases for the outputs the stages left in `repo`: the train stage's weights hash
    (reports/train.json) and the served ONNX file (models/export/model.onnx); `registry`:
    params' registry section. What `skillpack registry sync` and the pipeline flow run."""
    import json

    from skillpack import paths
    from skillpack.io import file_sha256

    train = repo / paths.TRAIN_METRICS
    weights = json.loads(train.read_text()).get("weights_sha256") if train.is_file() else None
    onnx_file = repo / paths.EXPORTED / "model.onnx"
    onnx = file_sha256(onnx_file) if onnx_file.is_file() else None
    return sync_aliases(registry.model, registry.aliases, weights, onnx)
