"""Data: sources -> one prepared store (uint8 arrays per split + manifest) -> tensor batches.

The names below load on first use: `from skillpack.data.sourcedata import SourceError` (what
every stage's error handling needs) then imports neither the store's pandas nor
scikit-learn (1.2 s, python -X importtime, 2-core AMD EPYC)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["SOURCES", "SourceData", "SourceError", "load_source", "PreparedStore", "write_store", "fetch_source",
           "prepared_test_images", "images_file"]
_FROM_SOURCEDATA = ("SourceData", "SourceError")
_FROM_SOURCES = ("SOURCES", "load_source")
_FROM_STORE = ("PreparedStore", "write_store")


def __getattr__(name: str):
    if name in _FROM_SOURCEDATA:
        from skillpack.data import sourcedata as module
    elif name in _FROM_SOURCES:
        from skillpack.data import sources as module
    elif name in _FROM_STORE:
        from skillpack.data import store as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)


def fetch_source(name: str, dest: str | Path) -> None:
    """Download a public source with torchvision into `dest`, to use as data.root: Fashion-MNIST
    always (loading it would find the system's copy first), CIFAR-10 / CIFAR-100 unless `dest`
    already holds them."""
    from skillpack.data import sources

    if name == "fashion_mnist":
        sources.download_fashion_mnist(Path(dest))
    else:
        sources.load_source(name, download_root=str(dest))


def images_file(root: str | Path, split: str) -> Path:
    """Where the prepared store at `root` keeps a split's images (the one spelling of the name)."""
    return Path(root) / f"{split}_images.npy"


def prepared_test_images(root: str | Path):
    """The test images of the prepared store at `root`, read whole (uint8 N x H x W x C), or None
    where it has none: the inference service's drift reference. Needs numpy only, not
    PreparedStore's pandas, which the serving image does not have."""
    import numpy as np

    path = images_file(root, "test")
    return np.load(path) if path.is_file() else None
