"""The train / evaluate loop: seeded, resumable, device-agnostic (CUDA + AMP when present).

Every skill of the train params is wired here: augmentation (skillpack.data.augment), the
objective (skillpack.losses), optimizer / schedule / EMA (skillpack.optim), the head
(linear or ArcFace), gradient clipping, channels_last and mixed precision. Under torchrun the
same loop runs DistributedDataParallel, each rank on its share of every global batch
(skillpack.distributed says what is and is not equal to one process).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from skillpack import distributed
from skillpack.config import TrainParams
from skillpack.data.augment import BatchAugment
from skillpack.data.loader import TensorBatches, to_tensor_nchw
from skillpack.io import atomic_path, load_training_checkpoint
from skillpack.losses import Objective
from skillpack.metrics import accuracy, correct
from skillpack.models import ImageClassifier
from skillpack.optim import build_ema, build_optimizer, build_scheduler


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


@functools.lru_cache(maxsize=None)
def _say_once(message: str) -> None:
    print(message)


def cpu_has_bf16_units() -> bool:
    """AVX512-BF16 or AMX: oneDNN then runs bf16 convolutions natively (a training step of
    sp_cnn_m 1.7-2.1x faster than fp32 here, benchmarks/train_speed.py); without them bf16
    autocast is emulated and several times slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_amp(requested: str, device: torch.device) -> torch.dtype | None:
    """fp16 or bf16 autocast on CUDA; on a CPU, bf16 where it has bf16 units, else fp32."""
    if requested == "off":
        return None
    if device.type == "cuda":
        return torch.float16 if requested == "fp16" else torch.bfloat16
    if requested == "bf16" and cpu_has_bf16_units():
        return torch.bfloat16
    reason = ("this CPU has no bf16 units (AVX512-BF16 or AMX): emulated bf16 is several times slower"
              if requested == "bf16" else "fp16 autocast is a CUDA feature")
    _say_once(f"[train] train.amp={requested}: {reason}; training in fp32 on {device.type}")
    return None


def use_deterministic_cpu_kernels(device: torch.device) -> None:
    """Same seed, same metrics on CPU. Deterministic mode also fills every torch.empty() with
    NaN by default, to expose reads of uninitialised memory; that memset cost 7-8% of a
    training step here (benchmarks/train_speed.py, `deterministic_fill_speedup`), and no
    kernel we run reads memory it has not written, so the fill is switched off."""
    import torch.utils.deterministic

    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


def config_hash(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class EpochResult:
    """train_loss/acc: running figures of the epoch (augmented batches, the training
    objective); train_eval_loss/acc: plain cross-entropy in eval mode on a fixed subset of the
    training images, comparable with val_loss/acc (what the overfitting check uses)."""
    epoch: int
    train_loss: float
    train_acc: float
    train_eval_loss: float
    train_eval_acc: float
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


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1024,
            device: torch.device | None = None, embeddings: bool = False) -> torch.Tensor:
    """Logits (or penultimate embeddings) for uint8 N x C x H x W images, in order."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        outs.append((model.embed(batch) if embeddings else model(batch)).float().cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0)


def evaluate_loss_acc(model, images, labels, batch_size, device) -> tuple[float, float]:
    if len(labels) == 0:
        return float("nan"), float("nan")
    logits = predict(model, images, batch_size, device)
    return nn.functional.cross_entropy(logits, labels).item(), accuracy(logits, labels)


class TrainForward(nn.Module):
    """The model and the objective as one module, the one DDP wraps: the objective's own
    parameters (center-loss centres) are averaged across ranks like the model's."""

    def __init__(self, model: ImageClassifier, objective: Objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, images, targets, teacher_logits=None):
        hard = None if targets.dtype.is_floating_point else targets
        embeddings = self.model.embed(images)
        logits = self.model.classify(embeddings, hard)
        return self.objective(logits, targets, embeddings, teacher_logits), logits


class Trainer:
    """fit() trains `model` with the params in `cfg`; a checkpoint is written atomically after
    every epoch, and a later fit() with the same config and data resumes from it and ends
    with exactly the weights of an uninterrupted run (per-epoch seeded RNG)."""

    def __init__(self, model: ImageClassifier, cfg: TrainParams, seed: int,
                 checkpoint: str | Path | None = None, data_hash: str = "",
                 on_epoch_end: Callable[[EpochResult, list[EpochResult], nn.Module], None] | None = None,
                 progress: bool = True, teacher: nn.Module | None = None):
        self.cfg, self.seed, self.data_hash = cfg, seed, data_hash
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.on_epoch_end, self.progress = on_epoch_end, progress
        self.world = distributed.setup(resolve_device(cfg.device))  # torchrun: join the process group
        self.device = self.world.device
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        self.ema = None

    def _fingerprint(self) -> str:
        return config_hash(self.cfg.model_dump(), self.seed, self.data_hash)

    def _stateful(self, optimizer, scheduler, scaler, objective) -> dict:
        parts = {"model": self.model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler,
                 "objective": objective}
        if self.ema is not None:
            parts["ema"] = self.ema
        return parts

    def _save(self, epoch: int, parts: dict, history) -> None:
        if self.checkpoint is None or not self.world.main:
            return
        state = {"epoch": epoch, "fingerprint": self._fingerprint(), "history": [h.as_dict() for h in history]}
        state.update({name: obj.state_dict() for name, obj in parts.items()})
        with atomic_path(self.checkpoint) as tmp:
            torch.save(state, tmp)

    def _resume(self, parts: dict) -> tuple[int, list[EpochResult]]:
        if self.checkpoint is None:
            return 0, []
        state = load_training_checkpoint(self.checkpoint, self.device)  # None: none, or moved aside
        if state is None:
            return 0, []
        if state.get("fingerprint") != self._fingerprint():
            print(f"[train] {self.checkpoint}: made with other params or data; starting fresh")
            return 0, []
        for name, obj in parts.items():
            obj.load_state_dict(state[name])
        print(f"[train] resuming from {self.checkpoint} after epoch {state['epoch']}")
        return state["epoch"], [EpochResult(**h) for h in state["history"]]

    def _teacher_cache(self, x_train: torch.Tensor, augment: BatchAugment) -> torch.Tensor | None:
        """Teacher logits computed once when the inputs never change (no augmentation)."""
        if self.teacher is None or not augment.is_identity:
            return None
        return predict(self.teacher, x_train, 1024, self.device).to(self.device)

    def fit(self, train_images: np.ndarray, train_labels: np.ndarray,
            val_images: np.ndarray, val_labels: np.ndarray) -> FitResult:
        cfg = self.cfg
        torch.set_num_threads(distributed.threads_per_process(cfg.threads))
        use_deterministic_cpu_kernels(self.device)
        x_train, y_train = to_tensor_nchw(train_images), torch.as_tensor(train_labels, dtype=torch.long)
        x_val, y_val = to_tensor_nchw(val_images), torch.as_tensor(val_labels, dtype=torch.long)
        num_classes = self.model.head.weight.shape[0]
        augment = BatchAugment(cfg.augment, num_classes, x_train.shape[1])
        if cfg.batch_size < self.world.size:
            raise ValueError(f"train.batch_size={cfg.batch_size} is the global batch: it needs at least one "
                             f"sample per process ({self.world.size})")
        batches = TensorBatches(x_train, y_train, cfg.batch_size, shuffle=True,
                                drop_last=len(y_train) > cfg.batch_size)
        objective = Objective(cfg.loss, num_classes, self.model.head.weight.shape[1]).to(self.device)
        extra = [{"params": list(objective.parameters()), "lr": cfg.loss.center_lr, "weight_decay": 0.0}] \
            if any(True for _ in objective.parameters()) else []
        optimizer = build_optimizer(self.model, cfg.optimizer, extra)
        scheduler = build_scheduler(optimizer, cfg.schedule, cfg.optimizer.lr, cfg.epochs, len(batches))
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.ema = build_ema(self.model, cfg.ema)
        self.train_forward = self.world.wrap(TrainForward(self.model, objective))
        teacher_cache = self._teacher_cache(x_train, augment)
        # a fixed subset of the training images, as large as the validation set (at least 1,000)
        probe = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(self.seed))[
            :max(len(y_val), 1000)]
        parts = self._stateful(optimizer, scheduler, scaler, objective)
        start_epoch, history = self._resume(parts)
        result = FitResult(history=history, resumed_from_epoch=start_epoch)
        t_start = time.perf_counter()
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            # Per-epoch seeds: shuffling, augmentation and dropout depend only on (seed, epoch),
            # which is what makes a resumed run bit-identical to an uninterrupted one.
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            torch.manual_seed(self.seed * 100_019 + epoch + 1_000_003 * self.world.rank)  # dropout: per rank
            train_loss, train_acc = self._train_epoch(batches, augment, generator, optimizer, scheduler, scaler,
                                                      teacher_cache, epoch)
            evaluated = self.ema.module if self.ema is not None else self.model
            val_loss, val_acc = evaluate_loss_acc(evaluated, x_val, y_val, 1024, self.device)
            tr_loss, tr_acc = evaluate_loss_acc(evaluated, x_train[probe], y_train[probe], 1024, self.device)
            record = EpochResult(epoch, train_loss, train_acc, tr_loss, tr_acc, val_loss, val_acc,
                                 optimizer.param_groups[0]["lr"], time.perf_counter() - t0)
            history.append(record)
            self._save(epoch, parts, history)
            if self.on_epoch_end and self.world.main:
                self.on_epoch_end(record, history, evaluated)
        result.train_seconds = time.perf_counter() - t_start
        if self.ema is not None:  # the EMA weights are the result
            self.model.load_state_dict(self.ema.module.state_dict())
        return result

    def _step(self, images, targets, index, optimizer, scaler, teacher_cache, step):
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            teacher_logits = None
            if self.teacher is not None:
                if teacher_cache is not None:
                    teacher_logits = teacher_cache[index.to(self.device)]
                else:
                    with torch.no_grad():
                        teacher_logits = self.teacher(images)
            terms, logits = self.train_forward(images, targets, teacher_logits)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["total"]).backward()
        if self.cfg.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, step=step)  # the global step drives timm's decay warm-up
        return terms["total"].detach(), logits.detach()

    def _train_epoch(self, batches, augment, generator, optimizer, scheduler, scaler, teacher_cache, epoch):
        self.model.train()
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        n_correct = torch.zeros((), dtype=torch.float64, device=self.device)
        seen = 0
        bar = tqdm(batches.epoch(generator), total=len(batches), desc=f"epoch {epoch}/{self.cfg.epochs}",
                   disable=not (self.progress and self.world.main), mininterval=1.0, leave=False)
        for b, (index, images, labels) in enumerate(bar):
            images, targets = augment(images, labels, generator)
            if self.world.distributed:  # every rank drew the same global batch: train on this rank's share
                mine = self.world.shard(len(labels))
                index, images, targets, labels = index[mine], images[mine], targets[mine], labels[mine]
            images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            targets = targets.to(self.device, non_blocking=True)
            step = (epoch - 1) * len(batches) + b + 1
            loss, logits = self._step(images, targets, index, optimizer, scaler, teacher_cache, step)
            scheduler.step()
            hard = targets.argmax(1) if targets.dtype.is_floating_point else targets
            total_loss += loss.double() * len(labels)
            n_correct += correct(logits, hard)
            seen += len(labels)
        bar.close()
        self.world.broadcast_buffers(self.model, *([self.ema.module] if self.ema is not None else []))
        total_loss, n_correct, seen = self.world.sum(
            torch.stack([total_loss, n_correct, torch.tensor(float(seen), dtype=torch.float64, device=self.device)]))
        if not math.isfinite(total_loss.item()):
            raise FloatingPointError(f"epoch {epoch}: training loss is not finite; lower train.optimizer.lr")
        return total_loss.item() / max(seen.item(), 1), n_correct.item() / max(seen.item(), 1)
