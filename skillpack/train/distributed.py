"""torchrun DDP for the engine: the process group from torchrun's environment, each rank's
share of a global batch, sums across ranks, and which rank writes.

    torchrun --standalone --nproc_per_node 2 -m stages.train      # 2 processes, one machine

Without torchrun (no WORLD_SIZE, or WORLD_SIZE=1) every helper here is the identity and
nothing is initialised: one process is the same code with a world of one.

What the engine does with a world of N (skillpack.train.engine.Trainer):
- train.batch_size stays the GLOBAL batch: every rank draws the same shuffled batch and the
  same augmentation (the epoch generator is seeded identically on every rank), then trains on
  its contiguous 1/N of it. DDP averages the gradients, so a step equals the one-process step
  on the whole batch (up to float summation order), and the number of steps per epoch, the LR
  schedule and a checkpoint are the same whatever N is; a run can resume with another N.
- What is not equal to one process: BatchNorm normalises each rank's shard with the shard's
  own statistics (SyncBatchNorm runs on GPUs only), and dropout / torchvision's policy
  augmentations draw from torch's global RNG, seeded per rank.
- Running loss and accuracy are summed over the ranks; validation runs on every rank (same
  weights, same figures); only rank 0 writes checkpoints and calls the on-epoch hook (files,
  MLflow).
- CPU threads: train.threads is the budget of the machine, split over the local processes
  (threads x processes <= cores: two busy OpenMP processes on 2 cores ran torch ~30x slower).
- Backend: nccl when training on CUDA, gloo otherwise; SKILLPACK_DIST_BACKEND overrides.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

BACKEND_ENV = "SKILLPACK_DIST_BACKEND"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if initialized() else _env_int("WORLD_SIZE", 1)


def rank() -> int:
    return dist.get_rank() if initialized() else _env_int("RANK", 0)


def local_world_size() -> int:
    return _env_int("LOCAL_WORLD_SIZE", world_size())


def is_main() -> bool:
    """Rank 0 (or no torchrun at all): the process that writes files, checkpoints and MLflow."""
    return rank() == 0


def threads_per_process(threads: int) -> int:
    """The machine's thread budget split over the processes torchrun started on it."""
    return max(1, threads // max(1, local_world_size()))


def resolve_backend(device: torch.device, requested: str | None = None) -> str:
    requested = requested or os.environ.get(BACKEND_ENV) or "auto"
    if requested == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return requested


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank, size and the device it trains on."""
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of n samples (sizes differ by at most one)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over the ranks (a copy; the identity for one process)."""
        if not self.distributed:
            return values
        total = values.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def broadcast_buffers(self, *modules: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics, which each rank updated from its own
        shard) to every rank: DDP does this before each forward; after the last one of an
        epoch, this makes every rank evaluate and hold rank 0's model."""
        if self.distributed:
            for module in modules:
                for buffer in module.buffers():
                    dist.broadcast(buffer, src=0)

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel over `module` (its gradients are averaged across the ranks
        during backward), or `module` itself for one process."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None)


def setup(device: torch.device, backend: str | None = None) -> World:
    """The world torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT): joins
    the process group once per process and picks this rank's GPU. One process: World()."""
    size = world_size()
    if size <= 1:
        return World(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", _env_int("LOCAL_RANK", 0))
        torch.cuda.set_device(device)
    if not initialized():
        dist.init_process_group(resolve_backend(device, backend))
        atexit.register(shutdown)
    return World(dist.get_rank(), dist.get_world_size(), device)


def shutdown() -> None:
    if initialized():
        dist.destroy_process_group()
