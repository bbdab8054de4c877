"""Seeded, stratified splits and subsets (scikit-learn's train_test_split)."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from skillpack.data.sourcedata import SourceError, Split


def _take(split: Split, index: np.ndarray) -> Split:
    index = np.sort(index)
    return Split(split.images[index], split.labels[index], [split.ids[i] for i in index])


def _why_not_stratified(labels: np.ndarray, n_first: int, n_second: int) -> str | None:
    """Why a stratified split of `labels` into n_first + n_second cannot be made, or None."""
    counts = np.bincount(labels)
    present = np.flatnonzero(counts)
    if counts[present].min() < 2:
        return f"class {int(present[np.argmin(counts[present])])} has 1 sample (a stratified split needs 2 per class)"
    smaller = min(n_first, n_second)
    if smaller < len(present):
        return f"{smaller} samples on one side for {len(present)} classes (a stratified split needs one per class)"
    return None


def stratified_split(split: Split, second_fraction_or_size: float | int, seed: int,
                     what: str = "split") -> tuple[Split, Split]:
    """Return (first, second) with `second` holding the given fraction (or count) of the
    samples, stratified by label. Where that cannot be done the split is refused, naming `what`
    (the param that asked for it), never made unstratified in silence."""
    n = len(split.labels)
    index = np.arange(n)
    size = second_fraction_or_size
    n_second = int(round(size * n)) if isinstance(size, float) else int(size)
    if n_second <= 0:
        return split, _take(split, index[:0])
    if n_second >= n:
        return _take(split, index[:0]), split
    why = _why_not_stratified(split.labels, n - n_second, n_second)
    if why:
        raise SourceError(f"{what}: cannot split {n} samples into {n - n_second} + {n_second}: {why}")
    first, second = train_test_split(index, test_size=n_second, random_state=seed, stratify=split.labels)
    return _take(split, first), _take(split, second)


def stratified_subset(split: Split, size: int | None, seed: int, what: str = "subset") -> Split:
    if size is None or size >= len(split.labels):
        return split
    return stratified_split(split, int(size), seed, what)[1]
