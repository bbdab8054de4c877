"""Throughput of `skillpack predict` through the exported ONNX model on PNG files.

    python -m benchmarks.predict [--model models/export/model.onnx] [--n 10000] [--threads N] [--batch-size 256]

Writes the Fashion-MNIST test images as PNG files (once) into benchmarks/cache/predict/, named
<index>_<label>.png, predicts the first N of them as the command does (the folder walk, the
service's decoding of each file, ONNX Runtime on batches, the CSV written atomically), in this
process, with the model already loaded. Reports images per second, where the time goes (reading
+ decoding the files vs. the model), and the CSV's top-1 accuracy against the labels in the file
names. Then the same files through the trained checkpoint (eager PyTorch) and through ONNX
with test-time augmentation (flip + shifted crops averaged), each against the evaluate stage's
figures. Writes benchmarks/results/predict.json: images_per_s, accuracy, the ONNX reference
(the served model's test accuracy as the export stage measured it) and the gap in points, the
checkpoint's accuracy against evaluate's test accuracy, and TTA's paired difference with its
95% interval (McNemar's discordant pairs: skillpack.stats.paired_accuracy_difference).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import save
from skillpack import paths

CACHE = Path(__file__).resolve().parent / "cache" / "predict"


def write_test_pngs(folder: Path, n: int) -> None:
    """The first n Fashion-MNIST test images as folder/<index>_<label>.png (kept where already written)."""
    from PIL import Image

    from skillpack.data import load_source

    split = load_source("fashion_mnist").splits["test"]
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(split.images[:n], split.labels[:n])):
        path = folder / f"{i:05d}_{int(label)}.png"
        if not path.is_file():
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path, format="PNG")


def csv_correct(csv_path: Path, classes: list[str]) -> np.ndarray:
    """Per row, in the order of the file names: is label_1 the class in the name (<index>_<label>.png)?"""
    with open(csv_path, newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda row: row["path"])
    return np.array([classes.index(row["label_1"]) == int(Path(row["path"]).stem.split("_")[1]) for row in rows])


def timed_run(files: list[Path], model, options, out: Path) -> tuple[dict, np.ndarray]:
    from skillpack.deploy.predict import write_predictions

    t0 = time.perf_counter()
    run = write_predictions(files, model, options, out, report_skip=lambda path, why: None)
    seconds = time.perf_counter() - t0
    return ({"images_per_s": round(run.predicted / seconds, 1), "n_images": run.predicted,
             "n_skipped": len(run.skipped), "seconds": round(seconds, 3), "read_decode_s": round(run.read_decode_s, 3),
             "model_s": round(run.model_s, 3), "csv_s": round(run.write_s, 3)}, csv_correct(out, model.classes))


def stage_figures() -> dict:
    """What the pipeline measured on the same test images: evaluate's test accuracy (the
    checkpoint, PyTorch) and the served ONNX model's (the export stage)."""
    metrics = json.loads((paths.REPORTS / "metrics.json").read_text())
    served = json.loads((paths.REPORTS / "compression.json").read_text())
    return {"evaluate_test_accuracy": metrics["test_accuracy"], "onnx_reference_accuracy": served["served_test_accuracy"]}


def checkpoint_and_tta(files: list[Path], onnx_model, options, onnx_correct: np.ndarray, reference: dict) -> dict:
    """The checkpoint's accuracy on the same files, and TTA's paired difference through ONNX."""
    from dataclasses import replace

    from skillpack.deploy.predict import load_checkpoint
    from skillpack.stats import paired_accuracy_difference

    checkpoint, _ = load_checkpoint(paths.MODEL_FILE)
    _, ckpt_correct = timed_run(files, checkpoint, options, CACHE / "predictions_checkpoint.csv")
    tta, tta_correct = timed_run(files, onnx_model, replace(options, tta_crop_padding=2), CACHE / "predictions_tta.csv")
    delta, low, high, p = paired_accuracy_difference(tta_correct, onnx_correct)
    return {"checkpoint_accuracy": round(float(ckpt_correct.mean()), 4),
            "checkpoint_matches_evaluate": round(float(ckpt_correct.mean()), 4) == round(reference["evaluate_test_accuracy"], 4),
            "tta_accuracy": round(float(tta_correct.mean()), 4), "tta_images_per_s": tta["images_per_s"],
            "tta_delta_points": round(float(100 * delta), 3),
            "tta_ci_points": [round(float(100 * low), 3), round(float(100 * high), 3)],
            "tta_mcnemar_p": p}


def main(argv=None) -> dict:
    from skillpack.deploy.predict import PredictOptions, expand_inputs
    from skillpack.deploy.serving.model import load_onnx

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(paths.EXPORTED / "model.onnx"))
    parser.add_argument("--n", type=int, default=10_000, help="how many of the test images (the first n)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    folder = CACHE / "fashion_mnist_test"
    write_test_pngs(folder, args.n)
    model = load_onnx(args.model, args.threads)
    options = PredictOptions(top_k=3, batch_size=args.batch_size)
    files = sorted(expand_inputs([str(folder)])[0][:args.n])
    timing, correct = timed_run(files, model, options, CACHE / "predictions.csv")
    reference = stage_figures()
    figures = {**timing, "accuracy": round(float(correct.mean()), 4), **reference,
               "onnx_gap_points": round(100 * (float(correct.mean()) - reference["onnx_reference_accuracy"]), 3),
               **checkpoint_and_tta(files, model, options, correct, reference),
               "threads": args.threads, "batch_size": args.batch_size, "model": model.name,
               "command": f"python -m benchmarks.predict --n {args.n}",
               "measures": "in one process, the model loaded: folder walk, reading + decoding every PNG, "
                           "ONNX Runtime on batches, the CSV written (interpreter start and model load excluded)"}
    seconds, run = timing["seconds"], timing
    print(f"{figures['images_per_s']:,.0f} images/s on {run['n_images']} PNGs (ONNX Runtime on {args.threads} threads): "
          f"reading + decoding {run['read_decode_s']:.2f} s, model {run['model_s']:.2f} s, CSV {run['csv_s']:.2f} s of "
          f"{seconds:.2f} s; top-1 accuracy {figures['accuracy']:.4f} (the export stage: "
          f"{figures['onnx_reference_accuracy']:.4f}); checkpoint {figures['checkpoint_accuracy']:.4f} (evaluate: "
          f"{figures['evaluate_test_accuracy']:.4f}); TTA {figures['tta_delta_points']:+.2f} points "
          f"{figures['tta_ci_points']} -> {save('predict', figures)}")
    return figures


if __name__ == "__main__":
    main()
