"""The prepared store: one folder, uint8 arrays per split and a manifest.

    data/prepared/
      {train,val,test}_images.npy   uint8 N x H x W x C (memory-mapped on read)
      {train,val,test}_labels.npy   int64 N
      manifest.csv                  id, split, label, label_name, sha256, height, width, channels, source
      classes.json                  the class set, in label order (empty classes included)
      quarantine.csv                path, split, reason: every image the source could not read
      ignored.csv                   path, split, reason: every other entry it found and did not read
      summary.json                  counts: found = prepared + quarantined + ignored + subset_excluded;
                                    the source's layout, empty classes, classes in one split only
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from skillpack.data import images_file
from skillpack.data.sourcedata import SourceData, Split
from skillpack.io import atomic_folder, atomic_path, file_sha256, write_json

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


def _concat(splits: list[Split]) -> Split:
    return Split(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]),
                 [i for s in splits for i in s.ids])


def carve_splits(data: SourceData, val_fraction: float, seed: int,
                 max_train: int | None = None, max_test: int | None = None,
                 test_fraction: float = 0.2, resplit: bool = False) -> dict[str, Split]:
    """train / val / test from the source's splits. A test split the source has is used as
    such, else a seeded stratified `test_fraction` of train is held out; then `max_train` /
    `max_test` subsets; a val split the source has is used as such, else `val_fraction` of
    train is carved. `resplit` pools all of the source's splits first and carves both."""
    from skillpack.data.split import stratified_split, stratified_subset  # scikit-learn: not to read a store

    given = dict(data.splits)
    if resplit:
        given = {"train": _concat([given[s] for s in ("train", "val", "test") if s in given])}
    train = given["train"]
    if "test" in given:
        test = given["test"]
    else:
        train, test = stratified_split(train, float(test_fraction), seed, "data.test_fraction")
    train = stratified_subset(train, max_train, seed, "data.max_train")
    test = stratified_subset(test, max_test, seed, "data.max_test")
    if "val" in given:
        val = given["val"]
    else:
        train, val = stratified_split(train, float(val_fraction), seed, "data.val_fraction")
    return {"train": train, "val": val, "test": test}


def prepare_splits(data_params, seed: int) -> tuple[SourceData, dict[str, Split]]:
    """The prepare stage's reading of `params.data` (a DataParams): the source and its train /
    val / test splits. Benchmarks that need other data settings than the store's call this
    too, so there is one way to turn params into splits."""
    from skillpack.data.sources import load_source

    d = data_params
    source = load_source(d.source, root=d.root, image_size=d.image_size, channels=d.channels, seed=seed,
                         max_pixels=d.max_pixels, follow_external_symlinks=d.follow_external_symlinks)
    return source, carve_splits(source, d.val_fraction, seed, d.max_train, d.max_test,
                                test_fraction=d.test_fraction, resplit=d.resplit)


def write_store(out: str | Path, data: SourceData, splits: dict[str, Split]) -> dict:
    """The prepared store at `out`, built in a temp folder that replaces the old store in one
    step: a prepare that fails half-way leaves the previous store whole (never new arrays
    beside an old manifest)."""
    with atomic_folder(out) as tmp:
        return _write_store_files(tmp, data, splits)


def _write_store_files(out: Path, data: SourceData, splits: dict[str, Split]) -> dict:
    frames = []
    for name in SPLITS:
        _save_npy(images_file(out, name), splits[name].images)
        _save_npy(out / f"{name}_labels.npy", splits[name].labels.astype(np.int64))
        frames.append(_manifest_rows(name, splits[name], data.classes, data.name))
    manifest = pd.concat(frames, ignore_index=True)
    with atomic_path(out / "manifest.csv") as tmp:
        manifest.to_csv(tmp, index=False)
    for name, rows in (("quarantine.csv", data.quarantine), ("ignored.csv", data.ignored)):
        with atomic_path(out / name) as tmp:
            pd.DataFrame(rows, columns=["path", "split", "reason"]).to_csv(tmp, index=False)
    write_json(out / "classes.json", data.classes)
    prepared = {name: np.bincount(splits[name].labels, minlength=len(data.classes)) for name in SPLITS}
    summary = {
        "source": data.name,
        "found": data.n_found,
        "prepared": int(len(manifest)),
        "quarantined": len(data.quarantine),
        "ignored": len(data.ignored),
        "subset_excluded": data.n_found - len(data.quarantine) - len(data.ignored) - int(len(manifest)),
        "splits": {name: int(len(splits[name].labels)) for name in SPLITS},
        "num_classes": len(data.classes),
        "image_shape": list(splits["train"].images.shape[1:]),
        "ignored_reasons": ignored_reasons(data.ignored),
        # classes with no prepared image in any split, by folder (class) name
        "empty_classes": [c for i, c in enumerate(data.classes) if not any(prepared[s][i] for s in SPLITS)],
        **data.info,
    }
    write_json(out / "summary.json", summary)
    return summary


def ignored_reasons(ignored: list[dict]) -> dict[str, int]:
    """How many entries were ignored for each kind of reason (the reason up to its colon)."""
    counts: dict[str, int] = {}
    for row in ignored:
        kind = row["reason"].split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def summary_line(summary: dict) -> str:
    """prepare's one-line account: found = prepared + quarantined + ignored (+ subset_excluded),
    with the reasons things were ignored, empty classes and classes found in one split only."""
    parts = [f"found {summary['found']} = prepared {summary['prepared']} {summary['splits']} "
             f"+ quarantined {summary['quarantined']} + ignored {summary.get('ignored', 0)}"]
    if summary.get("subset_excluded"):
        parts[0] += f" + left out by max_train/max_test {summary['subset_excluded']}"
    if summary.get("layout"):
        parts.insert(0, f"layout {summary['layout']}")
    if summary.get("ignored_reasons"):
        parts.append("ignored: " + ", ".join(f"{n} {kind}" for kind, n in summary["ignored_reasons"].items()))
    if summary.get("empty_classes"):
        parts.append("EMPTY classes (no image): " + ", ".join(summary["empty_classes"]))
    if summary.get("classes_in_one_split"):
        parts.append("classes in one split only: " + ", ".join(
            f"{c} ({s})" for c, s in summary["classes_in_one_split"].items()))
    return "; ".join(parts)


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

    def ignored(self) -> pd.DataFrame:
        path = self.root / "ignored.csv"
        return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["path", "split", "reason"])

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        images = np.load(images_file(self.root, split), mmap_mode="r")
        labels = np.load(self.root / f"{split}_labels.npy")
        return images, labels

    def array_labels(self) -> dict[str, tuple[int, np.ndarray]]:
        """Per split: the image array's row count (from its header) and the label array, for
        validate to hold against the manifest."""
        out = {}
        for split in SPLITS:
            try:
                images, labels = self.arrays(split)
            except (OSError, ValueError) as err:
                raise FileNotFoundError(f"{self.root}/{split}_*.npy: cannot read the arrays ({err})") from None
            out[split] = (int(images.shape[0]), np.asarray(labels))
        return out

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.summary["image_shape"]
        return h, w, c

    def data_hash(self) -> str:
        """Identity of the data version: the manifest's hash (it holds every image's sha256)."""
        return file_sha256(self.root / "manifest.csv")[:16]
