"""Seeded, stratified splits and subsets (scikit-learn's train_test_split)."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from skillpack.data.sources import Split


def _take(split: Split, index: np.ndarray) -> Split:
    index = np.sort(index)
    return Split(split.images[index], split.labels[index], [split.ids[i] for i in index])


def _can_stratify(labels: np.ndarray, n_second: int) -> bool:
    counts = np.bincount(labels) if len(labels) else np.array([])
    present = counts[counts > 0]
    return len(present) > 0 and present.min() >= 2 and n_second >= len(present)


def stratified_split(split: Split, second_fraction_or_size: float | int, seed: int) -> tuple[Split, Split]:
    """Return (first, second) with `second` holding the given fraction (or count) of the
    samples, stratified by label where every class has at least two samples."""
    n = len(split.labels)
    index = np.arange(n)
    size = second_fraction_or_size
    n_second = int(round(size * n)) if isinstance(size, float) else int(size)
    if n_second <= 0:
        return split, _take(split, index[:0])
    if n_second >= n:
        return _take(split, index[:0]), split
    stratify = split.labels if _can_stratify(split.labels, min(n_second, n - n_second)) else None
    first, second = train_test_split(index, test_size=n_second, random_state=seed, stratify=stratify)
    return _take(split, first), _take(split, second)


def stratified_subset(split: Split, size: int | None, seed: int) -> Split:
    if size is None or size >= len(split.labels):
        return split
    return stratified_split(split, int(size), seed)[1]
