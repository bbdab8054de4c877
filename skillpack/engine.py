"""The train / evaluate loop: seeded, resumable, device-agnostic (CUDA + AMP when present)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from skillpack.config import TrainParams
from skillpack.data.loader import BatchAugment, TensorBatches, to_tensor_nchw
from skillpack.io import atomic_path


class ImageClassifier(nn.Module):
    """Backbone + the input convention: takes images as stored (0..255, N x C x H x W, any
    dtype) and normalises with the training set's per-channel mean/std, so a saved model
    needs nothing else to predict."""

    def __init__(self, backbone: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (timm's forward_head(pre_logits=True))."""
        feats = self.backbone.forward_features(self.normalize(x))
        return self.backbone.forward_head(feats, pre_logits=True)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    flat = np.asarray(images, dtype=np.float64).reshape(-1, images.shape[-1])
    std = flat.std(axis=0)
    return flat.mean(axis=0).tolist(), np.where(std > 0, std, 1.0).tolist()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def config_hash(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FitResult:
    history: list[EpochResult] = field(default_factory=list)
    resumed_from_epoch: int = 0
    train_seconds: float = 0.0


def build_optimizer(model: nn.Module, cfg: TrainParams) -> torch.optim.Optimizer:
    """timm's optimizer factory; weight decay skips norms and biases (filter_bias_and_bn)."""
    from timm.optim import create_optimizer_v2

    if cfg.optimizer == "sgd":
        opt = "sgd" if cfg.nesterov else "momentum"
        return create_optimizer_v2(model, opt=opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                   momentum=cfg.momentum, filter_bias_and_bn=True)
    return create_optimizer_v2(model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               filter_bias_and_bn=True)


def build_scheduler(optimizer, cfg: TrainParams, steps_per_epoch: int):
    """Stepped every iteration: linear warm-up for `warmup_epochs`, then cosine to 0."""
    from torch.optim import lr_scheduler as sched

    total = cfg.epochs * steps_per_epoch
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    main = (sched.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1)) if cfg.scheduler == "cosine"
            else sched.ConstantLR(optimizer, factor=1.0, total_iters=0))
    if warmup <= 0:
        return main
    ramp = sched.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup)
    return sched.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1024,
            device: torch.device | None = None, embeddings: bool = False) -> torch.Tensor:
    """Logits (or penultimate embeddings) for uint8 N x C x H x W images, in order."""
    device = device or next(model.parameters()).device
    model.eval()
    outs = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        outs.append((model.embed(batch) if embeddings else model(batch)).float().cpu())
    return torch.cat(outs) if outs else torch.zeros(0)


def evaluate_loss_acc(model, images, labels, batch_size, device) -> tuple[float, float]:
    if len(labels) == 0:
        return float("nan"), float("nan")
    logits = predict(model, images, batch_size, device)
    loss = nn.functional.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc


class Trainer:
    """fit() trains `model` with the params in `cfg`; a checkpoint is written atomically after
    every epoch, and a later fit() with the same config and data resumes from it and ends
    with exactly the weights of an uninterrupted run (per-epoch seeded RNG)."""

    def __init__(self, model: ImageClassifier, cfg: TrainParams, seed: int,
                 checkpoint: str | Path | None = None, data_hash: str = "",
                 on_epoch_end: Callable[[EpochResult, list[EpochResult]], None] | None = None, progress: bool = True):
        self.cfg, self.seed, self.data_hash = cfg, seed, data_hash
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.on_epoch_end = on_epoch_end
        self.progress = progress
        self.device = resolve_device(cfg.device)
        self.amp = cfg.amp and self.device.type == "cuda"
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)

    def _fingerprint(self) -> str:
        return config_hash(self.cfg.model_dump(), self.seed, self.data_hash)

    def _save(self, epoch: int, optimizer, scheduler, scaler, history) -> None:
        if self.checkpoint is None:
            return
        state = {
            "epoch": epoch,
            "fingerprint": self._fingerprint(),
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "history": [h.as_dict() for h in history],
        }
        with atomic_path(self.checkpoint) as tmp:
            torch.save(state, tmp)

    def _resume(self, optimizer, scheduler, scaler) -> tuple[int, list[EpochResult]]:
        if self.checkpoint is None or not self.checkpoint.is_file():
            return 0, []
        state = torch.load(self.checkpoint, map_location=self.device, weights_only=True)
        if state.get("fingerprint") != self._fingerprint():
            print(f"[train] {self.checkpoint}: made with other params or data; starting fresh")
            return 0, []
        self.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        print(f"[train] resuming from {self.checkpoint} after epoch {state['epoch']}")
        return state["epoch"], [EpochResult(**h) for h in state["history"]]

    def fit(self, train_images: np.ndarray, train_labels: np.ndarray,
            val_images: np.ndarray, val_labels: np.ndarray) -> FitResult:
        cfg = self.cfg
        torch.set_num_threads(cfg.threads)
        torch.use_deterministic_algorithms(self.device.type == "cpu", warn_only=True)
        x_train, y_train = to_tensor_nchw(train_images), torch.as_tensor(train_labels, dtype=torch.long)
        x_val, y_val = to_tensor_nchw(val_images), torch.as_tensor(val_labels, dtype=torch.long)
        augment = BatchAugment(hflip=cfg.augment.hflip, crop_padding=cfg.augment.crop_padding)
        batches = TensorBatches(x_train, y_train, cfg.batch_size, shuffle=True, augment=augment,
                                drop_last=len(y_train) > cfg.batch_size)
        optimizer = build_optimizer(self.model, cfg)
        scheduler = build_scheduler(optimizer, cfg, len(batches))
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        start_epoch, history = self._resume(optimizer, scheduler, scaler)
        result = FitResult(history=history, resumed_from_epoch=start_epoch)
        t_start = time.perf_counter()
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            # Per-epoch seeds: shuffling, augmentation and dropout depend only on (seed, epoch),
            # which is what makes a resumed run bit-identical to an uninterrupted one.
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            torch.manual_seed(self.seed * 100_019 + epoch)
            train_loss, train_acc = self._train_epoch(batches, generator, optimizer, scheduler, scaler,
                                                      criterion, epoch)
            val_loss, val_acc = evaluate_loss_acc(self.model, x_val, y_val, 1024, self.device)
            record = EpochResult(epoch, train_loss, train_acc, val_loss, val_acc,
                                 optimizer.param_groups[0]["lr"], time.perf_counter() - t0)
            history.append(record)
            self._save(epoch, optimizer, scheduler, scaler, history)
            if self.on_epoch_end:
                self.on_epoch_end(record, history)
        result.train_seconds = time.perf_counter() - t_start
        return result

    def _train_epoch(self, batches, generator, optimizer, scheduler, scaler, criterion, epoch):
        self.model.train()
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        bar = tqdm(batches.epoch(generator), total=len(batches), desc=f"epoch {epoch}/{self.cfg.epochs}",
                   disable=not self.progress, mininterval=1.0, leave=False)
        for images, labels in bar:
            images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            labels = labels.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                logits = self.model(images)
                loss = criterion(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total_loss += loss.detach().double() * len(labels)
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
        bar.close()
        if not math.isfinite(total_loss.item()):
            raise FloatingPointError(f"epoch {epoch}: training loss is not finite; lower train.lr")
        return total_loss.item() / max(seen, 1), correct.item() / max(seen, 1)
