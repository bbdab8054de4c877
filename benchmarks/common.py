"""Shared by the benchmarks: machine figures and the results file."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from skillpack.io import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Median fp32 GFLOP/s of an n x n matmul on the configured threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / sorted(times)[len(times) // 2] / 1e9


def machine() -> dict:
    from skillpack.machine import describe

    return describe()


def save(name: str, figures: dict) -> Path:
    path = RESULTS / f"{name}.json"
    write_json(path, {**figures, "machine": machine(), "generated_by": f"benchmarks/{name}.py"})
    return path
