"""The train / evaluate loop: seeded, resumable, device-agnostic (CUDA + AMP when present).

Every skill of the train params is wired here: augmentation (skillpack.data.augment), the
sampler (shuffled or class-balanced, skillpack.data.loader), the objective
(skillpack.train.losses, with class weights and logit offsets from the training labels),
optimizer / schedule / EMA (skillpack.train.optim), the head (linear or ArcFace), gradient
clipping, channels_last and mixed precision. Under torchrun the
same loop runs DistributedDataParallel, each rank on its share of every global batch
(skillpack.train.distributed says what is and is not equal to one process).

Two ways to feed the loop, one loop (`runtime.resident`, auto: resident on CUDA):
- host: the training set stays in host memory; each batch is gathered, augmented on the CPU
  (from a CPU epoch generator) and copied to the device.
- resident: the training set is uploaded once, as uint8, to the training device; the epoch's
  permutation and every per-sample augmentation draw come from a generator on that device,
  batches are gathered and augmented there (the same functions of skillpack.data.augment),
  and the loss and accuracy are summed there: the host reads the epoch's figures once, after
  its last step and the validation pass (batched large on a GPU). On a CPU the resident path
  draws from a CPU generator: its stream, and so its weights, are exactly the host path's
  (tests/test_resident.py); on a GPU the stream is CUDA's (Philox), so the results are
  equal in distribution, not bit for bit.
- `runtime.compile` (off | default | reduce-overhead | max-autotune): torch.compile of the
  training forward (reduce-overhead: with CUDA graphs); the compile runs in a warm-up step
  before the first epoch (weights and statistics restored after it), and its seconds are
  reported apart from the training seconds (FitResult.compile_seconds).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from skillpack.config import TrainParams
from skillpack.data.augment import BatchAugment
from skillpack.data.loader import TensorBatches, balanced_sample_weights, to_label_tensor, to_tensor_nchw
from skillpack.io import atomic_path, counted, discard_checkpoint, load_training_checkpoint
from skillpack.metrics import correct
from skillpack.train import distributed
from skillpack.train.device import resolve_amp, resolve_device, resolve_resident, use_deterministic_cpu_kernels
from skillpack.train.losses import Objective
from skillpack.train.models import ImageClassifier
from skillpack.train.optim import build_ema, build_optimizer, build_scheduler


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Evaluation batch by device type: the host path's 1024 on a CPU (a resident run on a CPU
# then evaluates exactly as the host path does), large on a GPU where launches dominate.
EVAL_BATCH = {"cpu": 1024, "cuda": 8192}


def config_hash(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class EpochResult:
    """train_loss/acc: running figures of the epoch (augmented batches, the training
    objective); train_eval_loss/acc: plain cross-entropy in eval mode on a fixed subset of the
    training images, comparable with val_loss/acc (what the overfitting check uses).
    step_losses: the training objective of every step of the epoch, in order (the mean over
    the global batch under torchrun), read from the device once, at the epoch's end; [] in a
    record restored from a checkpoint written before it existed."""
    epoch: int
    train_loss: float
    train_acc: float
    train_eval_loss: float
    train_eval_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    step_losses: list[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        """The epoch's scalar figures (train_log.csv, MLflow metrics): step_losses left out."""
        return {k: v for k, v in self.__dict__.items() if k != "step_losses"}

    def state(self) -> dict:
        """Every field, step_losses included (what a checkpoint keeps; EpochResult(**state))."""
        return {**self.as_dict(), "step_losses": list(self.step_losses)}


@dataclass
class FitResult:
    history: list[EpochResult] = field(default_factory=list)
    resumed_from_epoch: int = 0
    train_seconds: float = 0.0      # the epochs trained now (training + per-epoch validation)
    compile_seconds: float = 0.0    # runtime.compile's warm-up, before the first epoch (not in train_seconds)
    resident: bool = False          # the training set lived on the training device


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1024,
            device: torch.device | None = None, embeddings: bool = False,
            amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Logits (or penultimate embeddings) for uint8 N x C x H x W images, in order, in fp32
    or under `amp_dtype` autocast (the precision a model was trained in)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outs.append((model.embed(batch) if embeddings else model(batch)).float().cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0)


@torch.inference_mode()
def evaluate_on_device(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                       device: torch.device) -> torch.Tensor:
    """[mean cross-entropy, accuracy] of `model` on uint8 images (on any device), computed and
    left on `device`: no host synchronisation (nan, nan for no images). The logits are
    gathered in order as predict() gathers them, so the figures equal those of predict()'s logits."""
    if len(labels) == 0:
        return torch.full((2,), float("nan"), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    logits = torch.cat([model(images[start:start + batch_size].to(device, non_blocking=True)).float()
                        for start in range(0, len(images), batch_size)])
    model.train(was_training)
    labels = labels.to(device, non_blocking=True)
    loss = nn.functional.cross_entropy(logits, labels)
    return torch.stack([loss.double(), correct(logits, labels).double() / len(labels)])


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


@dataclass
class FitRun:
    """What one fit() works with: its batches and augmentation, its optimisation, and the
    validation and probe sets (x_val, y_val, x_probe, y_probe), all on the training device when
    the run is resident."""
    batches: TensorBatches
    augment: BatchAugment
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    teacher_cache: torch.Tensor | None
    evaluation: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    eval_batch: int
    resident: bool


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
        # what the run computes: runtime.resident / runtime.compile only decide how (TrainParams.result_dump)
        return config_hash(self.cfg.result_dump(), self.seed, self.data_hash)

    def _stateful(self, optimizer, scheduler, scaler, objective) -> dict:
        parts = {"model": self.model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler,
                 "objective": objective}
        if self.ema is not None:
            parts["ema"] = self.ema
        return parts

    def _save(self, epoch: int, parts: dict, history) -> None:
        if self.checkpoint is None or not self.world.main:
            return
        state = {"epoch": epoch, "fingerprint": self._fingerprint(), "history": [h.state() for h in history]}
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
        missing = [name for name in ("epoch", "history", *parts) if name not in state]
        if missing:
            discard_checkpoint(self.checkpoint, f"has no {', '.join(missing)} (written by another version?)")
            return 0, []
        saved = {name: copy.deepcopy(obj.state_dict()) for name, obj in parts.items()}
        try:
            for name, obj in parts.items():
                obj.load_state_dict(state[name])
            history = [EpochResult(**h) for h in state["history"]]
        except (KeyError, TypeError, ValueError, RuntimeError) as err:   # entries of the wrong shape or kind
            for name, obj in parts.items():
                obj.load_state_dict(saved[name])
            discard_checkpoint(self.checkpoint, f"does not fit this run ({type(err).__name__}: "
                                                f"{str(err).splitlines()[0][:160]})")
            return 0, []
        print(f"[train] resuming from {self.checkpoint} after {counted(state['epoch'], 'epoch')}")
        return state["epoch"], history

    def _teacher_cache(self, x_train: torch.Tensor, augment: BatchAugment) -> torch.Tensor | None:
        """Teacher logits computed once when the inputs never change (no augmentation)."""
        if self.teacher is None or not augment.is_identity:
            return None
        return predict(self.teacher, x_train, 1024, self.device).to(self.device)

    def fit(self, train_images: np.ndarray, train_labels: np.ndarray,
            val_images: np.ndarray, val_labels: np.ndarray) -> FitResult:
        torch.set_num_threads(distributed.threads_per_process(self.cfg.threads))
        use_deterministic_cpu_kernels(self.device)
        run = self._prepare(train_images, train_labels, val_images, val_labels)
        parts = self._stateful(run.optimizer, run.scheduler, run.scaler, run.objective)
        start_epoch, history = self._resume(parts)
        result = FitResult(history=history, resumed_from_epoch=start_epoch, resident=run.resident)
        if self.cfg.compile != "off" and start_epoch < self.cfg.epochs:
            result.compile_seconds = self._compile(run)
        t_start = time.perf_counter()
        for epoch in range(start_epoch + 1, self.cfg.epochs + 1):
            record = self._epoch(run, epoch)
            history.append(record)
            self._save(epoch, parts, history)
            if self.on_epoch_end and self.world.main:
                self.on_epoch_end(record, history, self._evaluated())
        result.train_seconds = time.perf_counter() - t_start
        if self.ema is not None:  # the EMA weights are the result
            self.model.load_state_dict(self.ema.module.state_dict())
        return result

    def _prepare(self, train_images, train_labels, val_images, val_labels) -> FitRun:
        """The tensors of the fit (uploaded once when resident), its batches and its optimisation."""
        cfg = self.cfg
        x_train, y_train = to_tensor_nchw(train_images), to_label_tensor(train_labels)
        x_val, y_val = to_tensor_nchw(val_images), to_label_tensor(val_labels)
        num_classes = self.model.head.weight.shape[0]
        augment = BatchAugment(cfg.augment, num_classes, x_train.shape[1])
        class_counts = torch.bincount(y_train, minlength=num_classes)   # the labels this run trains on
        if cfg.batch_size < self.world.size:
            raise ValueError(f"train.batch_size={cfg.batch_size} is the global batch: it needs at least one "
                             f"sample per process ({self.world.size})")
        # a fixed subset of the training images, as large as the validation set (at least 1,000)
        probe = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(self.seed))[
            :max(len(y_val), 1000)]
        x_probe, y_probe = x_train[probe], y_train[probe]
        resident = resolve_resident(cfg.resident, self.device, x_train.numel() + x_val.numel() + x_probe.numel())
        if resident:  # uploaded once; batches, augmentation and figures stay on the device
            x_train, y_train, x_val, y_val, x_probe, y_probe = (
                t.to(self.device) for t in (x_train, y_train, x_val, y_val, x_probe, y_probe))
        eval_batch = EVAL_BATCH.get(self.device.type, 1024) if resident else 1024
        batches = TensorBatches(x_train, y_train, cfg.batch_size, shuffle=True, drop_last=len(y_train) > cfg.batch_size,
                                sample_weights=balanced_sample_weights(y_train) if cfg.sampler == "balanced" else None)
        objective, optimizer, scheduler, scaler = self._optimisation(num_classes, len(batches), class_counts)
        return FitRun(batches, augment, objective, optimizer, scheduler, scaler, self._teacher_cache(x_train, augment),
                      (x_val, y_val, x_probe, y_probe), eval_batch, resident)

    def _optimisation(self, num_classes: int, steps_per_epoch: int, class_counts: torch.Tensor) -> tuple:
        """The objective, optimizer, schedule and gradient scaler of a fit; its EMA and its
        training forward (wrapped in DDP under torchrun) go on the trainer."""
        cfg = self.cfg
        objective = Objective(cfg.loss, num_classes, self.model.head.weight.shape[1], class_counts).to(self.device)
        extra = [{"params": list(objective.parameters()), "lr": cfg.loss.center_lr, "weight_decay": 0.0}] \
            if any(True for _ in objective.parameters()) else []
        optimizer = build_optimizer(self.model, cfg.optimizer, extra)
        scheduler = build_scheduler(optimizer, cfg.schedule, cfg.optimizer.lr, cfg.epochs, steps_per_epoch)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.ema = build_ema(self.model, cfg.ema)
        self.train_forward = self.world.wrap(TrainForward(self.model, objective))
        return objective, optimizer, scheduler, scaler

    def _evaluated(self) -> nn.Module:
        """The model validated and handed to on_epoch_end: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def _epoch(self, run: FitRun, epoch: int) -> EpochResult:
        """One epoch trained and validated; its figures are read from the device once, at its end."""
        t0 = time.perf_counter()
        # Per-epoch seeds: shuffling, augmentation and dropout depend only on (seed, epoch),
        # which is what makes a resumed run bit-identical to an uninterrupted one.
        generator = self._epoch_generator(self.seed * 100_003 + epoch, run.resident)
        torch.manual_seed(self.seed * 100_019 + epoch + 1_000_003 * self.world.rank)  # dropout: per rank
        train_figures, step_losses = self._train_epoch(run, generator, epoch)
        evaluated = self._evaluated()
        x_val, y_val, x_probe, y_probe = run.evaluation
        val = evaluate_on_device(evaluated, x_val, y_val, run.eval_batch, self.device)
        probed = len(y_probe) if self.cfg.probe == "every_epoch" or epoch == self.cfg.epochs else 0
        tr = evaluate_on_device(evaluated, x_probe[:probed], y_probe[:probed], run.eval_batch, self.device)  # nan: not probed
        # the one read of the epoch: everything above was queued without waiting for the device
        figures = torch.cat([train_figures, val, tr, step_losses]).tolist()
        (total_loss, n_correct, seen, val_loss, val_acc, tr_loss, tr_acc), steps = figures[:7], figures[7:]
        if not math.isfinite(total_loss):
            raise FloatingPointError(f"epoch {epoch}: training loss is not finite; lower train.optimizer.lr")
        return EpochResult(epoch, total_loss / max(seen, 1), n_correct / max(seen, 1), tr_loss, tr_acc,
                           val_loss, val_acc, run.optimizer.param_groups[0]["lr"], time.perf_counter() - t0, steps)

    def _epoch_generator(self, seed: int, resident: bool) -> torch.Generator:
        """The epoch's generator: on the CPU for the host path (and for a resident run on a CPU),
        on the GPU for a resident run there, so that no draw leaves the device."""
        device = self.device if resident and self.device.type == "cuda" else torch.device("cpu")
        return torch.Generator(device=device).manual_seed(seed)

    def _compile(self, run: FitRun) -> float:
        """torch.compile the training forward and run one warm-up forward + backward on a real
        batch shape (so that the compile happens here, timed apart from training); the weights,
        BatchNorm statistics and gradients the warm-up touched are restored."""
        mode = None if self.cfg.compile == "default" else self.cfg.compile
        t0 = time.perf_counter()
        self.train_forward = torch.compile(self.train_forward, mode=mode, dynamic=False)
        saved = {name: {k: v.detach().clone() for k, v in module.state_dict().items()}
                 for name, module in (("model", self.model), ("objective", run.objective))}
        rng = torch.get_rng_state()
        index, images, labels = next(iter(run.batches.epoch(self._epoch_generator(-1, run.resident))))
        images, targets = run.augment(images, labels, self._epoch_generator(-2, run.resident))
        if self.world.distributed:
            mine = self.world.shard(len(labels))
            index, images, targets = index[mine], images[mine], targets[mine]
        images = images.to(self.device).contiguous(memory_format=self.memory_format)
        for _ in range(3 if self.cfg.compile == "reduce-overhead" else 1):  # CUDA graphs record on a later call
            terms, _ = self._forward(images, targets.to(self.device), index, run.teacher_cache)
            terms["total"].backward()
        for p in [*self.model.parameters(), *run.objective.parameters()]:
            p.grad = None
        self.model.load_state_dict(saved["model"])
        run.objective.load_state_dict(saved["objective"])
        torch.set_rng_state(rng)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        if self.world.main:
            print(f"[train] runtime.compile={self.cfg.compile}: compiled in {seconds:.1f}s (not in the training time)")
        return seconds

    def _forward(self, images, targets, index, teacher_cache):
        if self.cfg.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            teacher_logits = None
            if self.teacher is not None:
                if teacher_cache is not None:
                    teacher_logits = teacher_cache[index.to(self.device)]
                else:
                    with torch.no_grad():
                        teacher_logits = self.teacher(images)
            return self.train_forward(images, targets, teacher_logits)

    def _step(self, run: FitRun, images, targets, index, step):
        terms, logits = self._forward(images, targets, index, run.teacher_cache)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(terms["total"]).backward()
        if self.cfg.grad_clip:
            run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, step=step)  # the global step drives timm's decay warm-up
        return terms["total"].detach(), logits.detach()

    def _train_epoch(self, run: FitRun, generator: torch.Generator, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch; returns [summed loss, correct, seen] over every rank and the loss of every
        step (float64, the global batch's mean under torchrun), both on the device, unread."""
        self.model.train()
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        n_correct = torch.zeros((), dtype=torch.float64, device=self.device)
        seen = 0
        step_losses = []  # device scalars, copies (a CUDA graph's output is overwritten by its next replay)
        bar = tqdm(run.batches.epoch(generator), total=len(run.batches), desc=f"epoch {epoch}/{self.cfg.epochs}",
                   disable=not (self.progress and self.world.main), mininterval=1.0, leave=False)
        for b, (index, images, labels) in enumerate(bar):
            batch_n = len(labels)  # the global batch
            images, targets = run.augment(images, labels, generator)
            if self.world.distributed:  # every rank drew the same global batch: train on this rank's share
                mine = self.world.shard(len(labels))
                index, images, targets, labels = index[mine], images[mine], targets[mine], labels[mine]
            images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            targets = targets.to(self.device, non_blocking=True)
            step = (epoch - 1) * len(run.batches) + b + 1
            loss, logits = self._step(run, images, targets, index, step)
            run.scheduler.step()
            hard = targets.argmax(1) if targets.dtype.is_floating_point else targets
            step_loss = loss.to(torch.float64, copy=True)  # what loss.double() computes, kept
            total_loss += step_loss * len(labels)
            n_correct += correct(logits, hard)
            seen += len(labels)
            # under torchrun: this rank's share of the global batch's mean (summed over the ranks below)
            step_losses.append(step_loss * (len(labels) / batch_n) if self.world.distributed else step_loss)
        bar.close()
        self.world.broadcast_buffers(self.model, *([self.ema.module] if self.ema is not None else []))
        seen = torch.full((), float(seen), dtype=torch.float64, device=self.device)  # a fill, not a host copy
        steps = torch.stack(step_losses) if step_losses else torch.zeros(0, dtype=torch.float64, device=self.device)
        return self.world.sum(torch.stack([total_loss, n_correct, seen])), self.world.sum(steps)
