import numpy as np
import pytest

from skillpack.data.sourcedata import Split
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


def test_carve_uses_given_val_and_test_and_carves_what_is_missing():
    from skillpack.data.sourcedata import SourceData
    from skillpack.data.store import carve_splits

    whole = _split(1000)
    only_train = SourceData("t", [str(i) for i in range(10)], {"train": whole})
    carved = carve_splits(only_train, 0.1, seed=0, test_fraction=0.3)
    assert [len(carved[s].labels) for s in ("train", "val", "test")] == [630, 70, 300]
    assert not set(carved["test"].ids) & (set(carved["train"].ids) | set(carved["val"].ids))
    given_val, given_test = _split(50, seed=1), _split(80, seed=2)
    given = SourceData("t", only_train.classes, {"train": whole, "val": given_val, "test": given_test})
    carved = carve_splits(given, 0.1, seed=0, test_fraction=0.3, max_test=40)
    assert carved["val"] is given_val and len(carved["train"].labels) == 1000 and len(carved["test"].labels) == 40
    pooled = carve_splits(given, 0.1, seed=0, test_fraction=0.2, resplit=True)
    assert [len(pooled[s].labels) for s in ("train", "val", "test")] == [814, 90, 226]


@pytest.mark.fault('fewer validation images than classes: refused naming data.val_fraction', guards=('traceback',))
def test_fewer_validation_samples_than_classes_is_refused_naming_the_param():
    import pytest

    from skillpack.data.sourcedata import SourceData, SourceError
    from skillpack.data.store import carve_splits

    data = SourceData("t", [str(i) for i in range(10)], {"train": _split(60), "test": _split(40, seed=1)})
    with pytest.raises(SourceError, match=r"data\.val_fraction: .*5 samples on one side for 10 classes"):
        carve_splits(data, 0.09, seed=0)   # 5 validation images for 10 classes
    assert len(carve_splits(data, 0.2, seed=0)["val"].labels) == 12


@pytest.mark.fault('a class with one image: refused, never split unstratified in silence', guards=())
def test_a_class_with_one_sample_is_refused_not_split_unstratified():
    import pytest

    from skillpack.data.sourcedata import SourceError

    data = _split(200, classes=3)
    data.labels[:] = np.r_[np.zeros(100), np.ones(99), [2]].astype(data.labels.dtype)
    with pytest.raises(SourceError, match=r"data\.val_fraction: .*class 2 has 1 sample"):
        stratified_split(data, 0.1, seed=0, what="data.val_fraction")
