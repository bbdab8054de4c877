"""The imagefolder source: folders of images, one folder per class, in a flat or a
train/val/test layout. Every entry under data.root is prepared, quarantined or ignored with
the reason (layouts and reasons: docs/data.md)."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# decoding: skillpack/data/images.py (the inference service imports it without this package)
from skillpack.data.images import DEFAULT_MAX_PIXELS, ImageTooLarge, NotAnImage, decode_image
from skillpack.data.sourcedata import SourceData, SourceError, Split

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
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




def _split_class_folders(walk: _Walk, base: Path, layout: dict[str, Path] | None,
                         split: str, folder: Path) -> dict[str, Path]:
    """The class folders (name -> folder) among the entries of the root (flat) or of a split
    folder; every other entry there is ignored with the reason."""
    classes: dict[str, Path] = {}
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
            classes[as_text(path.name)] = path
    return classes


def _class_folders(walk: _Walk, base: Path, layout: dict[str, Path] | None) -> dict[str, dict[str, Path]]:
    """split ("all" when flat) -> class name -> folder, for each split folder that is read."""
    class_dirs: dict[str, dict[str, Path]] = {}
    top = {"all": base} if layout is None else layout
    for split, folder in top.items():
        if folder != base:
            kind = walk.kind(folder, split, (str(walk.real_root),))
            if kind != "dir":
                continue  # ignored, with the reason (a refused symlink, ...)
        class_dirs[split] = _split_class_folders(walk, base, layout, split, folder)
    return class_dirs


def _ignore_root_entries(walk: _Walk, base: Path, layout: dict[str, Path]) -> None:
    """The root's own entries besides its split folders (files, hidden ones): all ignored."""
    for path in sorted(base.iterdir()):
        if path in layout.values():
            continue
        if path.name in NOT_CLASS_FOLDERS and path.is_dir() and not path.is_symlink():
            walk.ignore(path, "-", f"not a class folder: {NOT_CLASS_FOLDERS[path.name]}")
        elif walk.kind(path, "-", (str(walk.real_root),)) is not None:
            walk.ignore(path, "-", "file outside any class folder: in the root")


def _class_names(class_dirs: dict[str, dict[str, Path]], base: Path, layout: dict[str, Path] | None) -> list[str]:
    """The classes: the class folders' names over all splits, sorted; a SourceError when there
    are none or two differ only in case."""
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
    return names


def _layout_info(names: list[str], splits: dict[str, Split], layout: dict[str, Path] | None) -> dict:
    """SourceData.info: the layout, the split folders, images per class and split, the classes
    without an image and those found in one split only (when several are given)."""
    counts = {split: np.bincount(s.labels, minlength=len(names)).tolist() for split, s in splits.items()}
    present = {name: [split for split in ("all", "train", "val", "test") if split in counts and counts[split][label] > 0]
               for label, name in enumerate(names)}
    return {
        "layout": "flat" if layout is None else "/".join(s for s in ("train", "val", "test") if s in layout),
        "split_folders": {} if layout is None else {s: f.name for s, f in layout.items()},
        "class_counts": {split: dict(zip(names, c)) for split, c in counts.items()},
        "empty_classes": [name for name in names if not present[name]],
        "classes_in_one_split": {name: where[0] for name, where in present.items()
                                 if len(where) == 1 and layout is not None and len(layout) > 1},
    }


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
    class_dirs = _class_folders(walk, base, layout)
    if layout is not None:
        _ignore_root_entries(walk, base, layout)
        if "train" not in class_dirs:
            reason = next(i["reason"] for i in walk.ignored if i["path"] == walk.rel(layout["train"]))
            raise SourceError(f"data.root: the train folder {layout['train']} is not read: {reason}")
    names = _class_names(class_dirs, base, layout)
    label_of = {name: i for i, name in enumerate(names)}
    top = {"all": base} if layout is None else layout
    for split, per_split in class_dirs.items():
        for name, folder in per_split.items():
            walk.class_folder(folder, split, label_of[name], (str(walk.real_root), os.path.realpath(top[split])))
    quarantine: list[dict] = []
    splits = _decode_items(walk.images, image_size, channels, max_pixels, walk, quarantine)
    for split in class_dirs:
        splits.setdefault(split, Split(np.zeros((0, image_size, image_size, channels), np.uint8),
                                       np.zeros(0, np.int64), []))
    info = _layout_info(names, splits, layout)
    if layout is None:
        splits["train"] = splits.pop("all")  # test and val are carved from it (store.carve_splits)
    return SourceData("imagefolder", names, splits, quarantine, walk.ignored, info)


def unlabelled_images(root: str | Path, image_size: int, channels: int, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                      follow_external_symlinks: bool = False) -> np.ndarray:
    """Every image under `root` (sub-folders too, no labels: self-supervised pre-training), decoded
    as the imagefolder source decodes, in path order; N x size x size x channels uint8. Files that
    are not images, or cannot be decoded, are skipped; none at all is an error."""
    base = Path(root)
    if not base.is_dir():
        raise SourceError(f"pretrain.images: {base} is not a folder")
    walk = _Walk(base, follow_external_symlinks)
    walk.class_folder(base, "all", 0, (str(walk.real_root),))
    quarantine: list[dict] = []
    decoded = _decode_items(walk.images, image_size, channels, max_pixels, walk, quarantine).get("all")
    if decoded is None or len(decoded.labels) == 0:
        raise SourceError(f"pretrain.images: no readable {'/'.join(sorted(IMAGE_EXTENSIONS))} image under {base} "
                          f"({len(walk.ignored)} entries ignored, {len(quarantine)} unreadable)")
    return decoded.images
