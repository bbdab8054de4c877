"""Compression: structured channel pruning (torch-pruning), knowledge distillation into a
smaller student, and int8 post-training quantization (ONNX Runtime static QDQ).

Fine-tuning and distillation are trainings like any other: they go through
skillpack.runs.train_model (a pruned model is its `init`, a teacher its `teacher`).
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from skillpack.models import ImageClassifier

# -- pruning ------------------------------------------------------------------------------

IMPORTANCE = {  # the criteria of params compress.prune_importance, all torch-pruning's
    "l2": lambda tp: tp.importance.GroupMagnitudeImportance(p=2),
    "l1": lambda tp: tp.importance.GroupMagnitudeImportance(p=1),
    "bn_scale": lambda tp: tp.importance.BNScaleImportance(),
    "random": lambda tp: tp.importance.RandomImportance(),
}


def prune_channels(model: ImageClassifier, image_shape: tuple[int, int, int], ratio: float,
                   importance: str = "l2") -> ImageClassifier:
    """A copy of `model` with `ratio` of the channels of every prunable layer removed, chosen by
    `importance` over torch-pruning's dependency graph (a removed channel goes out of every
    layer coupled to it: the next conv, its BatchNorm, the head's inputs). The head's outputs
    (the classes) are never pruned."""
    import torch_pruning as tp

    if importance not in IMPORTANCE:
        raise ValueError(f"compress.prune_importance: unknown {importance!r}; choose {', '.join(IMPORTANCE)}")
    pruned = copy.deepcopy(model).cpu().eval()
    h, w, c = image_shape
    example = torch.zeros(1, c, h, w)
    pruner = tp.pruner.BasePruner(pruned, example, importance=IMPORTANCE[importance](tp), pruning_ratio=ratio,
                                  ignored_layers=[pruned.head])
    pruner.step()
    return pruned


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Output channels of every convolution: what pruning changes."""
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def fit_shapes(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Resize `model`'s layers to the tensor shapes of `state_dict` (a pruned model saved as plain
    tensors), so that load_state_dict fits. Our own, because torch-pruning's serialisation
    pickles module objects, which torch.load(weights_only=True) rightly refuses."""
    modules = dict(model.named_modules())
    for key, tensor in state_dict.items():
        owner, _, attr = key.rpartition(".")
        module = modules.get(owner)
        if module is None:
            continue
        current = getattr(module, attr, None)
        if not isinstance(current, torch.Tensor) or current.shape == tensor.shape:
            continue
        if isinstance(current, nn.Parameter):
            setattr(module, attr, nn.Parameter(torch.empty_like(tensor), requires_grad=current.requires_grad))
        else:
            module.register_buffer(attr, torch.empty_like(tensor))
    for module in modules.values():
        _sync_attributes(module)
    return model


def _sync_attributes(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        module.out_channels = module.weight.shape[0]
        module.groups = module.out_channels if depthwise else module.groups
        module.in_channels = module.weight.shape[1] * module.groups
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.num_features = module.weight.shape[0] if module.weight is not None else module.running_mean.shape[0]
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape


# -- int8 -----------------------------------------------------------------------------------

def calibration_images(images: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded sample of uint8 N x H x W x C training images for calibration."""
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(images[np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))])


def quantize_onnx_int8(fp32_path: str | Path, int8_path: str | Path, calibration: np.ndarray, *,
                       method: str = "minmax", per_channel: bool = True, batch_size: int = 64) -> Path:
    """ONNX Runtime static quantization to QDQ int8 (weights per channel, activations calibrated
    on `calibration`, uint8 pixels as the graph takes them). The uint8 -> float preprocessing at
    the graph's entry stays in float."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"pixels": calibration[i:i + batch_size]}
                                 for i in range(0, len(calibration), batch_size)])

        def get_next(self):
            return next(self.batches, None)

    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    prepared = int8_path.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    try:
        quantize_static(str(prepared), str(int8_path), Batches(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                        calibrate_method=methods[method])
    finally:
        prepared.unlink(missing_ok=True)
    return int8_path
