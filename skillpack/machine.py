"""The machine a figure was measured on, named with every figure: CPU model and the features
that change the speed of our kernels (AVX-512, VNNI for int8, BF16 units), cores, threads,
torch, and the GPU when there is one."""
from __future__ import annotations

import os
import platform
from pathlib import Path

SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")
# int8 dot products summed straight into int32 (VPDPBUSD); without them x86 int8 kernels pair
# u8 x s8 products into int16 sums first (VPMADDUBSW), which saturate
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
X86_ARCHES = ("x86_64", "amd64", "i386", "i686", "x86")


def cpu_model() -> tuple[str, list[str]]:
    """(model name, the SPEED_FLAGS it has) from /proc/cpuinfo where there is one."""
    info = Path("/proc/cpuinfo")
    name, flags = platform.processor() or platform.machine(), set()
    if info.is_file():
        for line in info.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            if name and flags:
                break
    return name, [f for f in SPEED_FLAGS if f in flags]


def is_x86(arch: str | None = None) -> bool:
    """Whether `arch` (default: this machine's, platform.machine()) is an x86 CPU."""
    return (arch or platform.machine()).lower() in X86_ARCHES


def vnni_flags(flags: list[str] | set[str] | tuple[str, ...]) -> list[str]:
    """The VNNI_FLAGS among `flags` (cpu_model()'s or any flag set)."""
    return [f for f in VNNI_FLAGS if f in set(flags)]


def describe() -> dict:
    import torch

    name, flags = cpu_model()
    return {"cpu": name, "cpu_flags": flags, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def one_line(machine: dict | None = None) -> str:
    m = machine or describe()
    where = f"{m['cpu']} ({', '.join(m['cpu_flags']) or 'no AVX2'}), {m['threads']} threads"
    return f"{m['cuda']} + {where}" if m.get("cuda") else where
