"""Test-time augmentation (TTA) of uint8 N x H x W x C batches, numpy only (the ONNX prediction
path of `skillpack predict` imports no torch): the class probabilities averaged over the image
and its mirror image, each as it is and shifted by `crop_padding` pixels toward each of the four
corners - the corner crops of the zero-padded image, as training's random crop draws them
(train.augment.crop_padding); with crop_padding 0 only the flip remains.

What it guarantees: an image and its mirror image have the same views (each is shifted the
same ways as the other), so TTA gives them the same probabilities, up to float rounding; a
horizontally symmetric image with crop_padding 0 gets exactly the plain prediction's."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def shifted(pixels: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The crop at offset (dy, dx) of the batch zero-padded on every side: the content moves
    by (-dy, -dx) pixels, the uncovered border is 0."""
    _, h, w, _ = pixels.shape
    out = np.zeros_like(pixels)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)] = \
        pixels[:, max(dy, 0):h - max(-dy, 0), max(dx, 0):w - max(-dx, 0)]
    return out


def tta_shifts(crop_padding: int) -> list[tuple[int, int]]:
    p = crop_padding
    return [(0, 0)] + ([(dy, dx) for dy in (-p, p) for dx in (-p, p)] if p > 0 else [])


def tta_views(pixels: np.ndarray, crop_padding: int) -> np.ndarray:
    """V x N x H x W x C: the batch and its mirror image, each at every shift of tta_shifts."""
    mirrored = pixels[:, :, ::-1]
    return np.stack([shifted(image, dy, dx) for image in (pixels, mirrored)
                     for dy, dx in tta_shifts(crop_padding)])


def tta_probabilities(probabilities: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, crop_padding: int,
                      batch_size: int = 256) -> np.ndarray:
    """N x K: the mean over tta_views of `probabilities` (uint8 N x H x W x C -> N x K class
    probabilities), `batch_size` images (times the number of views) per call."""
    out = []
    for start in range(0, len(pixels), batch_size):
        views = tta_views(np.asarray(pixels[start:start + batch_size]), crop_padding)
        n_views, n = views.shape[:2]
        probs = probabilities(views.reshape(n_views * n, *views.shape[2:]))
        out.append(probs.reshape(n_views, n, -1).mean(axis=0))
    return np.concatenate(out)
