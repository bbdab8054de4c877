"""SimCLR self-supervised pre-training (Chen et al. 2020) with lightly's parts: two augmented
views of every unlabelled image, an encoder (any timm backbone) + a projection head
(lightly's SimCLRProjectionHead), and the NT-Xent loss (lightly's NTXentLoss): each view's
positive is the other view of its image, its negatives the 2N - 2 other views of the batch.

The views suit small grayscale images (lightly's SimCLRTransform, set for them): a random
resized crop of the stored image (area pretrain.min_scale..1), a horizontal flip where the
data allow it (pretrain.hflip: false for digits), no Gaussian blur (it erases a 28 px image's
strokes); colour jitter and random grayscale only for 3-channel images (on grayscale, jitter
would be brightness and contrast alone, and SimCLR's point for colour - that crops alone can be
solved by colour histograms - does not arise). The views are resized to pretrain.input_size
inside the encoder, as ImageClassifier resizes.

The result is an encoder checkpoint that train.pretrained can name (skillpack.train.pretrained):
{"state_dict": the backbone's weights in timm's layout (no classifier), "architecture",
"weights_config": {input_size, mean, std of 0..1 pixels}, "pretraining": what made it}.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from skillpack import paths, tracking
from skillpack.config import OptimizerParams, Params, PretrainParams, ScheduleParams, flatten
from skillpack.io import UserError, atomic_path
from skillpack.train.engine import seed_everything
from skillpack.train.models import build_model, channel_stats, embedding_dim
from skillpack.train.optim import build_optimizer, build_scheduler

OnEpoch = Callable[[int, float, float], None]   # (epoch, mean NT-Xent loss, seconds)


class SimCLRModel(nn.Module):
    """Backbone + projection head on 0..1 float views: resized to `input_size`, normalised with
    `mean`, `std` (0..1 pixel units, per channel), as the fine-tuned classifier will see them."""

    def __init__(self, backbone: nn.Module, cfg: PretrainParams, in_chans: int, mean: list[float], std: list[float]):
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__()
        self.backbone, self.input_size = backbone, cfg.input_size
        dim = embedding_dim(backbone, in_chans, cfg.input_size)
        self.projection = SimCLRProjectionHead(dim, cfg.hidden_dim, cfg.projection_dim)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(views, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        return self.projection(self.backbone((x - self.mean) / self.std))


def view_transform(cfg: PretrainParams, image_size: int, channels: int):
    """lightly's SimCLRTransform for images of `image_size` px: PIL image -> [view, view]."""
    from lightly.transforms import SimCLRTransform

    colour = channels == 3
    return SimCLRTransform(input_size=image_size, min_scale=cfg.min_scale, hf_prob=0.5 if cfg.hflip else 0.0,
                           cj_prob=0.8 if colour else 0.0, random_gray_scale=0.2 if colour else 0.0,
                           gaussian_blur=0.0, normalize=None)


class TwoViews(torch.utils.data.Dataset):
    """uint8 N x H x W x C images -> (view, view), each C x H x W floats in 0..1."""

    def __init__(self, images: np.ndarray, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        image = self.images[i]
        pil = Image.fromarray(image[..., 0], "L") if image.shape[-1] == 1 else Image.fromarray(image, "RGB")
        first, second = self.transform(pil)
        return first, second


def nt_xent_loss(temperature: float) -> nn.Module:
    """NT-Xent (normalised temperature-scaled cross-entropy) of two batches of projections, each
    row of the first paired with the same row of the second: lightly's NTXentLoss."""
    from lightly.loss import NTXentLoss

    return NTXentLoss(temperature=temperature)


@dataclass
class PretrainResult:
    backbone: nn.Module
    weights_config: dict                 # input_size, mean, std (0..1 pixels)
    loss_by_epoch: list[float] = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0


def pretrain_encoder(images: np.ndarray, cfg: PretrainParams, seed: int, on_epoch: OnEpoch | None = None,
                     progress: bool = True) -> PretrainResult:
    """SimCLR on uint8 N x H x W x C `images` (no labels) for cfg.epochs, seeded by `seed`."""
    torch.set_num_threads(cfg.threads)
    seed_everything(seed)
    n, size, channels = len(images), images.shape[1], images.shape[-1]
    if n < 2:
        raise ValueError(f"pretrain: {n} image(s); SimCLR needs at least 2 (each view's negatives are the others)")
    mean, std = (np.asarray(v) / 255.0 for v in channel_stats(images))
    backbone = build_model(cfg.model, num_classes=0, in_chans=channels, img_size=cfg.input_size)
    model = SimCLRModel(backbone, cfg, channels, mean.tolist(), std.tolist())
    batches = torch.utils.data.DataLoader(TwoViews(images, view_transform(cfg, size, channels)),
                                          batch_size=min(cfg.batch_size, n), shuffle=True, drop_last=True,
                                          generator=torch.Generator().manual_seed(seed))
    optimizer = build_optimizer(model, OptimizerParams(name="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay))
    scheduler = build_scheduler(optimizer, ScheduleParams(name="cosine"), cfg.lr, cfg.epochs, len(batches))
    criterion, result = nt_xent_loss(cfg.temperature), PretrainResult(backbone, {
        "input_size": cfg.input_size, "mean": mean.tolist(), "std": std.tolist()}, images=n)
    t_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0, losses = time.perf_counter(), []
        model.train()
        for first, second in tqdm(batches, desc=f"simclr epoch {epoch}/{cfg.epochs}", disable=not progress,
                                  mininterval=1.0, leave=False):
            loss = criterion(model(first), model(second))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.detach())
        result.loss_by_epoch.append(float(torch.stack(losses).mean()))
        if not np.isfinite(result.loss_by_epoch[-1]):
            raise FloatingPointError(f"pretrain epoch {epoch}: the NT-Xent loss is not finite; lower pretrain.lr")
        if on_epoch:
            on_epoch(epoch, result.loss_by_epoch[-1], time.perf_counter() - t0)
    result.seconds = time.perf_counter() - t_start
    return result


def save_encoder(result: PretrainResult, cfg: PretrainParams, path: str | Path, seed: int) -> Path:
    """The encoder checkpoint train.pretrained loads (atomic write; torch.load(weights_only=True) reads it)."""
    state = {"state_dict": {k: v.detach().cpu() for k, v in result.backbone.state_dict().items()},
             "architecture": cfg.model, "weights_config": result.weights_config,
             "pretraining": {"method": "simclr", "seed": seed, "images": result.images, "seconds": result.seconds,
                             "loss_by_epoch": result.loss_by_epoch, **cfg.model_dump(exclude={"out", "images"})}}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


# ------------------------------------------------------------------ the tracked run

class PretrainDisabled(UserError, RuntimeError):
    pass


def require_enabled(params: Params) -> None:
    if not params.pretrain.enabled:
        raise PretrainDisabled("pretrain.enabled is false: set it in params.yaml, or pass pretrain.enabled=true")


def pretraining_images(params: Params, root: Path, seed: int) -> tuple[np.ndarray, str]:
    """The unlabelled images pretrain.images names (the prepared training split when null, its
    labels ignored), cut to a seeded subset of pretrain.max_images; and the data hash (the
    prepared store's, or '' for a folder)."""
    cfg, data = params.pretrain, params.data
    if cfg.images:
        from skillpack.data.imagefolder import unlabelled_images

        images, data_hash = unlabelled_images(cfg.images, data.image_size, data.channels, data.max_pixels,
                                              data.follow_external_symlinks), ""
    else:
        from skillpack.data import PreparedStore

        store = PreparedStore(root / paths.PREPARED)
        images, data_hash = np.asarray(store.arrays("train")[0]), store.data_hash()
    if cfg.max_images and cfg.max_images < len(images):
        images = images[np.sort(np.random.default_rng(seed).choice(len(images), cfg.max_images, replace=False))]
    return images, data_hash


def run_pretraining(params: Params, root: str | Path = ".", progress: bool = True) -> dict:
    """One pre-training as one MLflow run (stage tag `pretrain`): params pretrain.* and its budget
    (images, epochs; minutes once done), the NT-Xent loss per epoch; the encoder at pretrain.out."""
    require_enabled(params)
    cfg, root = params.pretrain, Path(root)
    images, data_hash = pretraining_images(params, root, params.seed)
    budget = {"budget.images": len(images), "budget.epochs": cfg.epochs}
    logged = {**flatten(params.pretrain, "pretrain"), **budget, "seed": params.seed}
    with tracking.stage_run("pretrain", params.registry.experiment, logged, data_hash) as run:
        def on_epoch(epoch: int, loss: float, seconds: float) -> None:
            tracking.log_metrics({"simclr_loss": loss, "epoch_seconds": seconds}, step=epoch)
            print(f"[pretrain] epoch {epoch}/{cfg.epochs}: NT-Xent {loss:.4f} ({seconds:.0f}s)", flush=True)

        result = pretrain_encoder(images, cfg, params.seed, on_epoch, progress)
        path = save_encoder(result, cfg, root / cfg.out, params.seed)
        tracking.log_params({"budget.minutes": round(result.seconds / 60, 2)})
        tracking.set_tags({"encoder": cfg.out})
    print(f"[pretrain] {len(images):,} images x {cfg.epochs} epochs in {result.seconds / 60:.1f} min -> {path} "
          f"(fine-tune: train.model={cfg.model} train.pretrained={cfg.out})")
    return {"encoder": str(path), "run_id": run.info.run_id, "images": len(images), "epochs": cfg.epochs,
            "minutes": result.seconds / 60, "loss_by_epoch": result.loss_by_epoch}
