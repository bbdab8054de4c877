"""Batch augmentation: one registry of named steps, each applied per sample to a whole batch.

Every step takes (images N x C x H x W, targets) and returns the same; images stay uint8 until
a step needs floats (rotation/resized crop resample, Mixup/CutMix blend). Where torchvision's
transforms.v2 fits per-sample semantics it is used (AutoAugment, RandAugment,
TrivialAugmentWide, RandomErasing per sample; MixUp and CutMix per batch, as defined). The
geometric and colour steps are vectorised here because a v2 transform applied to a batch
tensor draws ONE set of random parameters for the whole batch.

Randomness: crop/flip, rotation/resized crop, colour jitter and random erasing draw from the
epoch generator; the torchvision steps (policies, MixUp/CutMix's one lambda and box per batch)
draw from torch's global CPU RNG, which the engine seeds per epoch - both are reproducible and
resume exactly.

Any device, one implementation: the batch may be on the CPU or a GPU (the engine's resident
path), random numbers are drawn on the generator's device and used on the batch's
(skillpack.data.loader.draw_rand). Crop, flip, rotation/resized crop, brightness/contrast,
random erasing and MixUp/CutMix are whole-batch tensor ops with no host synchronisation; the
policies and hue jitter run per sample (a Python loop, slow on a GPU; hue reads its shifts once
per batch).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from skillpack.data.loader import draw_rand, random_crop, random_hflip

Step = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def _uniform(n, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return low + (high - low) * draw_rand(n, generator, device)


def random_affine(images: torch.Tensor, generator: torch.Generator, degrees: float = 0.0,
                  scale: tuple[float, float] | None = None,
                  ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Per-sample rotation (uniform in +-degrees) and random-resized crop (area fraction in
    `scale`, aspect in `ratio`) as one affine resample (bilinear, zero fill) of the batch."""
    n, device = images.shape[0], images.device
    angle = _uniform(n, -degrees, degrees, generator, device) * math.pi / 180
    if scale is not None:
        area = _uniform(n, scale[0], scale[1], generator, device)
        log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator, device)
        aspect = torch.exp(log_r)
        sx = torch.sqrt(area * aspect).clamp(max=1.0)   # crop width / image width
        sy = torch.sqrt(area / aspect).clamp(max=1.0)
        tx = (draw_rand(n, generator, device) * 2 - 1) * (1 - sx)
        ty = (draw_rand(n, generator, device) * 2 - 1) * (1 - sy)
    else:
        sx = sy = torch.ones(n, device=device)
        tx = ty = torch.zeros(n, device=device)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * sx, -sin * sy, tx], 1),
                         torch.stack([sin * sx, cos * sy, ty], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round_().clamp_(0, 255).to(images.dtype) if images.dtype == torch.uint8 else out


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor.view(-1, 1, 1, 1) * a + (1 - factor.view(-1, 1, 1, 1)) * b).clamp(0, 255)


def color_jitter(images: torch.Tensor, generator: torch.Generator, brightness: float = 0.0,
                 contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0) -> torch.Tensor:
    """Per-sample colour jitter with torchvision's definitions (factors uniform in
    [1-x, 1+x]; hue shift in [-hue, hue] turns). Saturation and hue act on colour only:
    on 1-channel images they are no-ops, which `build_augment` says when asked for."""
    n, c = images.shape[:2]
    dtype, device = images.dtype, images.device
    x = images.float()
    if brightness > 0:
        x = (x * _uniform(n, 1 - brightness, 1 + brightness, generator, device).view(-1, 1, 1, 1)).clamp(0, 255)
    if contrast > 0:
        gray_mean = (v2.functional.rgb_to_grayscale(x) if c == 3 else x).mean(dim=(1, 2, 3), keepdim=True)
        x = _blend(x, gray_mean.expand_as(x), _uniform(n, 1 - contrast, 1 + contrast, generator, device))
    if c == 3 and saturation > 0:
        gray = v2.functional.rgb_to_grayscale(x, num_output_channels=3)
        x = _blend(x, gray, _uniform(n, 1 - saturation, 1 + saturation, generator, device))
    if c == 3 and hue > 0:
        shifts = _uniform(n, -hue, hue, generator, device).tolist()  # one read per batch (a sync on a GPU)
        x = torch.stack([v2.functional.adjust_hue(img / 255, s) * 255 for img, s in zip(x, shifts)])
    return x.round().clamp(0, 255).to(dtype) if dtype == torch.uint8 else x


def per_sample(transform) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply a torchvision v2 transform to each image on its own (own random parameters)."""
    def apply(images: torch.Tensor) -> torch.Tensor:
        return torch.stack([transform(img) for img in images])
    return apply


def random_erasing(images: torch.Tensor, p: float, generator: torch.Generator | None = None,
                   scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3),
                   attempts: int = 10) -> torch.Tensor:
    """torchvision's RandomErasing (value 0), vectorised over the batch: each sample, with
    probability p, gets one rectangle of area fraction uniform in `scale` and log-uniform
    aspect in `ratio` zeroed, placed uniformly; as torchvision does, a sample tries up to
    `attempts` (area, aspect) draws and keeps the first whose rectangle fits (sides rounded
    half to even, like Python's round), and stays as it is when none fits."""
    n, _, h, w = images.shape
    device = images.device
    area = h * w * _uniform((n, attempts), scale[0], scale[1], generator, device)
    aspect = torch.exp(_uniform((n, attempts), math.log(ratio[0]), math.log(ratio[1]), generator, device))
    eh = torch.sqrt(area * aspect).round().long()
    ew = torch.sqrt(area / aspect).round().long()
    fits = (eh < h) & (ew < w)
    first = fits.int().argmax(1, keepdim=True)                    # the first attempt that fits
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
    top = (draw_rand(n, generator, device) * (h - eh + 1)).floor().long()   # uniform in 0..h-eh
    left = (draw_rand(n, generator, device) * (w - ew + 1)).floor().long()
    erase = (draw_rand(n, generator, device) < p) & fits.any(1)
    rows = torch.arange(h, device=device)[None, :]
    cols = torch.arange(w, device=device)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])     # N x H
    inside_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])   # N x W
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :]) & erase[:, None, None]
    return images.masked_fill(mask[:, None], 0)


# The policies are torchvision's; their options are the classes' own keyword arguments
# (params validation reads the accepted names from these signatures).
POLICIES = {"autoaugment": v2.AutoAugment, "randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide}
_NOT_OPTIONS = {"self", "interpolation", "fill"}


def policy_option_names(name: str) -> set[str]:
    import inspect

    return set(inspect.signature(POLICIES[name]).parameters) - _NOT_OPTIONS


def _policy(name: str, options: dict):
    if name not in POLICIES:
        raise ValueError(f"train.augment.policy: unknown {name!r}; choose {', '.join(POLICIES)}")
    options = dict(options)
    if name == "autoaugment" and "policy" in options:
        options["policy"] = v2.AutoAugmentPolicy(options["policy"])
    return POLICIES[name](**options)


def mix_step(num_classes: int, mixup_alpha: float, cutmix_alpha: float):
    """torchvision's MixUp / CutMix (one lambda per batch, as in the papers); with both on,
    each batch picks one at random. Returns soft targets (N x num_classes)."""
    choices = []
    if mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not choices:
        return None
    mixer = choices[0] if len(choices) == 1 else v2.RandomChoice(choices)

    def apply(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mixer(images.float(), targets)
    return apply


class BatchAugment:
    """The configured steps in a fixed order: geometry, crop/flip, policy, colour, erasing, mix."""

    def __init__(self, cfg, num_classes: int, channels: int):
        self.cfg, self.num_classes, self.channels = cfg, num_classes, channels
        self.policy = per_sample(_policy(cfg.policy, cfg.policy_options)) if cfg.policy else None
        self.mix = mix_step(num_classes, cfg.mixup_alpha, cfg.cutmix_alpha)
        cj = cfg.color_jitter
        if channels == 1 and (cj.saturation > 0 or cj.hue > 0):
            warnings.warn("train.augment.color_jitter: saturation and hue change colour only; on 1-channel "
                          "images they do nothing (brightness and contrast still apply)", stacklevel=2)

    @property
    def is_identity(self) -> bool:
        c = self.cfg
        cj = c.color_jitter
        return not (c.hflip or c.crop_padding or c.rotation or c.resized_crop_scale or self.policy
                    or cj.brightness or cj.contrast or (self.channels == 3 and (cj.saturation or cj.hue))
                    or c.random_erasing or self.mix)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator):
        c = self.cfg
        if c.rotation or c.resized_crop_scale:
            images = random_affine(images, generator, c.rotation, c.resized_crop_scale)
        images = random_crop(images, c.crop_padding, generator)
        if c.hflip:
            images = random_hflip(images, generator)
        if self.policy is not None:
            images = self.policy(images)
        cj = c.color_jitter
        if cj.brightness or cj.contrast or cj.saturation or cj.hue:
            images = color_jitter(images, generator, cj.brightness, cj.contrast, cj.saturation, cj.hue)
        if c.random_erasing > 0:
            images = random_erasing(images, c.random_erasing, generator)
        if self.mix is not None:
            images, targets = self.mix(images, targets)
        return images, targets
