"""Several trainings at once on one machine and one device: worker processes, each with its
own torch thread budget and, on CUDA, a cap on its share of the GPU's memory.

    plan = concurrent.plan("auto", threads=1)              # N from free GPU memory (or CPU cores)
    results = concurrent.run_all(fn, [(args...), ...], plan)

Why processes: one training of this project's small models leaves a GPU mostly idle (per-step
Python and kernel launches set the pace), so N processes keep N launch queues
going on one GPU. Each process is capped with torch.cuda.set_per_process_memory_fraction, so
that one run that grows cannot take the memory the others need (it gets an out-of-memory error
instead). The other way - one process training N models batched or vmapped as one - was not
built: processes run any configuration (an ablation's arms differ in architecture, loss,
augmentation and batch size), and a failing run fails alone.

Used by the ablation flow (`ablation.task_runner.kind: process`, flows/ablation.py, through
Prefect's ProcessPoolTaskRunner with `init_worker`) and by benchmarks/gpu.py (`run_all`, no
Prefect). On a CPU the same code runs N processes of `threads` torch threads each
(threads x processes <= cores: two busy OpenMP processes on 2 cores ran torch ~30x slower).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

GiB = 2 ** 30
MEMORY_HEADROOM = 0.9   # share of the free GPU memory the workers may take together
MAX_WORKERS = 32


@dataclass(frozen=True)
class Plan:
    workers: int                     # processes at once
    threads: int                     # torch threads per process
    memory_fraction: float | None    # per process, of the GPU's total memory (None: no GPU)
    device: str                      # "cuda" or "cpu"
    reason: str                      # how `workers` was chosen, for the log

    def describe(self) -> str:
        cap = f", each capped at {self.memory_fraction:.1%} of the GPU's memory" if self.memory_fraction else ""
        return f"{self.workers} processes x {self.threads} torch threads on {self.device}{cap} ({self.reason})"


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def plan(workers: int | str = "auto", threads: int = 1, device: str = "auto", run_memory_gb: float = 2.0,
         max_workers: int = MAX_WORKERS, free_total: tuple[int, int] | None = None,
         cores: int | None = None) -> Plan:
    """How many trainings run at once. `workers` as given, or "auto": on CUDA, as many as fit
    in MEMORY_HEADROOM of the free GPU memory at `run_memory_gb` each (and at most one per
    `threads` CPU cores, which drive the launch queues); on a CPU, cores // threads. On CUDA each
    process is capped at an equal share of that headroom. `free_total` (bytes) and `cores`
    replace the machine's own figures (tests)."""
    device = resolve_device(device)
    cores = cores or cpu_cores()
    by_cores = max(1, cores // max(threads, 1))
    if device != "cuda":
        if workers == "auto":
            return Plan(min(by_cores, max_workers), threads, None, device, f"{cores} cores // {threads} threads")
        return Plan(int(workers), threads, None, device, "as given")
    if free_total is None:
        import torch

        free_total = torch.cuda.mem_get_info()
    free, total = free_total
    usable = MEMORY_HEADROOM * free
    if workers == "auto":
        by_memory = max(1, int(usable // (run_memory_gb * GiB)))
        n = max(1, min(by_memory, by_cores, max_workers))
        reason = (f"auto: {free / GiB:.0f} GiB free / {run_memory_gb:g} GiB per run = {by_memory}, "
                  f"{cores} cores // {threads} threads = {by_cores}, at most {max_workers}")
    else:
        n, reason = int(workers), "as given"
    return Plan(n, threads, round(usable / n / total, 4), device, reason)


def init_worker(threads: int, memory_fraction: float | None = None, env: dict[str, str] | None = None) -> None:
    """Run once in each worker process before its first training: `env` (e.g. the Prefect API
    the workers report to), the thread budget (also for OpenMP, set before torch starts its
    pool) and, on CUDA, the memory cap."""
    os.environ.update(env or {})
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from skillpack.runtime import configure

    configure()   # before torch loads OpenMP
    import torch

    torch.set_num_threads(threads)
    if memory_fraction and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(memory_fraction)


def _call(fn, args):
    return fn(*args), os.getpid()


def run_all(fn, jobs: list[tuple], plan_: Plan) -> list[tuple[object, int]]:
    """fn(*job) for every job, `plan_.workers` at a time in fresh (spawned) processes set up by
    init_worker; returns [(result, pid)] in job order. `fn` must be importable by name (a
    module-level function): spawned workers import it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    with ProcessPoolExecutor(max_workers=plan_.workers, mp_context=context, initializer=init_worker,
                             initargs=(plan_.threads, plan_.memory_fraction)) as pool:
        futures = [pool.submit(_call, fn, job) for job in jobs]
        return [f.result() for f in futures]
