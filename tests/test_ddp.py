"""torchrun DDP (gloo, 2 CPU processes) against one process on the same global batch.

This file is also the training script both runs execute (`python tests/test_ddp.py OUT` and
`torchrun --nproc_per_node 2 tests/test_ddp.py OUT`), so the two differ only in torchrun.

What must be exact, and what summation order explains. With global batch B split as B/2 per
rank, DDP's averaged gradient is the one-process gradient on B, and the engine gives every
rank the same shuffled, augmented (flip + crop, from the epoch generator) global batch. With
batch-independent layers (this comparison's model replaces BatchNorm by GroupNorm and turns
dropout off) DDP therefore computes, bit for bit, what one process computes when it runs each
batch as the same two halves, one thread each, and sums the halves' gradients (the
`groupnorm_half_batches` run): every rank's forward and backward is that process's on that
half, gloo's sum of two addends is commutative, and the 1/B against 2/B scalings are powers
of two, which float rounding commutes with. So the test demands equal weights and
evaluation figures there, no tolerance at all. Against one process running the whole batch
at once, the only difference is where float sums are split, which 32 SGD steps through ReLUs
amplify by an amount that depends on the CPU's kernels (DDP's distance, below, measured 5e-4
on a Zen 5 with AVX-512 and 1.5e-2 on an AVX2-only EPYC): so the test measures that amount on
the machine running it, with the half-batch run and a one-thread whole-batch run (Zen 5:
5e-4 and 1e-2 of the distance the weights moved; two halves at two threads, tried by hand,
3e-2). The negative control (the same DDP run with DistributedDataParallel taken out, so no
gradient is all-reduced) must land more than CONTROL_MARGIN times the larger of the two away
(0.79 of the distance moved on the Zen 5, 80 times it): that shows the comparison can fail.
With the project's own BatchNorm model each rank normalises with its half batch's statistics
(SyncBatchNorm is GPU-only): close, not equal (0.14 of the distance here) - its figures are
printed and held to a loose bound. Under torchrun the
GroupNorm run is repeated on the resident path (runtime.resident=true: every rank holds the
training set on its device and draws the same permutation and augmentation there); on a CPU
that path is bit-identical to the host path, so its weights must equal the host DDP run's.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

N_TRAIN, N_VAL, BATCH = 2048, 500, 64     # 32 steps of one epoch
CONTROL_MARGIN = 10   # the no-all-reduce control vs the summation-order distance measured in the same run
ONE_THREAD = ("groupnorm_half_batches", "groupnorm_one_thread")   # one-process runs at a DDP rank's thread count


def _config(variant: str):
    from skillpack.config import TrainParams

    return TrainParams.model_validate({
        "model": "sp_cnn_s", "epochs": 1, "batch_size": BATCH, "device": "cpu", "amp": "off",
        "threads": 1 if variant in ONE_THREAD else 2,   # under torchrun each of the 2 ranks gets 1
        "resident": variant == "groupnorm_resident",
        "optimizer": {"lr": 0.05}, "schedule": {"name": "none", "warmup_epochs": 0},
        "head": {"dropout": 0.1 if variant == "batchnorm" else 0.0},
        "augment": {"hflip": True, "crop_padding": 2}})   # epoch-generator augmentation: same on every rank


def _initial_model(variant: str, data):
    """sp_cnn_s as the engine builds it; for the exact comparison its BatchNorms become
    GroupNorms (per-sample statistics: a half batch normalises like the whole batch)."""
    import torch
    from torch import nn

    from skillpack.train.models import build_classifier, channel_stats

    torch.manual_seed(0)
    model = build_classifier("sp_cnn_s", data.num_classes, data.image_shape, _config(variant).head,
                             *channel_stats(data.train[0]))
    if variant != "batchnorm":
        for module in list(model.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.BatchNorm2d):
                    setattr(module, name, nn.GroupNorm(4, child.num_features))
    if variant == "groupnorm_half_batches":
        model.__class__ = _in_two_halves(type(model))
    return model


def _in_two_halves(classifier: type) -> type:
    """`classifier` training on every batch as two halves (the two ranks' shards, World.shard),
    each through the whole network: a half's gradient comes out of its own forward and backward
    and autograd sums the two, as DDP's all-reduce does. Evaluation takes whole batches, as the
    ranks' does."""
    import torch

    class InTwoHalves(classifier):
        def embed(self, x):
            if not self.training:
                return classifier.embed(self, x)
            return torch.cat([classifier.embed(self, half) for half in x.chunk(2)])

        def classify(self, embeddings, labels=None):
            if not self.training:
                return classifier.classify(self, embeddings, labels)
            halves = zip(embeddings.chunk(2), labels.chunk(2) if labels is not None else (None, None))
            return torch.cat([classifier.classify(self, e, y) for e, y in halves])
    return InTwoHalves


def worker(out: Path) -> None:
    """One run of every variant; each process writes its weights and figures."""
    import torch

    from skillpack.data import load_source
    from skillpack.train import distributed
    from skillpack.train.runs import RunData, train_model

    split = load_source("fashion_mnist").splits["train"]
    data = RunData((split.images[:N_TRAIN], split.labels[:N_TRAIN]),
                   (split.images[-N_VAL:], split.labels[-N_VAL:]), 10)
    rank, world = distributed.rank(), distributed.world_size()
    variants = ["groupnorm", "batchnorm"] + (["groupnorm_resident", "no_allreduce"] if world > 1 else list(ONE_THREAD))
    for variant in variants:
        if variant == "no_allreduce":  # negative control: DDP's gradient averaging taken out
            distributed.World.wrap = lambda self, module: module
        t0 = time.perf_counter()
        written = []
        init = _initial_model(variant, data)
        if rank == 0:
            torch.save(init.state_dict(), out / f"{variant}-init.pt")
        trained = train_model(_config(variant), data, seed=0, init=init,
                              checkpoint=out / f"{variant}-checkpoint-rank{rank}-of{world}.pt",
                              on_epoch=lambda record, history, model, written=written: written.append(record.epoch))
        last = trained.history[-1]
        torch.save({k: v.detach().cpu() for k, v in trained.model.state_dict().items()},
                   out / f"{variant}-rank{rank}-of{world}.pt")
        (out / f"{variant}-rank{rank}-of{world}.json").write_text(json.dumps({
            **last.as_dict(), "seconds": time.perf_counter() - t0, "torch_threads": torch.get_num_threads(),
            "on_epoch_calls": written}))


def _launch(out: Path, processes: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("WORLD_SIZE", None)
    script = str(Path(__file__).resolve())
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd = [sys.executable, script, str(out)] if processes == 1 else [*torchrun, script, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def _distance(a: dict, b: dict) -> float:
    """L2 distance between two state dicts' floating tensors."""
    return math.sqrt(sum(((a[k].double() - b[k].double()) ** 2).sum().item() for k in a if a[k].is_floating_point()))


def test_ddp_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    import torch
    from conftest import require_fmnist

    require_fmnist()
    t0 = time.perf_counter()
    _launch(tmp_path, 1)
    t1 = time.perf_counter()
    _launch(tmp_path, 2)
    t2 = time.perf_counter()

    def load(variant, rank, world):
        return (torch.load(tmp_path / f"{variant}-rank{rank}-of{world}.pt"),
                json.loads((tmp_path / f"{variant}-rank{rank}-of{world}.json").read_text()))

    init, bn_init = torch.load(tmp_path / "groupnorm-init.pt"), torch.load(tmp_path / "batchnorm-init.pt")
    (one, one_fig), (r0, r0_fig) = load("groupnorm", 0, 1), load("groupnorm", 0, 2)
    r1, r1_fig = load("groupnorm", 1, 2)
    (control, control_fig), (control1, _) = load("no_allreduce", 0, 2), load("no_allreduce", 1, 2)
    (bn_one, bn_one_fig), (bn_r0, bn_r0_fig), (bn_r1, _) = (load("batchnorm", 0, 1), load("batchnorm", 0, 2),
                                                            load("batchnorm", 1, 2))
    (halves, halves_fig), (one_thread, _) = load("groupnorm_half_batches", 0, 1), load("groupnorm_one_thread", 0, 1)
    moved = _distance(one, init)
    rel, control_rel = _distance(one, r0) / moved, _distance(one, control) / moved
    # how far float summation order alone moves one process's weights on this machine
    reordered = {"two halves, 1 thread": _distance(one, halves) / moved,
                 "whole batch, 1 thread": _distance(one, one_thread) / moved}
    summation_order = max(reordered.values())
    print(f"\n[ddp] one process {t1 - t0:.1f}s, torchrun x2 {t2 - t1:.1f}s (4 and 3 trainings, process start included)"
          f"\n[ddp] groupnorm, |W - W_one| / |W_one - W_init|: DDP {rel:.2e}; one process reordered: "
          + ", ".join(f"{k} {v:.2e}" for k, v in reordered.items())
          + f"; DDP vs two halves in one process {_distance(halves, r0) / moved:.2e}"
          f"\n[ddp] groupnorm: val loss {one_fig['val_loss']:.6f} (one process) vs {r0_fig['val_loss']:.6f} (DDP), "
          f"val acc {one_fig['val_acc']:.4f} vs {r0_fig['val_acc']:.4f}, train loss "
          f"{one_fig['train_loss']:.6f} vs {r0_fig['train_loss']:.6f}"
          f"\n[ddp] no all-reduce (control): {control_rel:.2e}; val loss {control_fig['val_loss']:.4f}"
          f"\n[ddp] batchnorm: {_distance(bn_one, bn_r0) / _distance(bn_one, bn_init):.2e}; "
          f"val acc {bn_one_fig['val_acc']:.4f} vs {bn_r0_fig['val_acc']:.4f}, "
          f"val loss {bn_one_fig['val_loss']:.4f} vs {bn_r0_fig['val_loss']:.4f}")

    # the ranks hold one model, parameters and buffers alike (rank 0's BatchNorm statistics)
    assert _distance(r0, r1) == 0.0 and _distance(bn_r0, bn_r1) == 0.0
    # the resident path under DDP: the host DDP run's weights exactly (a CPU's stream is the host path's)
    (res0, res0_fig), (res1, _) = load("groupnorm_resident", 0, 2), load("groupnorm_resident", 1, 2)
    assert _distance(res0, r0) == 0.0 and _distance(res1, r1) == 0.0 and res0_fig["val_loss"] == r0_fig["val_loss"]
    assert (r0_fig["val_loss"], r0_fig["train_loss"]) == (r1_fig["val_loss"], r1_fig["train_loss"])
    # ... and it is one process's step on the whole batch with the gradient summed over the two
    # halves, bit for bit: same weights, same evaluation, same training predictions
    assert one_fig["val_acc"] > 0.3   # it learned (chance is 0.1)
    assert _distance(halves, r0) == 0.0, _distance(halves, r0) / moved
    for figure in ("val_loss", "val_acc", "train_eval_loss", "train_eval_acc", "train_acc"):
        assert halves_fig[figure] == r0_fig[figure], (figure, halves_fig[figure], r0_fig[figure])
    # the running loss: float32 means of 64 against two of 32, summed over the ranks in float64
    assert math.isclose(halves_fig["train_loss"], r0_fig["train_loss"], rel_tol=1e-5)
    assert halves_fig["torch_threads"] == 1
    # without the all-reduce the same comparison fails, far beyond what summation order moves
    # the weights here, and the ranks drift apart
    assert control_rel > CONTROL_MARGIN * summation_order, (control_rel, reordered)
    assert _distance(control, control1) / moved > CONTROL_MARGIN * summation_order

    # the project's BatchNorm model: per-rank batch statistics, close but not equal
    assert abs(bn_one_fig["val_acc"] - bn_r0_fig["val_acc"]) < 0.05
    assert abs(bn_one_fig["val_loss"] - bn_r0_fig["val_loss"]) < 0.1

    # side effects on rank 0 only; train.threads=2 split into one torch thread per process
    for variant in ("groupnorm", "batchnorm"):
        assert (tmp_path / f"{variant}-checkpoint-rank0-of2.pt").is_file()
        assert not (tmp_path / f"{variant}-checkpoint-rank1-of2.pt").exists()
        assert load(variant, 0, 2)[1]["on_epoch_calls"] == [1] and load(variant, 1, 2)[1]["on_epoch_calls"] == []
        assert load(variant, 0, 2)[1]["torch_threads"] == load(variant, 1, 2)[1]["torch_threads"] == 1


if __name__ == "__main__":
    from skillpack.runtime import configure

    configure()
    worker(Path(sys.argv[1]))
