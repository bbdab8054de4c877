"""The imagefolder source on the folders users bring: every layout read right, every entry
counted (prepared / quarantined / ignored with the reason), pixels decoded right, bombs
refused from the header, and validate naming what is wrong. Tiny synthetic images only."""
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import POSTSCRIPT
from PIL import Image

from skillpack.config import DataParams, load_params
from skillpack.data.imagefolder import imagefolder
from skillpack.data.images import decode_image
from skillpack.data.sourcedata import SourceError
from skillpack.data.sources import load_source
from skillpack.data.store import PreparedStore, carve_splits, summary_line, write_store

ROOT = Path(__file__).resolve().parent.parent
_rng = np.random.default_rng(0)


def img(path: Path, size=(8, 8), array=None) -> Path:
    """A small PNG of random (so unique) grey pixels, unless `array` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = array if array is not None else _rng.integers(0, 256, size=size, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def images(folder: Path, n: int) -> None:
    for k in range(n):
        img(folder / f"{k}.png")


def prepared(data) -> dict[str, int]:
    return {split: len(s.labels) for split, s in data.splits.items()}


def store_of(tmp_path, data, **carve):
    summary = write_store(tmp_path / "prepared", data, carve_splits(data, carve.pop("val_fraction", 0.0), 0, **carve))
    return summary, PreparedStore(tmp_path / "prepared")


# ------------------------------------------------------------------ layouts

def test_train_and_valid_folders_are_splits_not_classes(tmp_path):
    """Was: root/train + root/valid (no test) became two classes, train and valid."""
    for cls in ("cat", "dog"):
        images(tmp_path / "d" / "train" / cls, 4)
        images(tmp_path / "d" / "valid" / cls, 2)
    data = load_source("imagefolder", root=str(tmp_path / "d"), image_size=8)
    assert data.classes == ["cat", "dog"]
    assert prepared(data) == {"train": 8, "val": 4}
    assert data.info["layout"] == "train/val" and data.info["split_folders"] == {"train": "train", "val": "valid"}
    splits = carve_splits(data, 0.5, seed=0, test_fraction=0.25)
    assert len(splits["val"].labels) == 4 and all(i.startswith("valid/") for i in splits["val"].ids)  # given val, as such
    assert len(splits["test"].labels) == 2 and len(splits["train"].labels) == 6  # test carved: data.test_fraction


def test_train_val_test_any_case_with_a_class_only_in_test(tmp_path):
    """Was: val/ was dropped in silence, and so was a class folder only under test/."""
    root = tmp_path / "d"
    for split, n in (("Train", 3), ("VAL", 2), ("Test", 2)):
        for cls in ("a", "b"):
            images(root / split / cls, n)
    images(root / "Test" / "c", 2)
    data = load_source("imagefolder", root=str(root), image_size=8)
    assert data.classes == ["a", "b", "c"]
    assert prepared(data) == {"train": 6, "val": 4, "test": 6}
    assert data.info["classes_in_one_split"] == {"c": "test"}
    summary, store = store_of(tmp_path, data, val_fraction=0.5)
    assert summary["splits"] == {"train": 6, "val": 4, "test": 6}  # val_fraction does not touch a given val
    assert "classes in one split only: c (test)" in summary_line(summary)
    assert store.manifest().query("label_name == 'c'")["split"].unique().tolist() == ["test"]
    again = load_source("imagefolder", root=str(root), image_size=8)
    assert again.splits["train"].ids == data.splits["train"].ids  # a stable order


def test_resplit_pools_the_given_folders(tmp_path):
    root = tmp_path / "d"
    for split in ("train", "val", "test"):
        for cls in ("a", "b"):
            images(root / split / cls, 5)
    data = load_source("imagefolder", root=str(root), image_size=8)
    splits = carve_splits(data, 0.25, seed=0, test_fraction=0.2, resplit=True)
    assert {k: len(v.labels) for k, v in splits.items()} == {"train": 18, "val": 6, "test": 6}
    assert any(i.startswith("test/") for i in splits["train"].ids)
    assert DataParams(resplit=True, test_fraction=0.3).test_fraction == 0.3


def test_data_test_fraction_is_a_param():
    """Was: data.test_fraction was rejected as unknown; the 20% was hard-coded."""
    params = load_params(ROOT / "params.yaml", ["data.test_fraction=0.3", "data.val_fraction=0.2"])
    assert (params.data.test_fraction, params.data.val_fraction) == (0.3, 0.2)
    with pytest.raises(Exception, match="test_fraction"):
        load_params(ROOT / "params.yaml", ["data.test_fraction=1.5"])


@pytest.mark.parametrize("make, message", [
    (lambda r: [images(r / "dataset" / s / c, 1) for s in ("train", "test") for c in "ab"],
     r"holds one folder, 'dataset'.*split folders \(test, train\): set data.root to .*/dataset"),
    (lambda r: [images(r / s / c, 1) for s in ("train", "test", "cat") for c in "ab"],
     r"mixes split folders \(test, train\) with other folders \(cat\)"),
    (lambda r: [images(r / s / c, 1) for s in ("train", "val", "Valid") for c in "ab"],
     r"has 2 val folders \(Valid, val\)"),
    (lambda r: [images(r / s / c, 1) for s in ("val", "test") for c in "ab"],
     r"but no train folder"),
    (lambda r: [images(r / "train", 2), images(r / "test", 2)],
     r"train holds images but no class folders"),
    (lambda r: [images(r / c / s, 1) for c in ("cat", "dog") for s in ("train", "test")],
     r"class folder .*/cat holds split folders \(test, train\)"),
    (lambda r: [images(r / s / c, 1) for s, c in (("train", "Cat"), ("train", "dog"), ("test", "cat"))],
     r"differ only in case: Cat vs cat"),
])
def test_ambiguous_layouts_are_clear_errors_naming_the_folder(tmp_path, make, message):
    make(tmp_path / "d")
    with pytest.raises(SourceError, match=message):
        load_source("imagefolder", root=str(tmp_path / "d"), image_size=8)


# ------------------------------------------------------------------ counted, never silent

def test_every_entry_is_prepared_quarantined_or_ignored(tmp_path):
    """Was: links out of the root were followed; FIFOs, dangling links and images at
    the root were skipped without being counted."""
    root, outside = tmp_path / "d", tmp_path / "outside"
    images(root / "a", 3)
    images(root / "b", 3)
    img(root / "a" / "sub" / "deeper" / "nested.png")          # nested levels in a class: that class
    img(root / "at_root.png")                                 # an image outside any class folder
    (root / "README.txt").write_text("about")
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "__MACOSX").mkdir()
    img(root / "a" / "._0.png")                               # macOS resource fork: hidden
    (root / "a" / "labels.csv").write_text("x")
    os.mkfifo(root / "a" / "pipe")
    os.symlink(tmp_path / "nowhere.png", root / "a" / "dangling.png")
    os.symlink(root / "b" / "0.png", root / "a" / "link_in.png")     # a link inside the root: read
    os.symlink(img(outside / "o.png"), root / "b" / "link_out.png")  # a file out of the root: refused
    images(outside / "cdir", 2)
    os.symlink(outside / "cdir", root / "c")                         # a whole class folder out of the root
    os.symlink(root / "a", root / "a" / "sub" / "loop")              # a loop
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    data = load_source("imagefolder", root=str(root), image_size=8)
    assert data.classes == ["a", "b"]
    assert sorted(data.splits["train"].ids) == sorted(
        [f"a/{k}.png" for k in range(3)] + [f"b/{k}.png" for k in range(3)]
        + ["a/sub/deeper/nested.png", "a/link_in.png"])
    assert [(q["path"], q["reason"].split(":")[0]) for q in data.quarantine] == [("b/broken.png", "unreadable image")]
    reasons = {i["path"]: i["reason"] for i in data.ignored}
    assert {path: reason.split(":")[0] for path, reason in reasons.items()} == {
        ".DS_Store": "hidden", "__MACOSX": "not a class folder",
        "README.txt": "file outside any class folder", "at_root.png": "file outside any class folder",
        "c": "symlink out of data.root", "a/._0.png": "hidden", "a/labels.csv": "not an image extension",
        "a/pipe": "not a regular file", "a/dangling.png": "dangling symlink",
        "a/sub/loop": "symlink loop", "b/link_out.png": "symlink out of data.root"}
    assert "a fifo" in reasons["a/pipe"] and "data.follow_external_symlinks=true" in reasons["c"]
    assert data.n_found == 8 + 1 + 11
    summary, store = store_of(tmp_path, data, test_fraction=0.25)
    assert (summary["found"], summary["prepared"], summary["quarantined"], summary["ignored"]) == (20, 8, 1, 11)
    assert len(store.ignored()) == 11 and len(store.quarantine()) == 1
    line = summary_line(summary)
    assert "found 20 = prepared 8" in line and "+ quarantined 1 + ignored 11" in line
    assert "2 symlink out of data.root" in line and "1 not a regular file" in line

    followed = load_source("imagefolder", root=str(root), image_size=8, follow_external_symlinks=True)
    assert followed.classes == ["a", "b", "c"]
    assert "b/link_out.png" in followed.splits["train"].ids and "c/0.png" in followed.splits["train"].ids
    assert followed.n_found == 11 + 1 + 9


# ------------------------------------------------------------------ decoding

def _encoded(image: Image.Image, fmt: str = "PNG", **kw) -> io.BytesIO:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    buf.seek(0)
    return buf


def test_a_16_bit_png_ramp_is_scaled_not_clipped(tmp_path):
    """Was: 99.6% of a 16-bit ramp became 255."""
    ramp = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16).reshape(16, 16)
    path = tmp_path / "d" / "a" / "ramp.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    images(tmp_path / "d" / "b", 1)
    data = load_source("imagefolder", root=str(tmp_path / "d"), image_size=16, channels=1)
    got = data.splits["train"].images[data.splits["train"].ids.index("a/ramp.png"), ..., 0]
    assert got.ravel().tolist() == list(range(256))   # v -> round(v * 255 / 65535)
    odd = np.array([[0, 128, 129, 65535]], dtype=np.uint16)
    assert decode_image(_encoded(Image.fromarray(odd)), 1, 1).shape == (1, 1, 1)
    floats = Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4), "F")
    assert decode_image(_encoded(floats, "TIFF"), 4, 1)[..., 0].ravel().tolist() == [17 * k for k in range(16)]


def test_exif_orientation_is_applied(tmp_path):
    """Was: a rotated JPEG was stored unrotated. Stored: left half white; EXIF 6
    (rotate 90 degrees clockwise to display): the top half is white."""
    pixels = np.zeros((8, 16), np.uint8)
    pixels[:, :8] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    got = decode_image(_encoded(image, "JPEG", exif=exif.tobytes(), quality=95), 16, 1)[..., 0].astype(float)
    assert got[:8].mean() > 240 and got[8:].mean() < 15


def test_alpha_palette_cmyk_and_bilevel_are_converted_as_documented():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:2, :, 3] = 255
    got = decode_image(_encoded(Image.fromarray(rgba, "RGBA")), 4, 3)
    assert got[0, 0].tolist() == [200, 100, 50] and got[3, 3].tolist() == [0, 0, 0]  # transparent: black
    grey_alpha = np.dstack([np.full((4, 4), 200, np.uint8), np.full((4, 4), 128, np.uint8)])
    assert decode_image(_encoded(Image.fromarray(grey_alpha, "LA")), 4, 1)[0, 0, 0] == 100  # half over black
    palette = Image.new("P", (4, 4))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putdata([0] * 8 + [1] * 8)
    got = decode_image(_encoded(palette, transparency=1), 4, 3)
    assert got[0, 0].tolist() == [255, 0, 0] and got[3, 3].tolist() == [0, 0, 0]   # the transparent entry
    cyan = decode_image(_encoded(Image.new("CMYK", (4, 4), (255, 0, 0, 0)), "TIFF"), 4, 3)
    assert cyan[0, 0].tolist() == [0, 255, 255]
    assert decode_image(_encoded(Image.new("1", (4, 4), 1)), 4, 1)[0, 0, 0] == 255


def test_max_pixels_is_checked_from_the_header(tmp_path):
    img(tmp_path / "d" / "a" / "big.png", size=(10, 12))
    images(tmp_path / "d" / "b", 1)
    refused = load_source("imagefolder", root=str(tmp_path / "d"), image_size=8, max_pixels=119)
    assert refused.quarantine == [{"path": "a/big.png", "split": "all", "reason":
                                   "too large: 12x10 = 120 pixels, over the limit of 119 (data.max_pixels)"}]
    assert len(load_source("imagefolder", root=str(tmp_path / "d"), image_size=8, max_pixels=120).quarantine) == 0


def write_bomb_png(path: Path, width: int, height: int) -> None:
    """A one-colour grey PNG written row by row: 13000 x 13000 is 164 KB on disk, 169 MB decoded."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    row, packer = b"\0" * (width + 1), zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


# Peak resident memory from /proc (VmHWM): getrusage's ru_maxrss survives execve on Linux, so a
# child started from a big pytest process would report the parent's size.
PREPARE_AND_MEASURE = """
import json, sys
from skillpack.config import DataParams
from skillpack.data.store import prepare_splits, write_store

def status_mb(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":")) / 1024

before = status_mb("VmRSS")
source, splits = prepare_splits(DataParams(source="imagefolder", root=sys.argv[1]), 0)
summary = write_store(sys.argv[2], source, splits)
peak = status_mb("VmHWM")
print(json.dumps({"rss_before_mb": before, "peak_mb": peak, "quarantine": source.quarantine,
                  "prepared": summary["prepared"]}))
"""


def test_prepare_refuses_a_near_limit_bomb_from_its_header_in_little_memory(tmp_path):
    """Was: a 13000 x 13000 PNG of 164 KB (under PIL's own bomb limit) was decoded in
    full. prepare runs in a fresh process (imports done, then measured): the bomb is
    quarantined by data.max_pixels before a pixel is decoded; peak RSS grows by <= 200 MB."""
    write_bomb_png(tmp_path / "d" / "a" / "bomb.png", 13000, 13000)
    assert (tmp_path / "d" / "a" / "bomb.png").stat().st_size < 200_000
    for cls in ("a", "b"):
        images(tmp_path / "d" / cls, 10)   # enough for a stratified test and validation split of 2 classes
    proc = subprocess.run([sys.executable, "-c", PREPARE_AND_MEASURE, str(tmp_path / "d"), str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"prepare with the bomb: RSS {result['rss_before_mb']:.0f} MB after imports, peak {result['peak_mb']:.0f} MB")
    assert result["prepared"] == 20
    assert result["quarantine"] == [{"path": "a/bomb.png", "split": "all", "reason":
                                     "too large: 13000x13000 = 169,000,000 pixels, over the limit of 40,000,000 "
                                     "(data.max_pixels)"}]
    assert result["peak_mb"] - result["rss_before_mb"] <= 200


# ------------------------------------------------------------------ validate names things

def test_empty_class_and_label_conflicts_are_named(tmp_path):
    """Was: the same pixels under two labels were only a duplicate count; an
    empty class folder failed as "missing [2]" and the imbalance ratio ignored it."""
    from skillpack.data.validation import format_failures, validate_manifest

    root = tmp_path / "d"
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            images(root / split / cls, 3)
        (root / split / "emu").mkdir(parents=True)
    same = _rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
    img(root / "train" / "cat" / "twin.png", array=same)
    img(root / "train" / "dog" / "twin.png", array=same)       # the same pixels, another label, same split
    other = _rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
    img(root / "train" / "cat" / "across.png", array=other)
    img(root / "test" / "dog" / "across.png", array=other)     # ... and across splits
    data = load_source("imagefolder", root=str(root), image_size=8)
    assert data.classes == ["cat", "dog", "emu"] and data.info["empty_classes"] == ["emu"]
    summary, store = store_of(tmp_path, data)
    assert summary["empty_classes"] == ["emu"] and "EMPTY classes (no image): emu" in summary_line(summary)
    report = validate_manifest(store.manifest(), store.classes, store.summary, store.quarantine(),
                               max_imbalance_ratio=3.0, ignored=store.ignored())
    assert not report["success"]
    assert report["imbalance_ratio"] == float("inf") and report["train_class_counts"]["emu"] == 0
    lines = format_failures(report).splitlines()
    by_kind = {c["expectation"] + ":" + str(c.get("column") or c.get("row_condition")): c for c in report["failed"]}
    assert len(lines) == len(report["failed"])   # one line per failed expectation
    assert "the train split has no image of class 'emu'" in format_failures(report)
    assert "the test split has no image of class 'emu'" in format_failures(report)
    conflict = by_kind["expect_column_values_to_be_in_set:label_conflict"]
    assert conflict["unexpected_count"] == 4
    files = {frozenset(f["id"] for f in g["files"]) for g in conflict["conflicts"]}
    assert files == {frozenset({"train/cat/twin.png", "train/dog/twin.png"}),
                     frozenset({"train/cat/across.png", "test/dog/across.png"})}
    line = next(x for x in lines if "under another label" in x)
    assert "train/cat/twin.png (cat, train) vs train/dog/twin.png (dog, train)" in line
    assert any("imbalance ratio" in x and "inf" in x and "'emu'" in x for x in lines)
    assert not any("found" in c["expectation"] for c in report["failed"])   # the counts add up


# ------------------------------------------------------------------ a store written whole or not at all

def _store_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.fault('prepare failing after the arrays: the old store stays whole, no temp left', guards=('lost',))
def test_a_prepare_failing_after_the_arrays_leaves_the_old_store_whole(tmp_path, monkeypatch):
    from skillpack.data import store as store_module

    for name in ("a", "b"):
        images(tmp_path / "v1" / name, 6)
    data = imagefolder(str(tmp_path / "v1"), image_size=8)
    store_of(tmp_path, data, test_fraction=0.5)
    before = _store_files(tmp_path / "prepared")
    for name in ("a", "b"):
        images(tmp_path / "v2" / name, 10)
    newer = imagefolder(str(tmp_path / "v2"), image_size=8)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")   # after the arrays, before the manifest
    monkeypatch.setattr(store_module.pd, "concat", fail)
    with pytest.raises(OSError, match="No space left"):
        store_of(tmp_path, newer, test_fraction=0.5)
    assert _store_files(tmp_path / "prepared") == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".prepared")] == []   # no temp left
    monkeypatch.undo()
    store_of(tmp_path, newer, test_fraction=0.5)
    assert len(PreparedStore(tmp_path / "prepared").manifest()) == 20


@pytest.mark.fault('arrays rewritten without the manifest: validate fails naming the split', guards=('lost',))
def test_validate_fails_when_the_arrays_do_not_match_the_manifest(tmp_path):
    from skillpack.data.validation import validate_manifest

    for name in ("a", "b"):
        images(tmp_path / "root" / name, 6)
    _, store = store_of(tmp_path, imagefolder(str(tmp_path / "root"), image_size=8), test_fraction=0.5)
    check = lambda: validate_manifest(store.manifest(), store.classes, store.summary, store.quarantine(),   # noqa: E731
                                      ignored=store.ignored(), arrays=store.array_labels())
    assert check()["success"]
    x, y = store.arrays("train")
    np.save(tmp_path / "prepared" / "train_images.npy", np.concatenate([x, x[:2]]))   # a newer prepare's arrays
    report = check()
    assert not report["success"]
    assert any("train arrays do not match manifest.csv: 8 images" in c["message"] for c in report["failed"])


# ------------------------------------------------------------------ hostile names and bytes

@pytest.mark.fault('file and folder names with non-UTF-8 bytes: prepared under escaped ids', guards=('crash', 'traceback'))
def test_names_that_are_not_utf8_are_prepared_under_escaped_ids(tmp_path):
    root = os.fsencode(tmp_path / "root")
    for cls in (b"a", b"caf\xe9"):                           # a Latin-1 folder name, as Windows zips have
        os.makedirs(os.path.join(root, cls))
        for k in range(4):
            buf = io.BytesIO()
            Image.fromarray(_rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(buf, "PNG")
            with open(os.path.join(root, cls, b"%d\xff.png" % k), "wb") as fh:   # one byte 0xff in the name
                fh.write(buf.getvalue())
    summary, store = store_of(tmp_path, imagefolder(os.fsdecode(root), image_size=8), test_fraction=0.5)
    assert summary["prepared"] == 8 and summary["quarantined"] == 0
    assert store.classes == ["a", "caf\\xe9"]
    (tmp_path / "prepared" / "manifest.csv").read_bytes().decode("utf-8")   # valid UTF-8 throughout
    assert "caf\\xe9/0\\xff.png" in set(store.manifest()["id"])


@pytest.mark.fault('PostScript named .png: quarantined, no plugin outside the allow-list opens it', guards=('crash',))
def test_postscript_named_png_is_refused_before_any_plugin_but_the_listed_ones_sees_it(tmp_path):
    from skillpack.data.images import NotAnImage

    fake = tmp_path / "root" / "a" / "fake.png"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(POSTSCRIPT)
    with Image.open(fake) as opened:                         # Pillow alone would take it as EPS (Ghostscript)
        assert opened.format == "EPS"
    with pytest.raises(NotAnImage, match="not a JPEG/PNG/WEBP/BMP/GIF/TIFF image"):
        decode_image(fake, 8, 1)
    with pytest.raises(NotAnImage):
        decode_image(io.BytesIO(POSTSCRIPT), 8, 1)           # the service's path: bytes
    images(tmp_path / "root" / "a", 3)
    images(tmp_path / "root" / "b", 3)
    data = imagefolder(str(tmp_path / "root"), image_size=8)
    assert data.quarantine == [{"path": "a/fake.png", "split": "all",
                                "reason": "unreadable image: not a JPEG/PNG/WEBP/BMP/GIF/TIFF image"}]


@pytest.mark.fault('a 179.6 Mpx image: data.max_pixels admits or refuses it, not Pillow', guards=('crash',))
def test_max_pixels_governs_above_pillows_own_bomb_limit(tmp_path):
    from PIL import Image as PILImage

    side = 13_400                                            # 179.6 Mpx: over twice Pillow's MAX_IMAGE_PIXELS
    assert side * side > 2 * PILImage.MAX_IMAGE_PIXELS
    path = tmp_path / "huge.png"
    write_bomb_png(path, side, side)
    assert decode_image(path, 8, 1, max_pixels=200_000_000).shape == (8, 8, 1)
    with pytest.raises(Exception, match=r"13400x13400 = 179,560,000 pixels, over the limit of 100,000,000"):
        decode_image(path, 8, 1, max_pixels=100_000_000)
    assert PILImage.MAX_IMAGE_PIXELS is not None             # Pillow's guard is back for everyone else


@pytest.mark.fault('quarantine and ignored reasons carry no absolute machine path', guards=())
def test_reasons_name_no_machine_paths(tmp_path):
    root = tmp_path / "root"
    images(root / "a", 3)
    images(root / "b", 3)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)   # a PNG signature, then junk
    outside = tmp_path / "elsewhere.png"
    img(outside)
    os.symlink(outside, root / "a" / "out.png")
    os.symlink(tmp_path / "gone.png", root / "a" / "dangling.png")
    os.symlink(root, root / "b" / "loop")
    data = imagefolder(str(root), image_size=8)
    reasons = [row["reason"] for row in data.quarantine + data.ignored]
    assert len(reasons) == 4, reasons
    for reason in reasons:
        assert str(tmp_path) not in reason, reason
