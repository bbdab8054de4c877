"""Batches from in-memory uint8 tensors; per-sample crop and flip vectorised over the batch.

Why not torchvision's Dataset + DataLoader: per-sample PIL transforms in worker processes
cost ~1,450 img/s per worker here, and workers compete with the 2 training threads. Indexing
a uint8 tensor and drawing one crop offset and one flip per sample in a few tensor ops keeps
augmentation far below the model's step time. (A v2 transform applied to a batch tensor
would draw one crop for the whole batch, which is not per-sample augmentation.)

Any device: the tensors may live on the CPU or on a GPU (the engine's resident path uploads
the whole training set once). Random numbers are drawn on the generator's device and used on
the data's: a CPU generator gives the same stream whatever the data's device, and a CUDA
generator keeps the whole epoch on the GPU with no host synchronisation.
"""
from __future__ import annotations

import numpy as np
import torch


def to_tensor_nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x C array -> uint8 N x C x H x W tensor (a copy, kept in memory)."""
    return torch.from_numpy(np.array(np.asarray(images).transpose(0, 3, 1, 2), order="C"))


def to_label_tensor(labels: np.ndarray) -> torch.Tensor:
    """int labels -> int64 tensor (a copy: the prepared store's arrays are read-only memory
    maps, which torch would share and warn about)."""
    return torch.from_numpy(np.array(labels, dtype=np.int64))


def generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def draw_rand(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device, returned on `device`."""
    return torch.rand(shape, generator=generator, device=generator_device(generator)).to(device)


def draw_randint(high: int, shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=generator, device=generator_device(generator)).to(device)


def random_crop(batch: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to the original size at a per-sample offset."""
    if padding <= 0:
        return batch
    n, c, h, w = batch.shape
    device = batch.device
    padded = torch.nn.functional.pad(batch, (padding,) * 4)
    off_y = draw_randint(2 * padding + 1, (n,), generator, device)
    off_x = draw_randint(2 * padding + 1, (n,), generator, device)
    rows = (off_y[:, None] + torch.arange(h, device=device)[None, :])[:, None, :, None]
    cols = (off_x[:, None] + torch.arange(w, device=device)[None, :])[:, None, None, :]
    samples = torch.arange(n, device=device)[:, None, None, None]
    channels = torch.arange(c, device=device)[None, :, None, None]
    return padded[samples, channels, rows, cols]


def random_hflip(batch: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    flip = draw_rand(batch.shape[0], generator, batch.device) < p
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


def balanced_sample_weights(labels: torch.Tensor) -> torch.Tensor:
    """1 / (count of the sample's class) per sample, float64 on the labels' device: drawn with
    these weights, every class present is equally likely."""
    counts = torch.bincount(labels)
    return 1.0 / counts[labels].double()


class TensorBatches:
    """Shuffled (or ordered) mini-batches of (sample indices, uint8 images, int64 labels), on
    the device the tensors are on; the permutation is drawn on the generator's device.
    With `sample_weights`, an epoch is len(labels) draws with replacement, each sample drawn with
    probability proportional to its weight (what torch's WeightedRandomSampler draws: one
    torch.multinomial call, here on the epoch's generator, so a seed gives one order)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 shuffle: bool = False, drop_last: bool = False, sample_weights: torch.Tensor | None = None):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.sample_weights = sample_weights

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The epoch's sample indices, on the labels' device."""
        n, device, draw_on = len(self.labels), self.labels.device, generator_device(generator)
        if self.sample_weights is not None:
            return torch.multinomial(self.sample_weights.to(draw_on), n, replacement=True, generator=generator).to(device)
        if self.shuffle:
            return torch.randperm(n, generator=generator, device=draw_on).to(device)
        return torch.arange(n, device=device)

    def epoch(self, generator: torch.Generator | None = None):
        order = self.order(generator)
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield index, self.images[index], self.labels[index]
