"""The model the service runs: an exported ONNX file (class names and input shape are in its
metadata) or a version of the model registry found by alias."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("skillpack.deploy.serving")


@dataclass
class ServedModel:
    run: Callable[[np.ndarray], np.ndarray]   # uint8 N x H x W x C -> logits N x K
    classes: list[str]
    image_shape: tuple[int, int, int]
    name: str
    version: str
    source: str

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        logits = self.run(pixels)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


def load_onnx(path: str | Path, threads: int = 1, version: str | None = None) -> ServedModel:
    from skillpack.deploy.onnx_runtime import onnx_metadata, onnx_runner, onnx_session
    from skillpack.io import file_sha256

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no exported model (run `dvc repro export`)")
    meta = onnx_metadata(path)
    missing = {"classes", "image_shape"} - set(meta)
    if missing:
        raise ValueError(f"{path}: the ONNX metadata lacks {sorted(missing)} (export it with `dvc repro export`)")
    return ServedModel(onnx_runner(onnx_session(path, threads)), list(meta["classes"]), tuple(meta["image_shape"]),
                       meta.get("model_name", path.stem), version or file_sha256(path)[:12], str(path))


def load_registered(registered_name: str, alias: str, fallback_alias: str | None = None, threads: int = 1) -> ServedModel:
    """The ONNX file of the version `alias` points to, else `fallback_alias`'s (logged)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from skillpack import tracking
    tracking.setup()
    client = MlflowClient()
    for chosen in (a for a in (alias, fallback_alias) if a):
        try:
            version = client.get_model_version_by_alias(registered_name, chosen)
        except MlflowException:
            log.warning("model registry: %s has no alias %r%s", registered_name, chosen,
                        f"; falling back to {fallback_alias!r}" if chosen == alias and fallback_alias else "")
            continue
        folder = Path(mlflow.artifacts.download_artifacts(version.source))
        onnx_files = sorted(folder.rglob("*.onnx"))
        if not onnx_files:
            raise ValueError(f"{registered_name} v{version.version} (@{chosen}) holds no ONNX file")
        served = load_onnx(onnx_files[0], threads, version=f"{version.version}@{chosen}")
        served.source = f"models:/{registered_name}@{chosen}"
        return served
    raise FileNotFoundError(f"model registry: {registered_name} has no alias {alias!r}"
                            + (f" nor {fallback_alias!r}" if fallback_alias else ""))
