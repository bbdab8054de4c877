"""Data sources, one registry: each turns its native format into uint8 NHWC arrays.

A source never drops a sample silently: whatever it cannot read goes to `quarantine`
(path + reason), so that found = prepared + quarantined.
"""
from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}


class SourceError(RuntimeError):
    pass


@dataclass
class Split:
    images: np.ndarray  # uint8, N x H x W x C
    labels: np.ndarray  # int64, N
    ids: list[str]


@dataclass
class SourceData:
    name: str
    classes: list[str]
    splits: dict[str, Split]  # "train" and "test"
    quarantine: list[dict] = field(default_factory=list)  # {"path", "split", "reason"}

    @property
    def n_found(self) -> int:
        return sum(len(s.labels) for s in self.splits.values()) + len(self.quarantine)


SOURCES: dict[str, Callable[..., SourceData]] = {}


def register_source(name: str):
    def deco(fn):
        SOURCES[name] = fn
        return fn
    return deco


def load_source(name: str, root: str | None = None, **options) -> SourceData:
    if name not in SOURCES:
        raise SourceError(f"data.source: unknown source {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name](root=root, **options)


# ---------------------------------------------------------------- Fashion-MNIST (IDX)

def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped). Written here because torchvision's reader
    insists on its own md5s, which Debian's recompressed .gz files do not match."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise SourceError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    expected = int(np.prod(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != expected:
        raise SourceError(f"{path}: IDX header says {tuple(dims)} but holds {data.size} bytes")
    return data.reshape(dims)


def _find_idx(root: Path, stem: str) -> Path | None:
    for candidate in (root / f"{stem}.gz", root / stem, root / "FashionMNIST" / "raw" / f"{stem}.gz",
                      root / "FashionMNIST" / "raw" / stem):
        if candidate.is_file():
            return candidate
    return None


def _download_fashion_mnist(root: Path) -> None:
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)
    FashionMNIST(str(root), train=False, download=True)


@register_source("fashion_mnist")
def fashion_mnist(root: str | None = None, download_root: str = "data/raw", **_) -> SourceData:
    stems = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
    label_stems = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}
    candidates = [Path(root)] if root else [FASHION_MNIST_SYSTEM_DIR, Path(download_root)]

    def located():
        for base in candidates:
            paths = {k: _find_idx(base, v) for k, v in {**stems, **{f"{k}_labels": v for k, v in label_stems.items()}}.items()}
            if all(paths.values()):
                return paths
        return None

    paths = located()
    if paths is None and not root:
        try:
            _download_fashion_mnist(Path(download_root))
        except Exception as err:  # network errors come in many types
            raise SourceError(
                f"Fashion-MNIST not found in {FASHION_MNIST_SYSTEM_DIR} (install the Debian package "
                f"'dataset-fashion-mnist') and torchvision's download into {download_root} failed: {err}"
            ) from err
        paths = located()
    if paths is None:
        raise SourceError(f"Fashion-MNIST IDX files not found under {candidates}")
    splits = {}
    for split in ("train", "test"):
        images = read_idx(paths[split])[..., None]
        labels = read_idx(paths[f"{split}_labels"]).astype(np.int64)
        if len(images) != len(labels):
            raise SourceError(f"{paths[split]}: {len(images)} images but {len(labels)} labels")
        ids = [f"fashion_mnist/{split}/{i:05d}" for i in range(len(labels))]
        splits[split] = Split(np.ascontiguousarray(images), labels, ids)
    return SourceData("fashion_mnist", list(FASHION_MNIST_CLASSES), splits)


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100

_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], meta="batches.meta", label_key="labels", names_key="label_names",
                    dataset="CIFAR10"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
                     label_key="fine_labels", names_key="fine_label_names", dataset="CIFAR100"),
}


def _unpickle(path: Path) -> dict:
    # The CIFAR python format is a pickle; only read files torchvision downloaded or you trust.
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")


def read_cifar(folder: Path, name: str) -> SourceData:
    spec = _CIFAR[name]
    classes = list(_unpickle(folder / spec["meta"])[spec["names_key"]])
    splits = {}
    for split in ("train", "test"):
        images, labels = [], []
        for batch in spec[split]:
            entry = _unpickle(folder / batch)
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.extend(entry[spec["label_key"]])
        arr = np.ascontiguousarray(np.concatenate(images))
        ids = [f"{name}/{split}/{i:05d}" for i in range(len(arr))]
        splits[split] = Split(arr, np.asarray(labels, dtype=np.int64), ids)
    return SourceData(name, classes, splits)


def _cifar_source(name: str):
    def load(root: str | None = None, download_root: str = "data/raw", **_) -> SourceData:
        base = Path(root or download_root)
        folder = base / _CIFAR[name]["folder"]
        if not folder.is_dir():
            import torchvision.datasets as tvd

            try:
                getattr(tvd, _CIFAR[name]["dataset"])(str(base), train=True, download=True)
            except Exception as err:
                raise SourceError(f"{name}: {folder} missing and torchvision's download failed: {err}") from err
        return read_cifar(folder, name)

    return load


register_source("cifar10")(_cifar_source("cifar10"))
register_source("cifar100")(_cifar_source("cifar100"))


# ---------------------------------------------------------------- ImageFolder

class ImageTooLarge(ValueError):
    pass


def decode_image(source, size: int, channels: int, max_pixels: int | None = None) -> np.ndarray:
    """The one decoding every image goes through, in prepare and in the inference service: a
    path or a binary file object -> uint8 size x size x channels (first frame, converted to
    grey or RGB, resized bilinear). `max_pixels` refuses larger images from their header,
    before any pixel is decoded (decompression bombs)."""
    from PIL import Image

    with Image.open(source) as img:
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageTooLarge(f"{width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}")
        img.seek(0)  # first frame of an animated gif
        img = img.convert("L" if channels == 1 else "RGB")
        img = img.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def _read_image(path: Path, size: int, channels: int) -> np.ndarray:
    return decode_image(path, size, channels)


def _scan_folder(folder: Path, classes: list[str], size: int, channels: int, split: str, quarantine: list):
    images, labels, ids = [], [], []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
            rel = str(path.relative_to(folder.parent))
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                quarantine.append({"path": rel, "split": split, "reason": f"unsupported extension {path.suffix!r}"})
                continue
            try:
                images.append(_read_image(path, size, channels))
            except Exception as err:  # PIL raises several types for a bad file
                quarantine.append({"path": rel, "split": split, "reason": f"unreadable image: {type(err).__name__}: {err}"})
                continue
            labels.append(label)
            ids.append(rel)
    shape = (0, size, size, channels)
    arr = np.stack(images) if images else np.zeros(shape, dtype=np.uint8)
    return Split(arr, np.asarray(labels, dtype=np.int64), ids)


@register_source("imagefolder")
def imagefolder(root: str | None = None, image_size: int = 28, channels: int = 1,
                test_fraction: float = 0.2, seed: int = 0, **_) -> SourceData:
    """`root/<class>/<image>`, or `root/train/<class>/...` + `root/test/<class>/...`.
    Without train/test folders a seeded stratified test split of `test_fraction` is carved."""
    if not root:
        raise SourceError("data.root: the imagefolder source needs a folder of class sub-folders")
    base = Path(root)
    if not base.is_dir():
        raise SourceError(f"data.root: {base} is not a folder")
    has_splits = (base / "train").is_dir() and (base / "test").is_dir()
    class_parent = base / "train" if has_splits else base
    classes = sorted(p.name for p in class_parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise SourceError(f"data.root: {class_parent} has no class sub-folders")
    quarantine: list[dict] = []
    if has_splits:
        splits = {s: _scan_folder(base / s, classes, image_size, channels, s, quarantine) for s in ("train", "test")}
    else:
        from skillpack.data.split import stratified_split

        everything = _scan_folder(base, classes, image_size, channels, "all", quarantine)
        train, test = stratified_split(everything, test_fraction, seed)
        splits = {"train": train, "test": test}
    return SourceData("imagefolder", classes, splits, quarantine)
