"""The prepared store: one folder, uint8 arrays per split and a manifest.

    data/prepared/
      {train,val,test}_images.npy   uint8 N x H x W x C (memory-mapped on read)
      {train,val,test}_labels.npy   int64 N
      manifest.csv                  id, split, label, label_name, sha256, height, width, channels, source
      classes.json                  the class set, in label order (empty classes included)
      quarantine.csv                path, split, reason: everything the source could not read
      summary.json                  counts: found = prepared + quarantined
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from skillpack.data.sources import SourceData, Split
from skillpack.data.split import stratified_split, stratified_subset
from skillpack.io import atomic_path, file_sha256, write_json

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["id", "split", "label", "label_name", "sha256", "height", "width", "channels", "source"]


def _image_hashes(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(img.tobytes()).hexdigest() for img in images]


def _manifest_rows(split_name: str, split: Split, classes: list[str], source: str) -> pd.DataFrame:
    n, h, w, c = split.images.shape
    return pd.DataFrame({
        "id": split.ids,
        "split": split_name,
        "label": split.labels,
        "label_name": [classes[i] if 0 <= i < len(classes) else f"<unknown {i}>" for i in split.labels],
        "sha256": _image_hashes(split.images),
        "height": h, "width": w, "channels": c,
        "source": source,
    }, columns=MANIFEST_COLUMNS)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def carve_splits(data: SourceData, val_fraction: float, seed: int,
                 max_train: int | None = None, max_test: int | None = None) -> dict[str, Split]:
    train = stratified_subset(data.splits["train"], max_train, seed)
    test = stratified_subset(data.splits["test"], max_test, seed)
    train, val = stratified_split(train, float(val_fraction), seed)
    return {"train": train, "val": val, "test": test}


def prepare_splits(data_params, seed: int) -> tuple[SourceData, dict[str, Split]]:
    """The prepare stage's reading of `params.data` (a DataParams): the source and its train /
    val / test splits. Benchmarks that need other data settings than the store's call this
    too, so there is one way to turn params into splits."""
    from skillpack.data.sources import load_source

    d = data_params
    source = load_source(d.source, root=d.root, image_size=d.image_size, channels=d.channels, seed=seed)
    return source, carve_splits(source, d.val_fraction, seed, d.max_train, d.max_test)


def write_store(out: str | Path, data: SourceData, splits: dict[str, Split]) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for name in SPLITS:
        _save_npy(out / f"{name}_images.npy", splits[name].images)
        _save_npy(out / f"{name}_labels.npy", splits[name].labels.astype(np.int64))
        frames.append(_manifest_rows(name, splits[name], data.classes, data.name))
    manifest = pd.concat(frames, ignore_index=True)
    with atomic_path(out / "manifest.csv") as tmp:
        manifest.to_csv(tmp, index=False)
    with atomic_path(out / "quarantine.csv") as tmp:
        pd.DataFrame(data.quarantine, columns=["path", "split", "reason"]).to_csv(tmp, index=False)
    write_json(out / "classes.json", data.classes)
    summary = {
        "source": data.name,
        "found": data.n_found,
        "prepared": int(len(manifest)),
        "quarantined": len(data.quarantine),
        "subset_excluded": data.n_found - len(data.quarantine) - int(len(manifest)),
        "splits": {name: int(len(splits[name].labels)) for name in SPLITS},
        "num_classes": len(data.classes),
        "image_shape": list(splits["train"].images.shape[1:]),
    }
    write_json(out / "summary.json", summary)
    return summary


@dataclass
class PreparedStore:
    """Read side of the store; arrays are memory-mapped."""
    root: Path

    def __init__(self, root: str | Path = "data/prepared"):
        self.root = Path(root)
        if not (self.root / "manifest.csv").is_file():
            raise FileNotFoundError(f"{self.root}/manifest.csv: no prepared store here (run `dvc repro prepare`)")

    @property
    def classes(self) -> list[str]:
        return json.loads((self.root / "classes.json").read_text())

    @property
    def summary(self) -> dict:
        return json.loads((self.root / "summary.json").read_text())

    def manifest(self) -> pd.DataFrame:
        return pd.read_csv(self.root / "manifest.csv", dtype={"id": str, "sha256": str})

    def quarantine(self) -> pd.DataFrame:
        return pd.read_csv(self.root / "quarantine.csv")

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        images = np.load(self.root / f"{split}_images.npy", mmap_mode="r")
        labels = np.load(self.root / f"{split}_labels.npy")
        return images, labels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.summary["image_shape"]
        return h, w, c

    def data_hash(self) -> str:
        """Identity of the data version: the manifest's hash (it holds every image's sha256)."""
        return file_sha256(self.root / "manifest.csv")[:16]
