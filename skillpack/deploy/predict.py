"""`skillpack predict`: the top-k classes of image files, folders and globs, as CSV rows
(path, label_1, prob_1, ..., label_k, prob_k).

Through the exported ONNX model (its metadata holds the class names and the input shape; the
preprocessing is inside the graph), without torch, or through a trained checkpoint (torch;
needed for Grad-CAM). Every file is read as the inference service reads an upload: the same
decoding, format allow-list and limits (skillpack.data.images.decode_bytes, params serve:
max_pixels, and max_body_bytes per file). A file that cannot be read is skipped, named on
stderr with why; the good ones are still predicted."""
from __future__ import annotations

import csv
import glob
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:   # the CLI reads EXIT_SKIPPED for every command's help: this module stays light
    from skillpack.config import ServeParams
    from skillpack.deploy.serving.model import ServedModel

EXIT_SKIPPED = 3   # the exit code when any input was skipped (listed on stderr); the good rows are written


class SkippedFile(Exception):
    """An input that gets no prediction: the message says why, in one line."""


def _serve_defaults() -> ServeParams:
    from skillpack.config import ServeParams

    return ServeParams()


@dataclass
class PredictOptions:
    top_k: int = 3
    batch_size: int = 256
    tta_crop_padding: int | None = None     # None: no test-time augmentation
    progress: bool = False                  # a progress bar on stderr
    limits: ServeParams = field(default_factory=_serve_defaults)   # the service's limits



@dataclass
class PredictRun:
    predicted: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, why)
    read_decode_s: float = 0.0    # reading and decoding the files
    model_s: float = 0.0          # the model's probabilities (all views, with TTA)
    write_s: float = 0.0          # the rows and on_batch (Grad-CAM)


# -- inputs ---------------------------------------------------------------------------------

def _files_under(folder: Path) -> list[Path]:
    """Every file under `folder`, sorted, hidden files and folders (.name) left out."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def expand_inputs(patterns: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (every file under them) and globs (`**` included) -> the files, in order
    and once each, and the patterns that name nothing, with why."""
    files, missing = [], []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True))]
            if not matches:
                missing.append((pattern, "no file matches this pattern"))
        else:
            matches = [Path(pattern)]
            if not matches[0].exists():
                missing.append((pattern, "no such file or folder"))
                continue
        for match in matches:
            found = _files_under(match) if match.is_dir() else [match]
            if not found:
                missing.append((str(match), "a folder without files"))
            files.extend(found)
    return list(dict.fromkeys(files)), missing


def read_pixels(path: Path, image_shape: tuple[int, int, int], limits: ServeParams) -> np.ndarray:
    """uint8 H x W x C of one file, as the service decodes an upload, or SkippedFile saying why."""
    from skillpack.data.images import CorruptImage, ImageTooLarge, NotAnImage, decode_bytes

    try:
        size = path.stat().st_size
        if size > limits.max_body_bytes:
            raise SkippedFile(f"{size:,} bytes, over the limit of {limits.max_body_bytes:,} (serve.max_body_bytes)")
        data = path.read_bytes()
    except OSError as err:
        raise SkippedFile(f"unreadable file ({err.strerror or err})") from None
    height, _, channels = image_shape
    try:
        return decode_bytes(data, height, channels, max_pixels=limits.max_pixels)
    except ImageTooLarge as err:
        raise SkippedFile(f"{err} (serve.max_pixels)") from None
    except (NotAnImage, CorruptImage) as err:
        raise SkippedFile(str(err)) from None


# -- models ---------------------------------------------------------------------------------

def load_checkpoint(path: str | Path) -> tuple[ServedModel, object]:
    """A trained model file as the predictor (eager PyTorch, uint8 pixels in, as the ONNX file
    takes them), and the torch model itself (for Grad-CAM)."""
    from skillpack.deploy.export import eager_runner
    from skillpack.deploy.serving.model import ServedModel
    from skillpack.io import file_sha256
    from skillpack.train.checkpoint import load_classifier

    model, meta = load_classifier(path)
    served = ServedModel(eager_runner(model), list(meta["classes"]), tuple(meta["image_shape"]), meta["model_name"],
                         file_sha256(path)[:12], str(path))
    return served, model


def check_top_k(top_k: int, model: ServedModel) -> None:
    from skillpack.io import UserError

    if not 1 <= top_k <= len(model.classes):
        raise UserError(f"--top-k {top_k}: between 1 and the model's {len(model.classes)} classes")


def header(top_k: int) -> list[str]:
    return ["path"] + [name for i in range(1, top_k + 1) for name in (f"label_{i}", f"prob_{i}")]


def top_k_rows(paths: list[Path], probs: np.ndarray, classes: list[str], top_k: int) -> Iterator[list[str]]:
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    for path, p, row in zip(paths, probs, order):
        yield [str(path)] + [cell for j in row for cell in (classes[j], f"{p[j]:.6f}")]


def probabilities(model: ServedModel, pixels: np.ndarray, tta_crop_padding: int | None) -> np.ndarray:
    if tta_crop_padding is None:
        return model.probabilities(pixels)
    from skillpack.data.tta import tta_probabilities

    return tta_probabilities(model.probabilities, pixels, tta_crop_padding, batch_size=len(pixels))


# -- the run --------------------------------------------------------------------------------

def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _decoded(chunk: list[Path], model: ServedModel, options: PredictOptions, run: PredictRun,
             report_skip: Callable[[str, str], None]) -> tuple[list[Path], np.ndarray | None]:
    good, pixels = [], []
    for path in chunk:
        try:
            pixels.append(read_pixels(path, model.image_shape, options.limits))
            good.append(path)
        except SkippedFile as err:
            run.skipped.append((str(path), str(err)))
            report_skip(str(path), str(err))
    return good, (np.stack(pixels) if pixels else None)


def predict_files(files: list[Path], model: ServedModel, options: PredictOptions,
                  write_row: Callable[[list[str]], None], report_skip: Callable[[str, str], None],
                  on_batch: Callable[[list[Path], np.ndarray, np.ndarray], None] | None = None) -> PredictRun:
    """Decode `files` batch by batch, predict each batch in one call, write a row per good file
    (in input order) and report each skipped one; `on_batch(paths, pixels, probabilities)` sees
    every predicted batch (Grad-CAM)."""
    import time

    from tqdm import tqdm

    run = PredictRun()
    with tqdm(total=len(files), unit="img", disable=not options.progress, file=sys.stderr) as bar:
        for chunk in _batches(files, options.batch_size):
            t0 = time.perf_counter()
            good, pixels = _decoded(chunk, model, options, run, report_skip)
            t1 = time.perf_counter()
            probs = probabilities(model, pixels, options.tta_crop_padding) if good else None
            t2 = time.perf_counter()
            if good:
                for row in top_k_rows(good, probs, model.classes, options.top_k):
                    write_row(row)
                if on_batch is not None:
                    on_batch(good, pixels, probs)
                run.predicted += len(good)
            run.read_decode_s, run.model_s = run.read_decode_s + t1 - t0, run.model_s + t2 - t1
            run.write_s += time.perf_counter() - t2
            bar.update(len(chunk))
    return run


def write_predictions(files: list[Path], model: ServedModel, options: PredictOptions, output: str | Path | None,
                      report_skip: Callable[[str, str], None], on_batch=None) -> PredictRun:
    """predict_files into a CSV: `output` written atomically (the old file stays whole on an
    error), or stdout when None."""
    from skillpack.io import atomic_path

    if output is None:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header(options.top_k))
        return predict_files(files, model, options, writer.writerow, report_skip, on_batch)
    with atomic_path(output) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header(options.top_k))
        return predict_files(files, model, options, writer.writerow, report_skip, on_batch)


# -- Grad-CAM -------------------------------------------------------------------------------

def cam_file_name(path: Path) -> str:
    """One overlay's file name: the input's path, folders joined by `__`, + .gradcam.png."""
    parts = [part for part in path.with_suffix("").parts if part not in (os.sep, ".", "..")]
    return "__".join(parts) + ".gradcam.png"


def cam_writer(model, image_shape: tuple[int, int, int], folder: str | Path, explain,
               min_side: int = 224) -> Callable[[list[Path], np.ndarray, np.ndarray], None]:
    """on_batch for predict_files: a Grad-CAM overlay of each image's top class into `folder`
    (skillpack.train.explain; method and layer from params evaluate.explain), enlarged
    (nearest) to at least `min_side` px."""
    from PIL import Image

    from skillpack.data.loader import to_tensor_nchw
    from skillpack.io import atomic_path
    from skillpack.train.explain import cam_maps, cam_overlay, cam_setup

    height, width, channels = image_shape
    setup = cam_setup(model, (channels, height, width), explain.target_layer, explain.min_spatial)
    scale = max(1, -(-min_side // max(height, width)))
    folder = Path(folder)

    def write(paths: list[Path], pixels: np.ndarray, probs: np.ndarray) -> None:
        maps = cam_maps(model, to_tensor_nchw(pixels), probs.argmax(1).tolist(), setup, explain.method)
        for path, image, cam in zip(paths, pixels, maps):
            overlay = Image.fromarray(cam_overlay(image, cam)).resize((width * scale, height * scale),
                                                                      Image.Resampling.NEAREST)
            with atomic_path(folder / cam_file_name(path)) as tmp:
                overlay.save(tmp, format="PNG")
    return write
