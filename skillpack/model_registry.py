"""The MLflow model registry: registering a trained model (PyTorch) or the served ONNX file once
per weights, describing versions and aliases with their lineage, and the champion / challenger
aliases a promotion moves. Runs, metrics and artifacts are skillpack.tracking's; the two are the
modules that talk to MLflow.
"""
from __future__ import annotations

from pathlib import Path

from skillpack.tracking import git_commit, survives_a_lost_server, tracking_uri


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
