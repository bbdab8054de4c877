"""Training throughput: the article's own loop vs skillpack's engine, in one run.

    python -m benchmarks.train_speed [--images 12800] [--models sp_cnn_m sp_cnn_s] [--batch 256]

(a) plain: a torch Dataset of PIL images + the article's transforms.Compose (flip, rotation
    30, ColorJitter(0.2, 0.2), ToTensor, Normalize) + DataLoader, best of 0 and 1 workers;
(b) engine: skillpack's Trainer with the same transforms as per-sample batch augmentation, in
    fp32 and, on a CPU with bf16 units (AVX512-BF16 or AMX), under bf16 autocast (recipe bf16);
    the top-level engine figures are the faster of the two (`engine_amp`).
Same model, batch size and number of images. Prints img/s, the ratio, and the achieved
training GFLOP/s next to a matmul GFLOP/s measured on the same machine; writes
benchmarks/results/train_speed.json.

Also measures, on one fixed batch (no data path), what engine choices are worth:
deterministic mode's NaN fill of uninitialised memory (switched off by the engine),
torch.compile of the backbone (not adopted: its compile seconds are reported next to its gain),
bf16 autocast, and the step's img/s by batch size and by intra-op threads.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.utils.deterministic
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from benchmarks.common import matmul_gflops, save
from skillpack.config import DataParams, TrainParams
from skillpack.data.store import prepare_splits
from skillpack.train.device import cpu_has_bf16_units
from skillpack.train.models import build_classifier, count_macs
from skillpack.train.runs import RunData, train_model


class PILDataset(Dataset):
    """What the article's sample assumes: one PIL image per __getitem__, transformed."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i][..., 0])), int(self.labels[i])


def article_transform(mean: float, std: float):
    return transforms.Compose([
        transforms.RandomHorizontalFlip(),
        transforms.RandomRotation(30),
        transforms.ColorJitter(brightness=0.2, contrast=0.2),
        transforms.ToTensor(),
        transforms.Normalize(mean=[mean / 255], std=[std / 255]),
    ])


def sgd_step(model: nn.Module, bf16: bool = False):
    """One training step of the article's kind (SGD + Nesterov, label-smoothed cross-entropy),
    shared by the plain loop and the fixed-batch measurements; `bf16`: under CPU bf16 autocast."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def plain_loop(images, labels, model_name, batch, workers, mean, std) -> float:
    torch.use_deterministic_algorithms(False)  # the article's loop runs torch's defaults
    torch.manual_seed(0)
    model = build_classifier(model_name, 10, (28, 28, 1), TrainParams().head)
    model.mean.fill_(0.0)  # the article's transforms normalise already: the model's own
    model.std.fill_(1.0)   # normalisation becomes the identity
    step = sgd_step(model)
    loader = DataLoader(PILDataset(images, labels, article_transform(mean, std)), batch_size=batch, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=False)
    model.train()
    seen, t0 = 0, time.perf_counter()
    for x, y in loader:
        step(x, y)
        seen += len(y)
    return seen / (time.perf_counter() - t0)


def engine_loop(images, labels, model_name, batch, amp: str = "off") -> float:
    cfg = TrainParams.model_validate({
        "model": model_name, "epochs": 1, "batch_size": batch, "amp": amp,
        "optimizer": {"lr": 0.05}, "schedule": {"name": "none", "warmup_epochs": 0},
        "augment": {"hflip": True, "crop_padding": 0, "rotation": 30,
                    "color_jitter": {"brightness": 0.2, "contrast": 0.2}},
    })
    trained = train_model(cfg, RunData((images, labels), (images[:0], labels[:0]), 10), seed=0)
    return (len(labels) // batch) * batch / trained.train_seconds


@contextmanager
def nan_fill(enabled: bool):
    """Deterministic mode with or without its NaN fill of uninitialised memory."""
    before = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = enabled
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = before


def fixed_batch_step_rate(model_name: str, batch: int, compiled: bool = False, rounds: int = 5,
                          steps: int = 10, bf16: bool = False) -> tuple[float, float]:
    """(median img/s of the training step on one fixed channels_last batch, seconds of the two
    first steps - the compile time when `compiled`)."""
    torch.manual_seed(0)
    model = build_classifier(model_name, 10, (28, 28, 1), TrainParams().head).to(memory_format=torch.channels_last)
    if compiled:
        # a fresh inductor cache, so that compile_s is a cold compile, as a user's first run pays it
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
        model.backbone.compile()
    x = (torch.rand(batch, 1, 28, 28) * 255).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    step = sgd_step(model, bf16)
    t0 = time.perf_counter()
    step(x, y), step(x, y)
    first = time.perf_counter() - t0
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            step(x, y)
        rates.append(steps * batch / (time.perf_counter() - t0))
    return float(np.median(rates)), first


def engine_choices(model_name: str, batch: int) -> dict:
    with nan_fill(True):
        filled, _ = fixed_batch_step_rate(model_name, batch)
    with nan_fill(False):
        unfilled, _ = fixed_batch_step_rate(model_name, batch)
        compiled, compile_s = fixed_batch_step_rate(model_name, batch, compiled=True)
        bf16 = fixed_batch_step_rate(model_name, batch, bf16=True)[0] if cpu_has_bf16_units() else None
        by_batch = {str(b): round(fixed_batch_step_rate(model_name, b)[0], 1) for b in (64, 128, 256, 512)}
        by_threads, configured = {}, torch.get_num_threads()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            by_threads[str(threads)] = round(fixed_batch_step_rate(model_name, batch)[0], 1)
        torch.set_num_threads(configured)
    figures = {"step_img_s_nan_fill": round(filled, 1), "step_img_s": round(unfilled, 1),
               "step_img_s_by_batch": by_batch, "step_img_s_by_threads": by_threads,
               "deterministic_fill_speedup": round(unfilled / filled, 3),
               "step_img_s_compiled": round(compiled, 1), "compile_speedup": round(compiled / unfilled, 3),
               "compile_s": round(compile_s, 1), "cpu_has_bf16_units": cpu_has_bf16_units(),
               "step_img_s_bf16": None if bf16 is None else round(bf16, 1),
               "bf16_speedup": None if bf16 is None else round(bf16 / unfilled, 3)}
    print(f"{model_name}: fixed-batch step {unfilled:.0f} img/s; with deterministic NaN fill {filled:.0f} "
          f"({figures['deterministic_fill_speedup']:.2f}x saved); torch.compile {compiled:.0f} img/s "
          f"({figures['compile_speedup']:.2f}x) after {compile_s:.0f} s of compiling; bf16 autocast "
          f"{figures['bf16_speedup'] or 'n/a (no bf16 units)'}x; img/s by batch {by_batch}, "
          f"by threads {by_threads}", flush=True)
    return figures


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12800)
    parser.add_argument("--models", nargs="+", default=["sp_cnn_m", "sp_cnn_s"],
                        help="the first one's figures are the top-level keys")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = prepare_splits(DataParams(), seed=0)[1]["train"]
    images, labels = train.images[:args.images], train.labels[:args.images]
    gflops = matmul_gflops()
    per_model = {name: measure(name, images, labels, args.batch, gflops, args.repeats) for name in args.models}
    figures = {**per_model[args.models[0]], "matmul_gflops": round(gflops, 1), "models": per_model,
               "batch": args.batch, "images": args.images, "repeats": args.repeats}
    print(f"wrote {save('train_speed', figures)}")
    return figures


def engine_settings() -> dict[str, str]:
    """engine label -> train.amp: fp32 (what params.yaml trains on a CPU) and, on a CPU with bf16
    units, bf16 autocast (recipe bf16)."""
    return {"fp32": "off", **({"bf16": "bf16"} if cpu_has_bf16_units() else {})}


def measure(name: str, images, labels, batch: int, gflops: float, repeats: int) -> dict:
    """Plain (0 and 1 workers) and engine runs alternate `repeats` times; the figures are medians,
    so that a noisy spell of the machine does not land on one side only. The top-level engine
    figures are the fastest engine setting this CPU has (`engine_amp`)."""
    mean, std = float(images.mean()), float(images.std())
    plain_runs, engine_runs = {0: [], 1: []}, {label: [] for label in engine_settings()}
    for _ in range(repeats):
        for workers in plain_runs:
            plain_runs[workers].append(plain_loop(images, labels, name, batch, workers, mean, std))
        for label, amp in engine_settings().items():
            engine_runs[label].append(engine_loop(images, labels, name, batch, amp))
    plain = {w: float(np.median(runs)) for w, runs in plain_runs.items()}
    plain_best = max(plain.values())
    engine = {label: float(np.median(runs)) for label, runs in engine_runs.items()}
    fastest = max(engine, key=engine.get)
    macs = count_macs(build_classifier(name, 10, (28, 28, 1), TrainParams().head), (1, 28, 28))
    # direct-convolution count: forward 2*MACs FLOPs, backward ~2x forward. oneDNN may run 3x3
    # convolutions as Winograd, which does fewer multiplications than this count.
    train_gflops = {label: 6 * macs * img_s / 1e9 for label, img_s in engine.items()}
    best_plain_by_repeat = [max(p0, p1) for p0, p1 in zip(*plain_runs.values())]
    figures = {
        "model": name, "macs": macs, "plain_img_s": round(plain_best, 1),
        "plain_img_s_by_workers": {str(k): round(v, 1) for k, v in plain.items()},
        "engine_amp": fastest, "engine_img_s": round(engine[fastest], 1),
        "ratio": round(engine[fastest] / plain_best, 2),
        "ratio_by_repeat": [round(e / p, 2) for e, p in zip(engine_runs[fastest], best_plain_by_repeat)],
        "engines": {label: {"img_s": round(img_s, 1), "ratio": round(img_s / plain_best, 2),
                            "ratio_by_repeat": [round(e / p, 2) for e, p in zip(engine_runs[label], best_plain_by_repeat)],
                            "train_gflops": round(train_gflops[label], 1)}
                    for label, img_s in engine.items()},
        # against the fp32 matmul, the fp32 engine: like for like
        "train_gflops": round(train_gflops["fp32"], 1), "train_fraction_of_matmul": round(train_gflops["fp32"] / gflops, 3),
        "engine_choices": engine_choices(name, batch),
    }
    engines = ", ".join(f"{label} {img_s:.0f} img/s ({img_s / plain_best:.2f}x)" for label, img_s in engine.items())
    print(f"{name}: plain DataLoader loop {plain_best:.0f} img/s (workers 0: {plain[0]:.0f}, 1: {plain[1]:.0f}); "
          f"skillpack engine {engines} (fastest by repeat {figures['ratio_by_repeat']}); "
          f"fp32 training {train_gflops['fp32']:.1f} GFLOP/s = {figures['train_fraction_of_matmul']:.0%} of matmul "
          f"{gflops:.1f} GFLOP/s", flush=True)
    return figures


if __name__ == "__main__":
    main()
