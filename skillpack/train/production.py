"""The production training: the model from params, trained once on the prepared store's train
split (the cleaned view of it, when the clean stage made one), checkpointed every epoch and
resumed, and the figures the train stage publishes. The ablation's many seeded runs go through
the same route (skillpack.train.runs.train_model); this is the one run the pipeline ships."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from skillpack.config import TrainParams
from skillpack.data import PreparedStore
from skillpack.data.cleaning import cleaned_train_split
from skillpack.io import counted
from skillpack.machine import cpu_model
from skillpack.train.checkpoint import load_teacher, save_classifier, weights_sha256
from skillpack.train.models import count_macs, count_params
from skillpack.train.runs import RunData, TrainedModel, train_model


@dataclass
class TrainingInput:
    """What the training reads: the (cleaned) train split and val split of the prepared store."""
    data: RunData
    classes: list[str]
    data_hash: str
    cleaned: dict          # the clean stage's summary of its view ({} without one)
    fingerprint: str       # data and cleaned view: a checkpoint of other data is not resumed

    @property
    def example(self) -> np.ndarray:
        """Two images as the model takes them (N, C, H, W float): the registered model's input example."""
        images = self.data.val[0] if len(self.data.val[0]) else self.data.train[0]
        return torch.from_numpy(np.array(images[:2])).permute(0, 3, 1, 2).float().numpy()


def training_input(prepared: str | Path, cleaned_dir: str | Path) -> TrainingInput:
    store = PreparedStore(prepared)
    data_hash = store.data_hash()
    train_x, train_y, cleaned = cleaned_train_split(*store.arrays("train"), cleaned_dir, data_hash)
    return TrainingInput(RunData((train_x, train_y), store.arrays("val"), len(store.classes)), store.classes,
                         data_hash, cleaned, f"{data_hash}:{cleaned.get('view_hash', 'uncleaned')}")


def train_production(cfg: TrainParams, seed: int, inputs: TrainingInput, checkpoint: str | Path,
                     on_epoch: Callable | None = None, progress: bool = False) -> TrainedModel:
    """The one training of params' `train` with its `seed`, resumed from `checkpoint` when it holds
    this data's run."""
    teacher = load_teacher(cfg.loss.distill.teacher) if cfg.loss.distill.teacher else None
    return train_model(cfg, inputs.data, seed, on_epoch=on_epoch, checkpoint=checkpoint,
                       fingerprint=inputs.fingerprint, teacher=teacher, progress=progress)


@dataclass
class ShippedModel:
    """The trained model on the CPU in eval mode, saved, with its figures and its registry entry's text."""
    model: torch.nn.Module
    figures: dict
    description: str


def save_production(cfg: TrainParams, seed: int, source: str, inputs: TrainingInput, trained: TrainedModel,
                    model_file: str | Path) -> ShippedModel:
    """Save the trained model to `model_file` and say what it is: the train stage's figures
    (`source`: the data source's name, for the registry's description)."""
    model = trained.model.to("cpu", memory_format=torch.contiguous_format).eval()
    shape = inputs.data.image_shape
    macs, n_params = count_macs(model, (shape[2], *shape[:2])), count_params(model)
    save_classifier(model_file, model, model_name=cfg.model, classes=inputs.classes, image_shape=shape, head=cfg.head,
                    extra={"data_hash": inputs.data_hash, "cleaned_view": inputs.fingerprint, "seed": seed})
    n_train = len(inputs.data.train[1])
    figures = {"model": cfg.model, "seed": seed, "params": n_params, "macs": macs, "epochs": cfg.epochs,
               "epochs_trained": trained.epochs_trained, "resumed_from_epoch": trained.resumed_from_epoch,
               "train_samples": n_train, "train_seconds": round(trained.train_seconds, 2),
               "images_per_second": round(trained.images_per_second(n_train), 1), "resident": trained.resident,
               "compile_seconds": round(trained.compile_seconds, 2), "val_acc": trained.history[-1].val_acc,
               "precision": trained.precision, "cpu": cpu_model()[0], "weights_sha256": weights_sha256(model),
               **{f"clean_{k}": inputs.cleaned[k] for k in ("drop", "relabel") if k in inputs.cleaned}}
    description = (f"{cfg.model} ({n_params:,} parameters, {macs / 1e6:.1f} M MACs) trained "
                   f"{counted(cfg.epochs, 'epoch')} (seed {seed}) on {source} data "
                   f"{inputs.data_hash}; validation accuracy {figures['val_acc']:.4f}. The evaluate stage adds "
                   f"its test metrics as tags; the export stage registers the ONNX version with the full model card.")
    return ShippedModel(model, figures, description)
