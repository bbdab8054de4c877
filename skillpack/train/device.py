"""Where and how a training runs: its device, its autocast precision, whether the training
set lives on the device (runtime.resident), and deterministic kernels on a CPU."""
from __future__ import annotations

import functools

import torch


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device=cuda but no CUDA device is available")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


@functools.cache
def _say_once(message: str) -> None:
    print(message)


def cpu_has_bf16_units() -> bool:
    """AVX512-BF16 or AMX: oneDNN then runs bf16 convolutions natively (a training step of
    sp_cnn_m 1.7-2.1x faster than fp32 here, benchmarks/train_speed.py); without them bf16
    autocast is emulated and several times slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_amp(requested: str, device: torch.device) -> torch.dtype | None:
    """fp16 or bf16 autocast on CUDA; on a CPU, bf16 where it has bf16 units, else fp32. auto:
    fp16 on CUDA, bf16 on a CPU with bf16 units, fp32 on any other CPU (no message)."""
    if requested == "off" or (requested == "auto" and device.type == "cpu" and not cpu_has_bf16_units()):
        return None
    if requested == "auto":
        requested = "fp16" if device.type == "cuda" else "bf16"
    if device.type == "cuda":
        return torch.float16 if requested == "fp16" else torch.bfloat16
    if requested == "bf16" and cpu_has_bf16_units():
        return torch.bfloat16
    reason = ("this CPU has no bf16 units (AVX512-BF16 or AMX): emulated bf16 is several times slower"
              if requested == "bf16" else "fp16 autocast is a CUDA feature")
    _say_once(f"[train] train.amp={requested}: {reason}; training in fp32 on {device.type}")
    return None


RESIDENT_SHARE = 0.25   # auto: resident when the training set takes at most this share of free GPU memory


def resolve_resident(requested, device: torch.device, nbytes: int) -> bool:
    """runtime.resident: true / false as given; auto = resident on CUDA when the uint8 training
    set fits in RESIDENT_SHARE of the device's free memory, host path otherwise."""
    if requested in (True, False):
        return bool(requested)
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    if nbytes > RESIDENT_SHARE * free:
        _say_once(f"[train] training set {nbytes / 2**30:.1f} GiB > {RESIDENT_SHARE:.0%} of free GPU memory: "
                  f"host path (runtime.resident=true forces the resident one)")
        return False
    return True


def use_deterministic_cpu_kernels(device: torch.device) -> None:
    """Same seed, same metrics on CPU. Deterministic mode also fills every torch.empty() with
    NaN by default, to expose reads of uninitialised memory; that memset cost 7-8% of a
    training step here (benchmarks/train_speed.py, `deterministic_fill_speedup`), and no
    kernel we run reads memory it has not written, so the fill is switched off."""
    import torch.utils.deterministic

    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    if device.type == "cuda":  # a run's shapes are fixed: let cuDNN time its algorithms once and keep the fastest
        torch.backends.cudnn.benchmark = True
