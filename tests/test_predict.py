"""`skillpack predict`: CSV rows of the exported ONNX model's top-k for files, folders and globs;
bad files skipped and named, the others still predicted; no torch on the ONNX path; Grad-CAM
through a checkpoint; test-time augmentation's mirror property."""
import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import POSTSCRIPT, ROOT
from PIL import Image

from skillpack.cli import main
from skillpack.config import HeadParams, ServeParams
from skillpack.data.tta import shifted, tta_probabilities
from skillpack.deploy import export
from skillpack.deploy.predict import EXIT_SKIPPED, SkippedFile, expand_inputs, read_pixels
from skillpack.deploy.serving.model import load_onnx
from skillpack.train.checkpoint import save_classifier
from skillpack.train.models import build_classifier

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An untrained sp_cnn_s (its head's weights scaled up: probabilities far from uniform) as an
    ONNX file (with the export's metadata) and as a checkpoint."""
    folder = tmp_path_factory.mktemp("predict")
    model = build_classifier("sp_cnn_s", 10, (28, 28, 1), HeadParams(), [72.9], [90.0]).eval()
    with torch.no_grad():
        model.head.weight.mul_(50)
    onnx_file = export.export_onnx(model, folder / "model.onnx", (28, 28, 1),
                                   metadata={"classes": CLASSES, "model_name": "sp_cnn_s"})
    save_classifier(folder / "model.pt", model, model_name="sp_cnn_s", classes=CLASSES, image_shape=(28, 28, 1),
                    head=HeadParams())
    return onnx_file, folder / "model.pt"


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def write_pngs(folder: Path, pixels: np.ndarray) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i}.png" for i in range(len(pixels))]
    for path, image in zip(paths, pixels):
        Image.fromarray(image[..., 0]).save(path)
    return paths


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_good_files_are_predicted_and_a_corrupt_and_a_postscript_file_are_named_and_skipped(exported, tmp_path,
                                                                                              capsys):
    onnx_file, _ = exported
    pixels = images(5)
    good = write_pngs(tmp_path / "in" / "sub", pixels)
    corrupt, postscript = tmp_path / "in" / "corrupt.png", tmp_path / "in" / "drawing.eps"
    corrupt.write_bytes(good[0].read_bytes()[:60])   # a truncated PNG
    postscript.write_bytes(POSTSCRIPT)
    out = tmp_path / "out.csv"
    code = main(["predict", str(tmp_path / "in"), "--model", str(onnx_file), "--top-k", "4", "-o", str(out)])
    assert code == EXIT_SKIPPED != 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("skipped")] == [
        f"skipped {corrupt}: corrupt image (OSError: image file is truncated)",
        f"skipped {postscript}: not a JPEG/PNG/WEBP/BMP/GIF/TIFF image"]
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "label_1", "prob_1", "label_2", "prob_2", "label_3", "prob_3", "label_4", "prob_4"]
    assert [row["path"] for row in rows] == [str(p) for p in good]
    expected = load_onnx(onnx_file).probabilities(pixels)
    for row, probs in zip(rows, expected):
        got = [float(row[f"prob_{i}"]) for i in range(1, 5)]
        assert got == sorted(got, reverse=True) and sum(got) <= 1 + 1e-6
        assert row["label_1"] == CLASSES[probs.argmax()] and abs(got[0] - probs.max()) < 1e-5


def test_stdout_gets_the_csv_and_a_clean_run_exits_0(exported, tmp_path, capsys):
    onnx_file, _ = exported
    paths = write_pngs(tmp_path, images(2))
    assert main(["predict", *map(str, paths), "--model", str(onnx_file), "--quiet"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "label_1", "prob_1", "label_2", "prob_2", "label_3", "prob_3"]
    assert [r[0] for r in rows[1:]] == [str(p) for p in paths]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_progress_bar_shows_on_a_terminal_unless_quiet(exported, tmp_path, monkeypatch, capsys):
    paths = [str(p) for p in write_pngs(tmp_path, images(3))]
    for quiet, bar in (([], True), (["--quiet"], False)):
        monkeypatch.setattr(sys, "stderr", Terminal())
        assert main(["predict", *paths, "--model", str(exported[0]), "-o", str(tmp_path / "out.csv"), *quiet]) == 0
        assert ("3/3" in sys.stderr.getvalue()) is bar
    assert main(["predict", *paths, "--model", str(exported[0])]) == 0   # capsys: not a terminal
    assert "3/3" not in capsys.readouterr().err


def test_inputs_are_files_folders_and_globs_each_once_and_what_names_nothing_is_said(tmp_path):
    a, b = write_pngs(tmp_path / "x", images(2))
    (tmp_path / "x" / ".hidden.png").write_bytes(a.read_bytes())
    (tmp_path / "empty").mkdir()
    files, missing = expand_inputs([str(a), str(tmp_path / "x"), str(tmp_path / "**" / "*.png"),
                                    str(tmp_path / "nope.png"), str(tmp_path / "*.jpg"), str(tmp_path / "empty")])
    assert files == [a, b]
    assert missing == [(str(tmp_path / "nope.png"), "no such file or folder"),
                       (str(tmp_path / "*.jpg"), "no file matches this pattern"),
                       (str(tmp_path / "empty"), "a folder without files")]


def test_files_are_held_to_the_service_s_limits(tmp_path):
    path = write_pngs(tmp_path, images(1))[0]
    with pytest.raises(SkippedFile, match=r"28x28 = 784 pixels, over the limit of 100 \(serve.max_pixels\)"):
        read_pixels(path, (28, 28, 1), ServeParams(max_pixels=100))
    with pytest.raises(SkippedFile, match=r"over the limit of 1,024 \(serve.max_body_bytes\)"):
        path.write_bytes(path.read_bytes() + b"\0" * 2000)
        read_pixels(path, (28, 28, 1), ServeParams(max_body_bytes=1024))


def test_gradcam_writes_an_overlay_per_image_through_the_checkpoint_only(exported, tmp_path, capsys):
    onnx_file, checkpoint = exported
    paths = write_pngs(tmp_path / "in", images(2))
    cams = tmp_path / "cams"
    assert main(["predict", *map(str, paths), "--checkpoint", str(checkpoint), "--gradcam", str(cams), "-q"]) == 0
    written = sorted(cams.iterdir())
    assert len(written) == 2 and all(Image.open(p).size == (224, 224) for p in written)
    assert main(["predict", str(paths[0]), "--model", str(onnx_file), "--gradcam", str(cams)]) == 1
    assert "--gradcam needs --checkpoint" in capsys.readouterr().err


def test_tta_gives_an_image_and_its_mirror_the_same_probabilities(exported):
    model = load_onnx(exported[0])
    x = images(4, seed=1)
    mirrored = x[:, :, ::-1]
    assert np.abs(model.probabilities(x) - model.probabilities(mirrored)).max() > 1e-3   # the model alone is not
    for padding in (0, 2):
        tta = tta_probabilities(model.probabilities, x, padding)
        assert np.allclose(tta, tta_probabilities(model.probabilities, mirrored, padding), atol=1e-6)
        assert np.allclose(tta.sum(1), 1, atol=1e-5)
    symmetric = np.concatenate([x[:, :, :14], x[:, :, :14][:, :, ::-1]], axis=2)
    assert np.allclose(tta_probabilities(model.probabilities, symmetric, 0), model.probabilities(symmetric), atol=1e-6)
    assert not np.allclose(tta_probabilities(model.probabilities, symmetric, 2), model.probabilities(symmetric),
                           atol=1e-3)   # the shifted crops do change it


def test_evaluate_s_tta_sees_the_probabilities_predict_sees(exported):
    from skillpack.train.checkpoint import load_classifier
    from skillpack.train.evaluation import probabilities_of

    model, _ = load_classifier(exported[1])
    x = images(3, seed=2)
    eager = tta_probabilities(probabilities_of(model, 64), x, 2)
    assert np.abs(eager - tta_probabilities(load_onnx(exported[0]).probabilities, x, 2)).max() < 1e-5


def test_a_shift_moves_the_content_and_fills_zeros():
    x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1) + 1
    moved = shifted(x, 1, -2)[0, ..., 0]
    assert (moved[:3, 2:] == x[0, 1:, :2, 0]).all() and moved[3].sum() == 0 and moved[:, :2].sum() == 0


@pytest.mark.integration   # starts a Python process: the only way to see what an import pulls in
def test_predicting_through_onnx_imports_no_torch(exported, tmp_path):
    paths = write_pngs(tmp_path, images(2))
    script = ("import sys\nfrom skillpack.cli import main\n"
              f"code = main(['predict', {str(paths[0])!r}, {str(paths[1])!r}, '--model', {str(exported[0])!r}, '--tta',"
              f" '-o', {str(tmp_path / 'out.csv')!r}])\n"
              "print('torch' in sys.modules, code)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "0"]
    assert len(read_csv(tmp_path / "out.csv")) == 2
