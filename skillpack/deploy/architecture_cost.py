"""What an architecture costs to serve: its parameters, MACs and ONNX Runtime latency on this
CPU - an architecture search's second objective. It lives in deploy because it measures the
exported form the service runs (export_onnx, onnx_session), and the train wing may not import
deploy; train's count_params / count_macs give the size figures.

The model is exported as the export stage exports it (uint8 pixels in, the preprocessing inside,
a dynamic batch axis) with untrained weights: latency does not depend on the weights' values.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ArchitectureCost:
    model: str
    params: int            # the classifier's: backbone + linear head
    macs: int              # of one forward pass on one image
    image_shape: tuple[int, int, int]
    threads: int           # ONNX Runtime intra-op threads
    onnx_bytes: int
    max_abs_diff: float    # ONNX Runtime's logits against eager torch's, on the timed batch
    latency: dict[str, dict] = field(default_factory=dict)   # batch -> {p50_ms, p95_ms, repeats}

    def as_dict(self) -> dict:
        return {**self.__dict__, "image_shape": list(self.image_shape)}


def measure_architecture(name: str, image_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10, *,
                         seed: int = 0, **timing) -> ArchitectureCost:
    """Build `name` (any train.model name) as the train stage builds a classifier for
    `image_shape` (H, W, C) and `num_classes` (seeded, untrained) and measure it (measure_classifier;
    `timing`: its keyword arguments)."""
    import torch

    from skillpack.config import HeadParams
    from skillpack.train.models import build_classifier

    torch.manual_seed(seed)
    model = build_classifier(name, num_classes, image_shape, HeadParams())
    return measure_classifier(model, name, image_shape, seed=seed, **timing)


def measure_classifier(model, name: str, image_shape: tuple[int, int, int], *, batches: tuple[int, ...] = (1, 64),
                       runs: int = 50, warmup: int = 10, threads: int = 1, opset: int = 18, seed: int = 0,
                       folder: str | Path | None = None) -> ArchitectureCost:
    """Export the classifier `model` to ONNX (into `folder`, kept; else a temporary folder) and
    time ONNX Runtime with `threads` intra-op threads (serve.threads is the service's): `warmup`
    calls, then the median and 95th percentile of `runs` calls, per batch size."""
    from skillpack.deploy.export import eager_runner, export_onnx, measure_latency, onnx_runner, onnx_session
    from skillpack.train.models import count_macs, count_params

    h, w, c = image_shape
    model = model.eval()
    pixels = np.random.default_rng(seed).integers(0, 256, (max(batches), *image_shape), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(folder or tmp) / "model.onnx", image_shape, opset)
        run = onnx_runner(onnx_session(path, threads))
        diff = float(np.abs(run(pixels) - eager_runner(model)(pixels)).max())
        latency = {str(b): measure_latency(run, pixels[:b], seconds=0.0, warmup=warmup, min_repeats=runs).as_dict()
                   for b in batches}
        size = path.stat().st_size
    return ArchitectureCost(name, count_params(model), count_macs(model, (c, h, w)), image_shape, threads, size,
                            diff, latency)


def main(argv: list[str] | None = None) -> int:
    """python -m skillpack.deploy.architecture_cost NAME... [--size 28] [--chans 1] [--threads 1]"""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("names", nargs="+")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--chans", type=int, default=1)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args(argv)
    for name in args.names:
        cost = measure_architecture(name, (args.size, args.size, args.chans), args.classes, threads=args.threads,
                                    runs=args.runs)
        print(json.dumps(cost.as_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
