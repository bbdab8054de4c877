import numpy as np

from skillpack.data.sources import Split
from skillpack.data.split import stratified_split, stratified_subset


def _split(n=1000, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)
    return Split(images, labels, [f"id{i}" for i in range(n)])


def test_val_split_is_stratified_disjoint_and_seeded():
    data = _split()
    train, val = stratified_split(data, 0.1, seed=3)
    assert len(val.labels) == 100 and len(train.labels) == 900
    assert not set(train.ids) & set(val.ids)
    overall = np.bincount(data.labels, minlength=10) / len(data.labels)
    in_val = np.bincount(val.labels, minlength=10) / len(val.labels)
    assert np.abs(overall - in_val).max() < 0.02
    again_train, again_val = stratified_split(data, 0.1, seed=3)
    assert again_val.ids == val.ids
    other = stratified_split(data, 0.1, seed=4)[1]
    assert other.ids != val.ids


def test_subset_keeps_class_proportions():
    data = _split(5000)
    sub = stratified_subset(data, 500, seed=0)
    assert len(sub.labels) == 500
    assert np.abs(np.bincount(sub.labels, minlength=10) / 500 - np.bincount(data.labels) / 5000).max() < 0.01
