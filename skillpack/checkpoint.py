"""The trained-model file: weights + what is needed to rebuild the model, loaded with
torch.load(weights_only=True) (no pickle of code)."""
from __future__ import annotations

from pathlib import Path

import torch

from skillpack.engine import ImageClassifier
from skillpack.io import atomic_path
from skillpack.models import build_model


def save_classifier(path: str | Path, model: ImageClassifier, *, model_name: str, classes: list[str],
                    image_shape: tuple[int, int, int], extra: dict | None = None) -> None:
    h, w, c = image_shape
    state = {
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "model_name": model_name,
        "classes": list(classes),
        "image_shape": [int(h), int(w), int(c)],
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ImageClassifier, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained model (run `dvc repro train`)")
    state = torch.load(path, map_location=map_location, weights_only=True)
    h, w, c = state["image_shape"]
    backbone = build_model(state["model_name"], num_classes=len(state["classes"]), in_chans=c, img_size=h)
    model = ImageClassifier(backbone, [0.0] * c, [1.0] * c)
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model, state
