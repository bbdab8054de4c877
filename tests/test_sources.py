"""Data sources: real Fashion-MNIST, the CIFAR reader on files in the real format, ImageFolder."""
import gzip
import pickle

import numpy as np
import pytest
from PIL import Image

from skillpack.data import sources
from skillpack.data.sourcedata import SourceError
from skillpack.data.sources import load_source, read_cifar, read_idx
from skillpack.data.store import PreparedStore, carve_splits, write_store


def test_fashion_mnist_from_debian_package(fmnist):
    assert fmnist.splits["train"].images.shape == (60000, 28, 28, 1)
    assert fmnist.splits["test"].images.shape == (10000, 28, 28, 1)
    assert fmnist.splits["train"].images.dtype == np.uint8
    assert np.bincount(fmnist.splits["test"].labels).tolist() == [1000] * 10
    assert fmnist.classes[9] == "Ankle boot"


def test_idx_reader_rejects_a_wrong_header(tmp_path):
    bad = tmp_path / "bad-idx.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\x00\x00\x0d\x01" + b"\x00" * 8)  # float IDX, not unsigned byte
    with pytest.raises(SourceError, match="bad-idx.gz"):
        read_idx(bad)


def test_fashion_mnist_missing_everywhere_names_both(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")

    def no_network(root):  # the real downloader cannot reach its servers here either
        raise OSError("network unreachable")

    monkeypatch.setattr(sources, "download_fashion_mnist", no_network)
    with pytest.raises(SourceError) as err:
        load_source("fashion_mnist", download_root=str(tmp_path / "raw"))
    message = str(err.value)
    assert "dataset-fashion-mnist" in message and "torchvision" in message and "network unreachable" in message


def _write_cifar10(folder, n_per_batch=4):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"class{i}" for i in range(10)]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names, "num_cases_per_batch": n_per_batch}, fh)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = {}
    for b, name in enumerate(batches):
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [(b + i) % 10 for i in range(n_per_batch)]
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": labels, "batch_label": name.encode()}, fh)
        written[name] = (data, labels)
    return names, written


def test_cifar10_reader_on_the_real_format(tmp_path):
    names, written = _write_cifar10(tmp_path / "cifar-10-batches-py")
    data = read_cifar(tmp_path / "cifar-10-batches-py", "cifar10")
    assert data.classes == names
    train = data.splits["train"]
    assert train.images.shape == (20, 32, 32, 3)
    first, labels = written["data_batch_1"]
    # CIFAR rows are R plane, G plane, B plane: pixel (0, 0) of image 0 is (row[0], row[1024], row[2048])
    assert tuple(train.images[0, 0, 0]) == (first[0, 0], first[0, 1024], first[0, 2048])
    assert train.labels[:4].tolist() == labels
    assert data.splits["test"].images.shape == (4, 32, 32, 3)


def test_cifar100_reader_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    with open(folder / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": []}, fh)
    for split in ("train", "test"):
        with open(folder / split, "wb") as fh:
            pickle.dump({"data": np.zeros((3, 3072), np.uint8), "fine_labels": [5, 99, 0], "coarse_labels": [1, 2, 3]}, fh)
    data = load_source("cifar100", root=str(tmp_path))
    assert data.splits["train"].labels.tolist() == [5, 99, 0]
    assert len(data.classes) == 100


def make_image_folder(root, corrupt=True, seed=0):
    """Two classes, every supported format and several modes and sizes, plus bad files."""
    rng = np.random.default_rng(seed)
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    formats = [("a.jpg", "RGB", (40, 30)), ("b.png", "RGBA", (28, 28)), ("c.webp", "RGB", (64, 64)),
               ("d.bmp", "L", (20, 50)), ("e.gif", "P", (33, 33)), ("f.png", "I;16", (28, 28))]
    for cls in ("cat", "dog"):
        for k in range(3):
            for name, mode, size in formats:
                arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
                img = Image.fromarray(arr).convert(mode)
                img.save(root / cls / f"{k}{name}")
    if corrupt:
        (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
        (root / "dog" / "notes.txt").write_text("not an image")
    return 2 * 3 * len(formats)


def test_imagefolder_reads_every_format_and_quarantines_bad_files(tmp_path):
    n_good = make_image_folder(tmp_path / "imgs")
    data = load_source("imagefolder", root=str(tmp_path / "imgs"), image_size=16, channels=3, seed=0)
    assert data.classes == ["cat", "dog"]
    prepared = sum(len(s.labels) for s in data.splits.values())
    assert prepared == n_good
    reasons = {q["path"]: q["reason"] for q in data.quarantine}
    assert set(reasons) == {"cat/broken.jpg"}
    assert "unreadable image" in reasons["cat/broken.jpg"]
    assert data.ignored == [{"path": "dog/notes.txt", "split": "all", "reason": "not an image extension: '.txt'"}]
    assert data.n_found == prepared + len(data.quarantine) + len(data.ignored)
    assert data.splits["train"].images.shape[1:] == (16, 16, 3)


def test_imagefolder_grayscale_and_counts_in_the_store(tmp_path):
    make_image_folder(tmp_path / "imgs")
    data = load_source("imagefolder", root=str(tmp_path / "imgs"), image_size=12, channels=1, seed=0)
    splits = carve_splits(data, 0.2, seed=0)
    summary = write_store(tmp_path / "prepared", data, splits)
    store = PreparedStore(tmp_path / "prepared")
    assert store.arrays("train")[0].shape[1:] == (12, 12, 1)
    assert summary["found"] == summary["prepared"] + summary["quarantined"] + summary["ignored"] == 38
    assert len(store.quarantine()) == 1 and len(store.ignored()) == 1
    assert summary["splits"]["test"] == round(0.2 * 36)  # data.test_fraction's default
    assert set(store.manifest().columns) >= {"id", "split", "label", "label_name", "sha256", "height", "width",
                                              "channels", "source"}


def test_imagefolder_with_no_classes_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no class sub-folders"):
        load_source("imagefolder", root=str(tmp_path / "empty"))


def _pickle_with_numpy1_names(obj) -> bytes:
    """A protocol-2 pickle naming numpy's core as numpy 1 (and the official CIFAR files) do."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core.", b"numpy.core.")


def test_cifar_reader_reads_protocol_2_files_with_numpy1_names(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(_pickle_with_numpy1_names({"label_names": [f"c{i}" for i in range(10)]}))
    data = np.arange(2 * 3072, dtype=np.uint32).astype(np.uint8).reshape(2, 3072)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(_pickle_with_numpy1_names({"data": data, "labels": [3, 7], "batch_label": b"x"}))
    assert b"numpy.core.multiarray" in (folder / "test_batch").read_bytes()
    read = read_cifar(folder, "cifar10")
    assert read.splits["test"].labels.tolist() == [3, 7]
    assert tuple(read.splits["test"].images[1, 0, 0]) == (data[1, 0], data[1, 1024], data[1, 2048])


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_cifar_reader_refuses_a_pickle_that_would_run_code(tmp_path, monkeypatch):
    """data.root is the user's: a file there must not run code when it is read."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10(folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": _Payload(), "labels": []}))
    with pytest.raises(SourceError, match=r"data_batch_3: not a CIFAR python file .*refuses posix\.system"):
        load_source("cifar10", root=str(tmp_path))
    assert not (tmp_path / "pwned").exists()
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}))
    with pytest.raises(SourceError, match="not a uint8 N x 3072 array"):
        load_source("cifar10", root=str(tmp_path))
