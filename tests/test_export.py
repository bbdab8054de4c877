"""Export: ONNX with the preprocessing inside (uint8 pixels in), int8 that agrees with fp32,
an AOTInductor package compiled for the CPU, and TensorRT's clear skip where it cannot run."""
import numpy as np
import onnx
import pytest
import torch
from conftest import small_split

from skillpack.config import HeadParams, TrainParams
from skillpack.deploy import export
from skillpack.deploy.compress import (
    INT8_FORMATS,
    NO_VNNI_INT8_FORMAT,
    calibration_images,
    choose_int8_format,
    quantize_onnx_int8,
)
from skillpack.train.models import build_classifier
from skillpack.train.runs import RunData, train_model


@pytest.fixture(scope="module")
def trained(fmnist):
    x, y = small_split(fmnist, 2500)
    cfg = TrainParams.model_validate({"model": "sp_cnn_s", "epochs": 2, "batch_size": 64})
    model = train_model(cfg, RunData((x[:2000], y[:2000]), (x[2000:], y[2000:]), 10), seed=0).model.cpu().eval()
    test = fmnist.splits["test"]
    return model, x[:2000], np.array(test.images[:600]), test.labels[:600]


def test_onnx_takes_uint8_pixels_with_a_dynamic_batch_and_matches_eager(trained, tmp_path):
    model, _, images, _ = trained
    path = export.export_onnx(model, tmp_path / "m.onnx", (28, 28, 1))
    graph = onnx.load(str(path)).graph
    pixels = graph.input[0]
    assert pixels.name == "pixels" and pixels.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = pixels.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [28, 28, 1]  # batch is symbolic
    run = export.onnx_runner(export.onnx_session(path, threads=1))
    for batch in (1, 7, 600):
        reference = export.eager_runner(model)(images[:batch])
        assert np.abs(run(images[:batch]) - reference).max() < 1e-4
    # the normalisation is inside: the raw pixels give the eager model's logits on normalised input
    with torch.no_grad():
        by_hand = model.classify(model.backbone((torch.from_numpy(images[:5]).permute(0, 3, 1, 2).float()
                                                 - model.mean) / model.std)).numpy()
    assert np.abs(run(images[:5]) - by_hand).max() < 1e-4


def _quantized_types(path) -> tuple[set[int], set[int], int]:
    """(element types of the quantized conv / gemm weights, of the activations' zero points,
    largest |quantized weight|) of a QDQ model."""
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    tensors = {t.name: t for t in graph.initializer}
    weights, activations, largest = set(), set(), 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[2] not in tensors:
            continue
        value = tensors.get(node.input[0])
        if value is not None and len(value.dims) > 1:   # a quantized weight, stored as an initializer
            weights.add(value.data_type)
            largest = max(largest, int(np.abs(numpy_helper.to_array(value).astype(np.int32)).max()))
        elif value is None:                            # an activation, quantized at run time
            activations.add(tensors[node.input[2]].data_type)
    return weights, activations, largest


# the format this CPU gets (auto) and, on any CPU, the one CPUs without VNNI get
@pytest.mark.parametrize("int8_format", ["auto", NO_VNNI_INT8_FORMAT])
def test_int8_agrees_with_fp32_on_at_least_97_percent(trained, tmp_path, int8_format):
    model, train_images, images, labels = trained
    fp32 = export.export_onnx(model, tmp_path / "m.onnx", (28, 28, 1))
    int8 = quantize_onnx_int8(fp32, tmp_path / "m.int8.onnx", calibration_images(train_images, 256, seed=0),
                              int8_format=int8_format)
    assert int8.stat().st_size < 0.6 * fp32.stat().st_size  # int8 weights
    # the graph holds the format's types: ONNX Runtime's kernels are chosen from them
    activation, weight, reduce_range = INT8_FORMATS[choose_int8_format(int8_format)["format"]]
    onnx_type = {"QInt8": onnx.TensorProto.INT8, "QUInt8": onnx.TensorProto.UINT8}
    weights, activations, largest = _quantized_types(int8)
    assert weights == {onnx_type[weight]} and activations == {onnx_type[activation]}, (weights, activations)
    assert 32 < largest <= (64 if reduce_range else 255)   # reduce_range: weights within [-64, 64]
    reference = export.logits_of(export.onnx_runner(export.onnx_session(fp32, 1)), images)
    quantized = export.logits_of(export.onnx_runner(export.onnx_session(int8, 1)), images)
    check = export.parity(reference, quantized)
    print(f"\n[int8] {choose_int8_format(int8_format)}: {check}")
    assert check.top1_agreement >= 0.97, check
    assert 0 < check.max_abs_diff  # it really is another computation


@pytest.mark.parametrize("flags, arch, chosen", [
    (["avx2", "avx512f", "avx512_vnni", "avx512_bf16"], "x86_64", "s8s8"),   # Zen 4 / 5, Ice Lake and later
    (["avx2", "avx_vnni"], "x86_64", "s8s8"),                                 # Alder Lake: VNNI without AVX-512
    (["avx2"], "x86_64", NO_VNNI_INT8_FORMAT),                                # Zen 2 / 3, Haswell
    (["avx2", "avx512f"], "AMD64", NO_VNNI_INT8_FORMAT),                      # Skylake-SP: AVX-512 without VNNI
    ([], "x86_64", NO_VNNI_INT8_FORMAT),
    ([], "aarch64", "s8s8"),                                                  # ARM's int8 dot products do not saturate
])
def test_auto_int8_format_follows_the_cpu_flags(flags, arch, chosen):
    decision = choose_int8_format("auto", flags, arch)
    assert decision["format"] == chosen and decision["cpu_flags"] == flags
    assert ("without" in decision["decided_by"]) == (chosen == NO_VNNI_INT8_FORMAT)
    # an explicit format is kept whatever the CPU
    assert choose_int8_format("u8u8", flags, arch)["format"] == "u8u8"


def test_int8_format_is_checked_and_read_from_this_cpu_by_default():
    from skillpack.config import QuantizeParams
    from skillpack.machine import cpu_model

    assert choose_int8_format()["cpu_flags"] == cpu_model()[1]
    with pytest.raises(ValueError, match="quantize.format"):
        choose_int8_format("s4s4")
    with pytest.raises(ValueError, match="format"):
        QuantizeParams.model_validate({"format": "s4s4"})
    assert QuantizeParams().format == "auto"


def test_aoti_package_compiles_for_the_cpu_and_matches_eager(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("sp_cnn_s", 10, (28, 28, 1), HeadParams(), [72.9], [90.0]).eval()
    package = export.build_aoti(model, tmp_path / "m.pt2", (28, 28, 1), "cpu")
    run = export.aoti_runner(package, "cpu")
    images = np.random.default_rng(0).integers(0, 256, (9, 28, 28, 1), dtype=np.uint8)
    for batch in (1, 9):  # the batch axis stayed dynamic through torch.export
        assert np.abs(run(images[:batch]) - export.eager_runner(model)(images[:batch])).max() < 1e-4


def test_tensorrt_says_why_it_cannot_run_here():
    reason = export.tensorrt_unavailable()
    try:
        import tensorrt  # noqa: F401
        installed = True
    except ImportError:
        installed = False
    if installed and torch.cuda.is_available():
        assert reason is None
    else:
        assert reason and ("not installed" in reason or "no CUDA device" in reason)
        if not installed:
            with pytest.raises(ImportError):
                export.build_tensorrt_engine("missing.onnx", "x.engine", (28, 28, 1))


def test_latency_reports_median_and_95th_percentile():
    import time

    lat = export.measure_latency(lambda _: time.sleep(0.002), None, seconds=0.05, warmup=1, min_repeats=10)
    assert lat.repeats >= 10 and 2.0 <= lat.p50_ms <= lat.p95_ms


def test_the_served_int8_model_loads_in_the_service_with_its_metadata(trained, tmp_path):
    """The export stage's served file can be the int8 one, whose metadata ONNX Runtime's
    quantizer adds its own non-JSON entries to (onnx.infer, onnx.quant.pre_process)."""
    from skillpack.deploy.release import Candidate, write_served_model
    from skillpack.deploy.serving.model import load_onnx

    model, train_images, images, _ = trained
    fp32 = export.export_onnx(model, tmp_path / "m.onnx", (28, 28, 1))
    int8 = quantize_onnx_int8(fp32, tmp_path / "m.int8.onnx", calibration_images(train_images, 64, seed=0))
    classes = [f"c{i}" for i in range(10)]
    chosen = Candidate(variant="baseline", runtime="onnx int8", file=str(int8), test_accuracy=0.9, drop_points=0.0,
                       p50_ms=0.1, file_bytes=int8.stat().st_size)
    served = write_served_model(chosen, {"classes": classes, "image_shape": [28, 28, 1]}, tmp_path / "model.onnx")
    loaded = load_onnx(served, 1)
    assert loaded.classes == classes and loaded.probabilities(images[:4]).shape == (4, 10)
