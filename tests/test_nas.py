"""The searchable CNN family: architectures spelled by their names (and back), every block
choice builds from timm's blocks, the two references match in parameters, names validate
without torch, bad architectures are one-line errors naming the part, and the ONNX export the
latency is measured on gives the eager model's logits."""
import importlib
import itertools
import sys

import numpy as np
import pytest
import timm
import torch
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, EdgeResidual, InvertedResidual, SqueezeExcite

from skillpack import model_names
from skillpack.config import ParamsError, load_params
from skillpack.config.architecture import NAMED_ARCHITECTURES, ArchError, ArchSpec, StageSpec, parse_arch_name
from skillpack.train.models import build_classifier, build_model, count_macs, count_params
from tests.test_model_names import ROOT

PARITY_MAX_ABS_DIFF = 1e-4   # as the export tests hold ONNX Runtime's logits against eager torch's
CHOICES = list(itertools.product(("fused", "mbconv"), (3, 5), (1, 4, 6), (False, True)))
TINY = "sp_nas_s8_f1x8k3e1_f2x16k3e4_m2x16k5e4se"
SMALLEST = "sp_nas_s8_f1x8k3e4_m1x16k3e4se_m1x16k5e1se"   # fused, MBConv and MBConv1 with SE: one block each


def specs() -> list[ArchSpec]:
    """3 and 4 stages, with and without a head, every block choice somewhere."""
    stages = [StageSpec(*choice[:1], 1 + i % 3, 8 * (1 + i % 4), *choice[1:]) for i, choice in enumerate(CHOICES)]
    return [ArchSpec(16, tuple(stages[i:i + 3 + i % 2]), head=(0, 64)[i % 2]) for i in range(0, len(stages) - 3)]


def test_names_and_architectures_round_trip():
    for spec in specs():
        name = spec.encode()
        assert name.startswith("sp_nas_s16_") and "." not in name and ":" not in name
        assert parse_arch_name(name) == spec
        assert ArchSpec.from_dict(spec.as_dict()) == spec
    assert parse_arch_name("sp_nas_s16_f1x16k3e1_f2x32k3e4_m3x64k5e6se_h192") == ArchSpec(
        16, (StageSpec("fused", 1, 16, 3, 1), StageSpec("fused", 2, 32, 3, 4), StageSpec("mbconv", 3, 64, 5, 6, True)),
        head=192)
    for name, spec in NAMED_ARCHITECTURES.items():
        assert parse_arch_name(spec.encode()) == parse_arch_name(name) == spec


@pytest.mark.parametrize("block, kernel, expansion, se", CHOICES)
def test_every_block_choice_builds_from_timms_blocks(block, kernel, expansion, se):
    spec = ArchSpec(8, tuple(StageSpec(block, 2, width, kernel, expansion, se) for width in (8, 16, 16)))
    model = build_model(spec.encode(), num_classes=10, in_chans=1).eval()
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    kind = EdgeResidual if block == "fused" else (DepthwiseSeparableConv if expansion == 1 else InvertedResidual)
    blocks = list(model.blocks)
    assert len(blocks) == 6 and all(type(b) is kind for b in blocks)
    assert sum(isinstance(m, SqueezeExcite) for m in model.modules()) == (6 if se else 0)
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert {m.kernel_size for m in depthwise} == (set() if block == "fused" else {(kernel, kernel)})
    assert model.forward_features(torch.zeros(1, 1, 28, 28)).shape[-2:] == (7, 7)  # strides 1, 2, 2


def test_the_references_have_equal_parameters_and_differ_in_the_early_blocks():
    fused, mbconv = (timm.create_model(n, num_classes=10, in_chans=1) for n in ("sp_nas_fused_ref", "sp_nas_mbconv_ref"))
    assert abs(count_params(fused) / count_params(mbconv) - 1) < 0.05
    assert [type(b).__name__ for b in fused.blocks][:3] == ["EdgeResidual"] * 3
    assert not any(isinstance(b, EdgeResidual) for b in mbconv.blocks)
    assert [s for s in fused.spec.stages[2:]] == [s for s in mbconv.spec.stages[2:]]   # same late stages
    for model in (fused, mbconv):
        assert model.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_a_name_validates_in_model_names_without_torch(monkeypatch):
    import skillpack
    import skillpack.config

    architecture = skillpack.config.architecture
    for parent, module in ((skillpack, "model_names"), (skillpack.config, "architecture")):
        monkeypatch.setattr(parent, module, getattr(parent, module))   # restored afterwards
        monkeypatch.delitem(sys.modules, f"{parent.__name__}.{module}")
    for blocked in ("torch", "timm", "torchvision"):
        monkeypatch.setitem(sys.modules, blocked, None)   # importing them now raises ImportError
    names = importlib.import_module("skillpack.model_names")   # imported afresh, as check_params imports it
    assert names is not model_names
    assert names.is_known_model(TINY, frozenset()) and names.is_known_model("sp_nas_fused_ref", frozenset())
    assert sys.modules["skillpack.config.architecture"] is not architecture   # imported afresh too
    assert not names.is_known_model("sp_nas_s8_f1x8k7e1_f2x16k3e4_m2x16k5e4se", frozenset())
    assert not names.is_known_model("sp_nas_typo", frozenset())


@pytest.mark.parametrize("bad, field", [
    ("sp_nas_s8_f1x8k7e1_f2x16k3e4_m2x16k5e4se", "stage 1: kernel 7 is not one of [3, 5]"),
    ("sp_nas_s8_f1x8k3e1_f2x16k3e3_m2x16k5e4se", "stage 2: expansion 3 is not one of [1, 4, 6]"),
    ("sp_nas_s8_f1x8k3e1_f0x16k3e4_m2x16k5e4se", "stage 2: depth 0 is not a whole number in [1, 8]"),
    ("sp_nas_s8_f1x8k3e1_f2x16k3e4_m2x4k5e4se", "stage 3: width 4 is not a whole number in [8, 512]"),
    ("sp_nas_s8_f1x8k3e1_f2x16k3e4", "stages: 2 stages, expected 3 or 4"),
    ("sp_nas_s0_f1x8k3e1_f2x16k3e4_m2x16k5e4se", "stem 0 is not a whole number"),
    ("sp_nas_s8_f1x8k3e1_f2x16k3e4_m2x16k5e4se_h4", "head 4 is not a whole number"),
    ("sp_nas_s8_f1x8k3e1_c2x16k3e4_m2x16k5e4se", "stage 2 'c2x16k3e4' is not <f|m>"),
    ("sp_nas_x8_f1x8k3e1_f2x16k3e4_m2x16k5e4se", "stem 'x8' is not s<width>"),
])
def test_a_bad_architecture_is_a_one_line_error_naming_the_part(bad, field):
    for check in (parse_arch_name, lambda n: build_model(n, 10, 1)):
        with pytest.raises(ValueError) as err:
            check(bad)
        assert field in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ParamsError) as err:
        load_params(ROOT / "params.yaml", [f"train.model={bad}"])
    assert "train.model: architecture" in str(err.value) and field in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("spec, field", [
    ({"stem": 8, "stages": [{"block": "conv", "depth": 1, "width": 8}] * 3}, "stage 1: block 'conv'"),
    ({"stem": 8, "stages": [{"block": "fused", "depth": 1, "width": 8, "se": "yes"}] * 3}, "stage 1: se 'yes'"),
    ({"stem": 8, "stages": [{"block": "fused", "depth": 1, "width": 8, "kernal": 3}] * 3}, "stage 1: "),
    ({"stem": 8, "stages": [], "width": 3}, "keys ['stages', 'stem', 'width']"),
])
def test_a_bad_architecture_dict_is_a_one_line_error_naming_the_field(spec, field):
    with pytest.raises(ArchError) as err:
        ArchSpec.from_dict(spec)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_the_timed_onnx_export_gives_the_eager_logits_and_the_model_s_figures(tmp_path):
    from skillpack.config import HeadParams
    from skillpack.deploy.architecture_cost import measure_classifier
    from skillpack.deploy.export import eager_runner, onnx_runner, onnx_session

    torch.manual_seed(0)
    model = build_classifier(SMALLEST, 10, (28, 28, 1), HeadParams()).eval()
    for m in model.modules():   # trained-looking BatchNorm statistics, not the identity of a fresh layer
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    cost = measure_classifier(model, SMALLEST, (28, 28, 1), batches=(1, 8), runs=3, warmup=1, folder=tmp_path)
    images = np.random.default_rng(1).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
    onnx_logits = onnx_runner(onnx_session(tmp_path / "model.onnx", threads=1))(images)
    assert np.abs(onnx_logits - eager_runner(model)(images)).max() < PARITY_MAX_ABS_DIFF
    assert cost.max_abs_diff < PARITY_MAX_ABS_DIFF
    assert (cost.params, cost.macs) == (count_params(model), count_macs(model, (1, 28, 28)))
    assert set(cost.latency) == {"1", "8"} and all(t["p50_ms"] > 0 and t["repeats"] == 3 for t in cost.latency.values())
    assert cost.onnx_bytes == (tmp_path / "model.onnx").stat().st_size and cost.threads == 1
