"""Compression: structured channel pruning (torch-pruning), knowledge distillation into a
smaller student, and int8 post-training quantization (ONNX Runtime static QDQ).

Fine-tuning and distillation are trainings like any other: they go through
skillpack.train.runs.train_model (a pruned model is its `init`, a teacher its `teacher`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from skillpack.train.models import ImageClassifier

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


# -- the compress stage's one pass ---------------------------------------------------------

PRUNED, STUDENT = "pruned", "student"   # the production variants, named once
VARIANTS = (PRUNED, STUDENT)


@dataclass
class Variant:
    """One compressed model, trained once, scored on the test set against the model it came from."""
    name: str
    model: ImageClassifier
    model_name: str
    test_accuracy: float
    delta_points: float            # 100 x (its test accuracy - the trained model's)
    accepted: bool                 # lost at most compress.max_drop_points
    train_seconds: float
    params: int
    macs: int

    def figures(self) -> dict:
        return {"model": self.model_name, "test_accuracy": self.test_accuracy, "delta_points": self.delta_points,
                "accepted": self.accepted, "train_seconds": round(self.train_seconds, 2), "params": self.params,
                "macs": self.macs, "channels": channel_counts(self.model)}


@dataclass
class Compression:
    baseline_accuracy: float
    baseline_size: dict
    variants: dict[str, Variant]


def compress_once(baseline: ImageClassifier, baseline_name: str, data, test: tuple[np.ndarray, np.ndarray],
                  finetune_cfg, student_cfg, cfg, seed: int, on_variant=None) -> Compression:
    """The production compress: `baseline` pruned to (1 - cfg.prune_ratio) of its channels and
    fine-tuned with `finetune_cfg`, and a student of `student_cfg` distilled from `baseline`,
    each trained once with `seed` (skillpack.train.runs.train_model) and accepted when it loses at
    most cfg.max_drop_points of test accuracy. `on_variant(name)` is called before each."""
    from skillpack.train.models import count_macs, count_params
    from skillpack.train.runs import evaluate_model, train_model

    h, w, c = data.image_shape
    base_acc = evaluate_model(baseline, *test).accuracy
    plans = {PRUNED: (finetune_cfg, prune_channels(baseline, data.image_shape, cfg.prune_ratio,
                                                   cfg.prune_importance), None, baseline_name),
             STUDENT: (student_cfg, None, baseline, student_cfg.model)}
    variants = {}
    for name, (train_cfg, init, teacher, model_name) in plans.items():
        if on_variant:
            on_variant(name)
        trained = train_model(train_cfg, data, seed, init=init, teacher=teacher)
        model = trained.model.cpu().eval()
        acc = evaluate_model(model, *test).accuracy
        delta = 100 * (acc - base_acc)
        variants[name] = Variant(name, model, model_name, acc, delta, -delta <= cfg.max_drop_points,
                                 trained.train_seconds, count_params(model), count_macs(model, (c, h, w)))
    size = {"model": baseline_name, "params": count_params(baseline), "macs": count_macs(baseline, (c, h, w)),
            "channels": channel_counts(baseline)}
    return Compression(base_acc, size, variants)


def compress_production(cfg, train_cfg, seed: int, on_variant=None) -> tuple[Compression, dict, dict]:
    """The compress stage's work (`cfg`: params' compress, `train_cfg` its train, which the
    fine-tune and the student derive from): compress_once on models/model.pt with the (cleaned) train split,
    the accepted variants saved to models/compressed/<variant>.pt (a rejected one's old file
    removed); returns the compression, its flat figures and the nested details of reports/compress.json."""
    import time

    from skillpack import paths
    from skillpack.config import derive
    from skillpack.data import PreparedStore
    from skillpack.train.checkpoint import load_classifier
    from skillpack.train.production import training_input

    inputs = training_input(paths.PREPARED, paths.CLEANED)   # the train stage's (cleaned) split, read the same way
    test = PreparedStore(paths.PREPARED).arrays("test")
    baseline, meta = load_classifier(paths.MODEL_FILE)
    t0 = time.perf_counter()
    result = compress_once(baseline, meta["model_name"], inputs.data, test, derive(train_cfg, cfg.finetune),
                           derive(train_cfg, cfg.student), cfg, seed, on_variant=on_variant)
    save_variants(result, paths.COMPRESSED, inputs, train_cfg.head, seed)
    variants = {name: v.figures() for name, v in result.variants.items()}
    figures = {"seed": seed, "prune_ratio": cfg.prune_ratio, "prune_importance": cfg.prune_importance,
               "max_drop_points": cfg.max_drop_points, "n_train": int(len(inputs.data.train[1])),
               "n_test": int(len(test[1])), "data_hash": inputs.data_hash,
               "baseline_test_accuracy": result.baseline_accuracy,
               **{f"{name}_{key}": figures_[key] for name, figures_ in variants.items()
                  for key in ("test_accuracy", "delta_points", "accepted")},
               "seconds": round(time.perf_counter() - t0, 1)}
    details = {"baseline": {**result.baseline_size, "test_accuracy": result.baseline_accuracy},
               "variants": variants}
    return result, figures, details


def save_variants(result: Compression, folder: Path, inputs, head, seed: int) -> None:
    """Each accepted variant to folder/<variant>.pt with what rebuilds it (`inputs`: the
    training input it was trained on, skillpack.train.production); a rejected one's old file removed."""
    from skillpack.train.checkpoint import save_classifier

    for name, variant in result.variants.items():
        path = folder / f"{name}.pt"
        if variant.accepted:
            save_classifier(path, variant.model, model_name=variant.model_name, classes=inputs.classes,
                            image_shape=inputs.data.image_shape, head=head,
                            extra={"data_hash": inputs.data_hash, "seed": seed, "variant": name})
        else:
            path.unlink(missing_ok=True)


# -- int8 -----------------------------------------------------------------------------------

def calibration_images(images: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded sample of uint8 N x H x W x C training images for calibration."""
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(images[np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))])


# the int8 formats of params quantize.format: ONNX Runtime's (activation type, weight type, reduce_range)
INT8_FORMATS = {
    "s8s8": ("QInt8", "QInt8", False),              # ONNX Runtime's default: int8 activations and weights
    "u8s8_reduce_range": ("QUInt8", "QInt8", True),  # uint8 activations, int8 weights in [-64, 64]
    "u8u8": ("QUInt8", "QUInt8", False),            # uint8 activations and weights
}
# x86 without VNNI sums pairs of u8 x s8 products into int16 (VPMADDUBSW), which saturates:
# ONNX Runtime's quantization guide names reduce_range or U8U8 for such CPUs. Both are exact
# there; reduce_range's weights in [-64, 64] keep a pair within int16 (2 x 255 x 64 = 32640)
# and keep the fast U8S8 kernels, while U8U8's kernels widen to 16 bits first: measured on an
# AMD EPYC Zen 5 (1 thread, the 28 x 28 sp_cnn_s of tests/test_export.py, batch 64),
# U8U8 took 10.3 ms, as long as fp32 (10.8 ms), U8S8 reduce_range 5.5 ms, and both agreed
# with fp32 on 99% of 600 test images.
NO_VNNI_INT8_FORMAT = "u8s8_reduce_range"


def choose_int8_format(requested: str = "auto", cpu_flags: list[str] | None = None,
                       arch: str | None = None) -> dict:
    """The int8 format to quantize with and what decided it: `requested` itself, or for "auto"
    the CPU (`cpu_flags` and `arch` default to this machine's): s8s8 where int8 dot products
    cannot saturate (x86 with VNNI, or not x86), NO_VNNI_INT8_FORMAT on x86 without VNNI."""
    import platform

    from skillpack.machine import cpu_model, is_x86, vnni_flags

    if requested != "auto" and requested not in INT8_FORMATS:
        raise ValueError(f"quantize.format: unknown {requested!r}; choose auto, {', '.join(INT8_FORMATS)}")
    flags = cpu_model()[1] if cpu_flags is None else list(cpu_flags)
    vnni, arch = vnni_flags(flags), arch or platform.machine()
    if requested != "auto":
        chosen, why = requested, "quantize.format"
    elif not is_x86(arch):
        chosen, why = "s8s8", f"{arch} is not x86"
    elif vnni:
        chosen, why = "s8s8", f"x86 with {', '.join(vnni)}"
    else:
        chosen, why = NO_VNNI_INT8_FORMAT, "x86 without avx512_vnni or avx_vnni"
    activation, weight, reduce_range = INT8_FORMATS[chosen]
    return {"format": chosen, "requested": requested, "decided_by": why, "cpu_flags": flags,
            "activation": activation, "weight": weight, "reduce_range": reduce_range}


def quantize_onnx_int8(fp32_path: str | Path, int8_path: str | Path, calibration: np.ndarray, *,
                       method: str = "minmax", per_channel: bool = True, batch_size: int = 64,
                       int8_format: str = "auto") -> Path:
    """ONNX Runtime static quantization to QDQ int8 (weights per channel, activations calibrated
    on `calibration`, uint8 pixels as the graph takes them), in `int8_format` (a name of
    INT8_FORMATS, or "auto": choose_int8_format's pick for this CPU). The uint8 -> float
    preprocessing at the graph's entry stays in float."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
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
    activation, weight, reduce_range = INT8_FORMATS[choose_int8_format(int8_format)["format"]]
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    try:
        quantize_static(str(prepared), str(int8_path), Batches(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType[activation], weight_type=QuantType[weight],
                        per_channel=per_channel, reduce_range=reduce_range, calibrate_method=methods[method])
    finally:
        prepared.unlink(missing_ok=True)
    return int8_path
