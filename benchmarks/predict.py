"""Throughput of `skillpack predict` through the exported ONNX model on PNG files.

    python -m benchmarks.predict [--model models/export/model.onnx] [--n 10000] [--threads N] [--batch-size 256]

Writes the Fashion-MNIST test images as PNG files (once) into benchmarks/cache/predict/, named
<index>_<label>.png, predicts the first N of them as the command does (the folder walk, the
service's decoding of each file, ONNX Runtime on batches, the CSV written atomically), in this
process, with the model already loaded. Reports images per second, where the time goes (reading
+ decoding the files vs. the model), and the CSV's top-1 accuracy against the labels in the file
names. Writes benchmarks/results/predict.json.
"""
from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

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


def csv_accuracy(csv_path: Path, classes: list[str]) -> float:
    """Share of rows whose label_1 is the class in the file's name (<index>_<label>.png)."""
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    right = sum(classes.index(row["label_1"]) == int(Path(row["path"]).stem.split("_")[1]) for row in rows)
    return right / len(rows)


def main(argv=None) -> dict:
    from skillpack.deploy.predict import PredictOptions, expand_inputs, write_predictions
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
    t0 = time.perf_counter()
    files = expand_inputs([str(folder)])[0][:args.n]
    run = write_predictions(files, model, options, CACHE / "predictions.csv", report_skip=lambda path, why: None)
    seconds = time.perf_counter() - t0
    figures = {"images_per_s": round(run.predicted / seconds, 1), "n_images": run.predicted, "n_skipped": len(run.skipped),
               "accuracy": round(csv_accuracy(CACHE / "predictions.csv", model.classes), 4),
               "seconds": round(seconds, 3), "read_decode_s": round(run.read_decode_s, 3),
               "model_s": round(run.model_s, 3), "csv_s": round(run.write_s, 3), "threads": args.threads,
               "batch_size": args.batch_size,
               "model": model.name, "command": f"python -m benchmarks.predict --n {args.n}",
               "measures": "in one process, the model loaded: folder walk, reading + decoding every PNG, "
                           "ONNX Runtime on batches, the CSV written (interpreter start and model load excluded)"}
    print(f"{figures['images_per_s']:,.0f} images/s on {run.predicted} PNGs (ONNX Runtime on {args.threads} threads): "
          f"reading + decoding {run.read_decode_s:.2f} s, model {run.model_s:.2f} s, CSV {run.write_s:.2f} s of "
          f"{seconds:.2f} s; top-1 accuracy "
          f"{figures['accuracy']:.4f} -> {save('predict', figures)}")
    return figures


if __name__ == "__main__":
    main()
