"""The trained-model file: weights + what is needed to rebuild the model, loaded with
torch.load(weights_only=True) (no pickle of code)."""
from __future__ import annotations

from pathlib import Path

import torch

from skillpack.config import HeadParams
from skillpack.io import UnreadableFile, atomic_path, load_torch_file
from skillpack.train.models import ImageClassifier, build_classifier, fit_shapes


def save_classifier(path: str | Path, model: ImageClassifier, *, model_name: str, classes: list[str],
                    image_shape: tuple[int, int, int], head: HeadParams, extra: dict | None = None) -> None:
    state = {
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "model_name": model_name,
        "classes": list(classes),
        "image_shape": [int(v) for v in image_shape],
        "head": head.model_dump(),
        "input_size": model.input_size,
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def weights_sha256(model: torch.nn.Module) -> str:
    """Identity of a model's weights: sha256 over its state dict's names, dtypes, shapes and bytes."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ImageClassifier, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained model (run `dvc repro train`)")
    state = load_torch_file(path, map_location, what="a model file",
                            fix="rebuild it (`dvc repro train`) or restore it (`dvc checkout`)")
    missing = [key for key in ("state_dict", "model_name", "classes", "image_shape", "head") if key not in state]
    if missing:
        raise UnreadableFile(f"{path}: not a skillpack model file (no {', '.join(missing)})")
    model = build_classifier(state["model_name"], len(state["classes"]), tuple(state["image_shape"]),
                             HeadParams(**state["head"]), input_size=state.get("input_size"))
    fit_shapes(model, state["state_dict"])  # a pruned model has fewer channels than its architecture's default
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model, state


def load_teacher(reference: str) -> torch.nn.Module:
    """A teacher for distillation: a model.pt path, or an MLflow model URI (models:/name@alias)."""
    if reference.startswith(("models:/", "runs:/")):
        import mlflow.pytorch

        from skillpack import tracking
        tracking.setup()
        return mlflow.pytorch.load_model(reference)
    return load_classifier(reference)[0]
