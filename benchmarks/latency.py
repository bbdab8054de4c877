"""Inference latency of the trained model in every runtime this machine has, in one run.

    python -m benchmarks.latency                                   # CPU: eager, ONNX fp32, ONNX int8, AOTInductor
    python -m benchmarks.latency --batches 1 64 1024 --seconds 3   # on a CUDA machine: + eager GPU, AOTInductor fp16, TensorRT

Reads models/model.pt and the prepared test set (`dvc repro train`; on a machine without the
pipeline, pass --model and --data), exports to a temporary folder with the functions of the
export stage, checks every runtime against eager PyTorch on --parity-images test images, and
times each at each batch (median and 95th percentile per call). reports/compress.json, when
present, gives the pruning and distillation figures. Writes benchmarks/results/latency.json
and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from skillpack.runtime import DEFAULT_OMP_WAIT_POLICY, configure

configure(omp_wait_policy=None)   # timed as a torch user's process runs: OpenMP's default, set before torch loads

import numpy as np
import torch

from benchmarks.common import save
from benchmarks.docs_deploy import latency_table
from skillpack import paths
from skillpack.deploy import export
from skillpack.deploy.compress import calibration_images
from skillpack.metrics import accuracy
from skillpack.train.checkpoint import load_classifier


def runners_of(model, shape, folder: Path, train_images, aoti_cpu: bool) -> tuple[dict, dict, dict]:
    """{runtime: runner}, {runtime: build seconds}, {runtime: skip reason}: eager PyTorch (on the GPU
    too where there is one) and every runtime the export stage builds."""
    built, skipped = export.build_runtimes(model, shape, folder, calibration_images(train_images, 512, 0),
                                           aoti_cpu=aoti_cpu)
    runners = {"eager cpu": export.eager_runner(model)}
    if torch.cuda.is_available():
        gpu_model = export.raw_pixels(model, torch.float32, "cuda")
        runners["eager gpu"] = lambda x: gpu_model(torch.from_numpy(x).cuda()).cpu().numpy()
    runners.update({name: b.run for name, b in built.items()})
    return runners, {name: b.build_s for name, b in built.items()}, skipped


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(paths.MODEL_FILE))
    parser.add_argument("--data", default=str(paths.PREPARED))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per (runtime, batch)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parity-images", type=int, default=10_000)
    parser.add_argument("--no-aoti-cpu", action="store_true", help="skip the CPU AOTInductor build (~30 s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from skillpack.data import PreparedStore

    store = PreparedStore(args.data)
    test_x, test_y = (np.array(a) for a in store.arrays("test"))
    model, _ = load_classifier(args.model)
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as folder:
        runners, build_s, skipped = runners_of(model, store.image_shape, Path(folder), store.arrays("train")[0],
                                               not args.no_aoti_cpu)
        x, y = test_x[:args.parity_images], test_y[:args.parity_images]
        reference = export.logits_of(runners["eager cpu"], x)
        checks = {name: parity_and_accuracy(reference, export.logits_of(run, x), y) for name, run in runners.items()}
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        latency = {name: export.latency_by_batch(run, test_x, args.batches, args.seconds, sync)
                   for name, run in runners.items()}
    figures = summary(latency, checks, cuda)
    figures.update({"runtimes": {name: {"latency": latency[name], **checks[name], "build_s": build_s.get(name)}
                                 for name in runners},
                    "skipped": skipped, "batches": args.batches, "omp_wait_policy": DEFAULT_OMP_WAIT_POLICY,
                    "parity_images": len(y), "model": args.model})
    figures.update(compression_figures())
    print("\n".join(latency_table(figures)))
    print(f"wrote {save('latency', figures)}")
    return figures


def parity_and_accuracy(reference, logits, labels) -> dict:
    return {**export.parity(reference, logits).as_dict(), "test_accuracy": accuracy(logits, labels)}


def summary(latency: dict, checks: dict, cuda: bool) -> dict:
    """The keys docs and claims quote, from batch 1."""
    b1 = {name: cells["1"]["p50_ms"] for name, cells in latency.items() if "1" in cells}
    out = {"eager_b1_ms": b1.get("eager cpu"), "onnx_b1_ms": b1.get("onnx fp32"), "int8_b1_ms": b1.get("onnx int8"),
           "onnx_vs_eager_b1": b1["onnx fp32"] / b1["eager cpu"] if "onnx fp32" in b1 else None,
           "int8_vs_onnx_b1": b1["onnx int8"] / b1["onnx fp32"] if "onnx int8" in b1 else None,
           "fp32_max_abs_diff": checks["onnx fp32"]["max_abs_diff"],
           "int8_top1_agreement": checks["onnx int8"]["top1_agreement"],
           "int8_acc_drop_points": 100 * (checks["eager cpu"]["test_accuracy"] - checks["onnx int8"]["test_accuracy"]),
           "fastest_b1": min(b1, key=b1.get), "device": "cuda" if cuda else "cpu"}
    if cuda:
        out.update(gpu_name=torch.cuda.get_device_name(0), eager_gpu_b1_ms=b1.get("eager gpu"),
                   aoti_gpu_b1_ms=b1.get("aoti cuda fp16"))
        out["aoti_vs_eager_gpu_b1"] = out["aoti_gpu_b1_ms"] / out["eager_gpu_b1_ms"]
        for precision in ("fp16", "int8"):
            out[f"tensorrt_{precision}_b1_ms"] = b1.get(f"tensorrt {precision}")
    return out


def compression_figures() -> dict:
    """The compress stage's variants against the trained model, when it ran (one seed: the
    intervals over seeds are the ablation's light.* claims)."""
    if not paths.COMPRESS_METRICS.is_file():
        return {"pruned_acc_drop_points": None, "student_acc_drop_points": None}
    variants = json.loads(paths.COMPRESS_METRICS.read_text())["variants"]
    return {"pruned_acc_drop_points": -variants["pruned"]["delta_points"],
            "student_acc_drop_points": -variants["student"]["delta_points"]}


if __name__ == "__main__":
    main()
