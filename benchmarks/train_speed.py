"""Training throughput: the article's own loop vs skillpack's engine, in one run.

    python -m benchmarks.train_speed [--images 12800] [--models sp_cnn_m sp_cnn_s] [--batch 256]

(a) plain: a torch Dataset of PIL images + the article's transforms.Compose (flip, rotation
    30, ColorJitter(0.2, 0.2), ToTensor, Normalize) + DataLoader, best of 0 and 1 workers;
(b) engine: skillpack's Trainer with the same transforms as per-sample batch augmentation.
Same model, batch size and number of images. Prints img/s, the ratio, and the achieved
training GFLOP/s next to a matmul GFLOP/s measured on the same machine; writes
benchmarks/results/train_speed.json.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from benchmarks.common import matmul_gflops, save
from skillpack.config import TrainParams
from skillpack.data import load_source
from skillpack.engine import Trainer, build_classifier, channel_stats
from skillpack.models import count_macs


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


def plain_loop(images, labels, model_name, batch, workers, mean, std) -> float:
    torch.manual_seed(0)
    model = build_classifier(model_name, 10, (28, 28, 1), TrainParams().head)
    model.mean.fill_(0.0)  # the article's transforms normalise already: the model's own
    model.std.fill_(1.0)   # normalisation becomes the identity
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loader = DataLoader(PILDataset(images, labels, article_transform(mean, std)), batch_size=batch, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=False)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    seen, t0 = 0, time.perf_counter()
    for x, y in loader:
        loss = criterion(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - t0)


def engine_loop(images, labels, model_name, batch) -> float:
    cfg = TrainParams.model_validate({
        "model": model_name, "epochs": 1, "batch_size": batch, "amp": "off",
        "optimizer": {"lr": 0.05}, "schedule": {"name": "none", "warmup_epochs": 0},
        "augment": {"hflip": True, "crop_padding": 0, "rotation": 30,
                    "color_jitter": {"brightness": 0.2, "contrast": 0.2}},
    })
    torch.manual_seed(0)
    model = build_classifier(model_name, 10, (28, 28, 1), cfg.head, *channel_stats(images))
    trainer = Trainer(model, cfg, seed=0, progress=False)
    result = trainer.fit(images, labels, images[:0], labels[:0])
    return (len(labels) // batch) * batch / result.train_seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12800)
    parser.add_argument("--models", nargs="+", default=["sp_cnn_m", "sp_cnn_s"],
                        help="the first one's figures are the top-level keys")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = load_source("fashion_mnist").splits["train"]
    images, labels = train.images[:args.images], train.labels[:args.images]
    gflops = matmul_gflops()
    per_model = {name: measure(name, images, labels, args.batch, gflops) for name in args.models}
    figures = {**per_model[args.models[0]], "matmul_gflops": round(gflops, 1), "models": per_model,
               "batch": args.batch, "images": args.images}
    print(f"wrote {save('train_speed', figures)}")
    return figures


def measure(name: str, images, labels, batch: int, gflops: float) -> dict:
    mean, std = float(images.mean()), float(images.std())
    plain = {w: plain_loop(images, labels, name, batch, w, mean, std) for w in (0, 1)}
    plain_best = max(plain.values())
    engine = engine_loop(images, labels, name, batch)
    macs = count_macs(build_classifier(name, 10, (28, 28, 1), TrainParams().head), (1, 28, 28))
    # direct-convolution count: forward 2*MACs FLOPs, backward ~2x forward. oneDNN may run 3x3
    # convolutions as Winograd, which does fewer multiplications than this count.
    train_gflops = 6 * macs * engine / 1e9
    figures = {
        "model": name, "macs": macs, "plain_img_s": round(plain_best, 1),
        "plain_img_s_by_workers": {str(k): round(v, 1) for k, v in plain.items()},
        "engine_img_s": round(engine, 1), "ratio": round(engine / plain_best, 2),
        "train_gflops": round(train_gflops, 1), "train_fraction_of_matmul": round(train_gflops / gflops, 3),
    }
    print(f"{name}: plain DataLoader loop {plain_best:.0f} img/s (workers 0: {plain[0]:.0f}, 1: {plain[1]:.0f}); "
          f"skillpack engine {engine:.0f} img/s -> {figures['ratio']:.2f}x; training {train_gflops:.1f} GFLOP/s = "
          f"{figures['train_fraction_of_matmul']:.0%} of matmul {gflops:.1f} GFLOP/s", flush=True)
    return figures


if __name__ == "__main__":
    main()
