"""Typed params: params.yaml is read here and nowhere else.

`load_params()` validates the file against the models below (unknown keys are errors that
name the field), and `apply_overrides()` takes dotted `key=value` strings such as
`train.lr=0.05`, the same syntax as `dvc exp run -S`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(_Strict):
    source: Literal["fashion_mnist", "cifar10", "cifar100", "imagefolder"] = "fashion_mnist"
    root: str | None = None
    image_size: int = Field(28, ge=4)
    channels: Literal[1, 3] = 1
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    max_train: int | None = Field(None, ge=1)
    max_test: int | None = Field(None, ge=1)


class ValidateParams(_Strict):
    max_imbalance_ratio: float | None = None
    max_rows_reported: int = 20


class AugmentParams(_Strict):
    hflip: bool = True
    crop_padding: int = Field(2, ge=0)


class TrainParams(_Strict):
    model: str = "sp_cnn_m"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    scheduler: Literal["cosine", "none"] = "cosine"
    warmup_epochs: float = Field(1, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    augment: AugmentParams = AugmentParams()
    threads: int = Field(2, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    channels_last: bool = True


class EvaluateParams(_Strict):
    batch_size: int = 1024
    overfit_gap: float = 0.5


class MlflowParams(_Strict):
    experiment: str = "skillpack"
    registered_model: str = "skillpack-classifier"
    alias: str = "candidate"


class Params(_Strict):
    seed: int = 0
    data: DataParams = DataParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    mlflow: MlflowParams = MlflowParams()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def flat(self) -> dict[str, object]:
        """Dotted keys -> values, the way MLflow and `dvc params diff` show them."""
        return dict(_flatten(self.model_dump(by_alias=True)))


class ParamsError(ValueError):
    pass


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Set dotted keys in a raw params dict: ["train.lr=0.05", "data.max_train=2000"]."""
    for item in overrides:
        if "=" not in item:
            raise ParamsError(f"override {item!r}: expected key=value, e.g. train.epochs=3")
        key, value = item.split("=", 1)
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override {item!r}: {part!r} is not a group")
        node[leaf] = yaml.safe_load(value)
    return raw


def load_params(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root)")
    raw = yaml.safe_load(path.read_text()) or {}
    raw = apply_overrides(raw, overrides)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ParamsError(f"{path}: invalid params - {problems}") from None
