"""Deployable forms of a trained classifier, each taking raw uint8 pixels (N x H x W x C):

- ONNX (dynamic batch axis; the uint8 -> normalised preprocessing inside the graph), run by
  ONNX Runtime; its int8 twin comes from skillpack.deploy.compress.quantize_onnx_int8;
- an AOTInductor package (torch.export + torch._inductor.aoti_compile_and_package): a
  compiled, self-contained .pt2 for the CPU or, in fp16 / bf16, for a CUDA GPU;
- TensorRT FP16 / INT8 engines built from the ONNX file with TensorRT's own Python API,
  imported lazily: where TensorRT is not installed (it cannot be from PyPI alone) or there is
  no GPU, `tensorrt_unavailable()` says why and nothing pretends to have run.

Plus the parity checks and the latency timer every runtime is measured with.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from skillpack.deploy.onnx_runtime import INPUT, OUTPUT, onnx_metadata, onnx_runner, onnx_session  # noqa: F401 (re-exported)
from skillpack.train.models import ImageClassifier


class RawPixels(nn.Module):
    """The classifier as a client calls it: uint8 N x H x W x C in, float32 logits out. With
    `dtype` (fp16 / bf16) the network runs in that precision; preprocessing stays in float32."""

    def __init__(self, model: ImageClassifier, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.model.normalize(pixels.permute(0, 3, 1, 2)).to(self.dtype)
        return self.model.classify(self.model.backbone(x)).float()


def raw_pixels(model: ImageClassifier, dtype: torch.dtype = torch.float32, device: str = "cpu") -> RawPixels:
    model = model.to(device).eval()
    if dtype != torch.float32:
        model = model.to(dtype)
        model.mean.data, model.std.data = model.mean.float(), model.std.float()
    return RawPixels(model, dtype).eval()


def _example(image_shape: tuple[int, int, int], batch: int = 2, device: str = "cpu") -> torch.Tensor:
    return torch.randint(0, 256, (batch, *image_shape), dtype=torch.uint8, device=device)


def _batch_dim() -> dict:
    return {INPUT: {0: torch.export.Dim("batch", min=1, max=65536)}}


# -- ONNX ---------------------------------------------------------------------------------

def export_onnx(model: ImageClassifier, path: str | Path, image_shape: tuple[int, int, int], opset: int = 18,
                metadata: dict | None = None) -> Path:
    """ONNX file (torch.onnx's dynamo exporter) with a dynamic batch axis, written atomically.
    `metadata` (class names, model name, ...) goes into the file's metadata_props as JSON, so
    the file alone is enough to serve it (skillpack.deploy.serving reads it back)."""
    import json

    import onnx

    from skillpack.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        program = torch.onnx.export(raw_pixels(model), (_example(image_shape),), input_names=[INPUT],
                                    output_names=[OUTPUT], dynamic_shapes=_batch_dim(), opset_version=opset,
                                    dynamo=True, verbose=False)
        program.save(str(tmp))
        if metadata:
            proto = onnx.load(str(tmp))
            for key, value in {"image_shape": list(image_shape), **metadata}.items():
                proto.metadata_props.add(key=key, value=json.dumps(value))
            onnx.save(proto, str(tmp))
    return path


def eager_runner(model: ImageClassifier) -> Callable[[np.ndarray], np.ndarray]:
    wrapped = raw_pixels(model)

    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return wrapped(torch.from_numpy(np.ascontiguousarray(pixels))).numpy()
    return run


def logits_of(runner: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return np.concatenate([runner(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


PARITY_MAX_ABS_DIFF = 1e-4   # ONNX Runtime's fp32 logits against eager torch's: the export tests' tolerance


@dataclass
class Parity:
    max_abs_diff: float     # largest |logit difference| against the reference
    top1_agreement: float   # share of images with the same predicted class

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def parity(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    from skillpack.metrics import accuracy

    return Parity(float(np.abs(reference - candidate).max()), accuracy(candidate, reference.argmax(1)))


# -- every runtime at once ----------------------------------------------------------------

@dataclass
class BuiltRuntime:
    run: Callable[[np.ndarray], np.ndarray]
    file: Path
    build_s: float


def build_runtimes(model: ImageClassifier, image_shape: tuple[int, int, int], folder: str | Path,
                   calibration: np.ndarray, *, opset: int = 18, metadata: dict | None = None, aoti_cpu: bool = True,
                   quantize_method: str = "minmax", per_channel: bool = True, int8_format: str = "auto",
                   tensorrt_workspace_mb: int = 1024,
                   threads: int | None = None) -> tuple[dict[str, BuiltRuntime], dict[str, str]]:
    """Every deployable form of `model` this machine can build, into `folder` (the export
    stage's and the latency benchmark's one way to make them): ONNX fp32, ONNX int8 (in
    `int8_format`, see skillpack.deploy.compress.choose_int8_format), an
    AOTInductor package for the CPU and, on CUDA, in fp16, TensorRT FP16 / INT8 where it can run.
    Returns {runtime: built}, {runtime: why it was skipped}."""
    from skillpack.deploy.compress import quantize_onnx_int8

    folder, threads = Path(folder), threads or torch.get_num_threads()
    built, skipped = {}, {}

    def timed(name: str, make: Callable[[], Path], runner: Callable[[Path], Callable]) -> Path:
        t0 = time.perf_counter()
        path = make()
        built[name] = BuiltRuntime(runner(path), path, time.perf_counter() - t0)
        return path

    onnx_file = timed("onnx fp32", lambda: export_onnx(model, folder / "model.onnx", image_shape, opset, metadata),
                      lambda p: onnx_runner(onnx_session(p, threads)))
    timed("onnx int8", lambda: quantize_onnx_int8(onnx_file, folder / "model.int8.onnx", calibration,
                                                  method=quantize_method, per_channel=per_channel,
                                                  int8_format=int8_format),
          lambda p: onnx_runner(onnx_session(p, threads)))
    if aoti_cpu:
        timed("aoti cpu", lambda: build_aoti(model, folder / "model_cpu.pt2", image_shape, "cpu"), aoti_runner)
    if torch.cuda.is_available():
        timed("aoti cuda fp16", lambda: build_aoti(model, folder / "model_cuda_fp16.pt2", image_shape, "cuda",
                                                   torch.float16), lambda p: aoti_runner(p, "cuda"))
    else:
        skipped["aoti cuda fp16"] = ("skipped: no CUDA device" + (" (the CPU package is built and checked instead)"
                                                                 if aoti_cpu else ""))
    reason = tensorrt_unavailable()
    for precision in ("fp16", "int8"):
        if reason is not None:
            skipped[f"tensorrt {precision}"] = f"skipped: {reason}"
            continue
        timed(f"tensorrt {precision}",
              lambda precision=precision: build_tensorrt_engine(
                  onnx_file, folder / f"model_{precision}.engine", image_shape, precision, calibration,
                  workspace_mb=tensorrt_workspace_mb, timing_cache=folder / "tensorrt.cache"),
              tensorrt_runner)
    return built, skipped


# -- latency -------------------------------------------------------------------------------

@dataclass
class Latency:
    p50_ms: float
    p95_ms: float
    repeats: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def measure_latency(run: Callable[[np.ndarray], object], pixels: np.ndarray, seconds: float = 2.0,
                    warmup: int = 5, min_repeats: int = 20, sync: Callable[[], None] = lambda: None) -> Latency:
    """Per-call wall time of `run(pixels)`: warm-up calls, then repeats until `seconds` have
    passed (at least `min_repeats`); median and 95th percentile."""
    for _ in range(warmup):
        run(pixels)
    sync()
    times, start = [], time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        run(pixels)
        sync()
        times.append(time.perf_counter() - t0)
    return Latency(1e3 * float(np.median(times)), 1e3 * float(np.percentile(times, 95)), len(times))


def latency_by_batch(run: Callable[[np.ndarray], object], images: np.ndarray, batches: list[int], seconds: float,
                     sync: Callable[[], None] = lambda: None) -> dict[str, dict]:
    """{batch: Latency as a dict} for the first `batch` images, batch by batch."""
    return {str(b): measure_latency(run, images[:b], seconds, sync=sync).as_dict() for b in batches}


# -- AOTInductor ---------------------------------------------------------------------------

def build_aoti(model: ImageClassifier, path: str | Path, image_shape: tuple[int, int, int], device: str = "cpu",
               dtype: torch.dtype = torch.float32) -> Path:
    """torch.export the raw-pixel model (dynamic batch) and compile it ahead of time into a
    self-contained .pt2 package for `device` (compile time is the caller's to measure)."""
    import torch._inductor
    import torch._inductor.config

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = raw_pixels(model, dtype, device)
    # compile in this process: inductor's pool of compile workers would otherwise stay behind
    # and share the cores with every latency measured after the build
    with torch.no_grad(), torch._inductor.config.patch(compile_threads=1):
        program = torch.export.export(wrapped, (_example(image_shape, device=device),), dynamic_shapes=_batch_dim())
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return path


def aoti_runner(path: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    import torch._inductor

    compiled = torch._inductor.aoti_load_package(str(path))

    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return compiled(torch.from_numpy(np.ascontiguousarray(pixels)).to(device)).cpu().numpy()
    return run


# -- TensorRT ------------------------------------------------------------------------------

def tensorrt_unavailable() -> str | None:
    """Why TensorRT engines cannot be built here, or None when they can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as err:
        return (f"TensorRT is not installed ({err.msg}); it installs from NVIDIA's package index, "
                f"which PyPI's tensorrt packages only point to")
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def build_tensorrt_engine(onnx_path: str | Path, engine_path: str | Path, image_shape: tuple[int, int, int],
                          precision: str = "fp16", calibration: np.ndarray | None = None,
                          batches: tuple[int, int, int] = (1, 64, 1024), workspace_mb: int = 1024,
                          timing_cache: str | Path | None = None) -> Path:
    """A serialized TensorRT engine from the ONNX file: ONNX parser, builder config with an
    optimization profile over the batch axis, FP16 or INT8 (entropy calibration on
    `calibration`, uint8 training images), and a timing cache reused across builds."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    cache_file = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file and cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, *[(b, *image_shape) for b in batches])
    config.add_optimization_profile(profile)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        if calibration is None:
            raise ValueError("INT8 needs calibration images")
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
        config.int8_calibrator = _entropy_calibrator(trt, calibration, cache_file)
        config.set_calibration_profile(profile)
    else:
        raise ValueError(f"TensorRT precision {precision!r}: fp16 or int8")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build a {precision} engine from {onnx_path}")
    if cache_file is not None:
        cache_file.write_bytes(memoryview(config.get_timing_cache().serialize()))
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(memoryview(serialized))
    return engine_path


def _entropy_calibrator(trt, images: np.ndarray, cache_file: Path | None, batch_size: int = 64):
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds uint8 training batches from a CUDA tensor; the calibration cache sits beside the timing cache."""

        def __init__(self):
            super().__init__()
            self.batches = [torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).cuda()
                            for i in range(0, len(images) - batch_size + 1, batch_size)]
            self.index = 0

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names):
            if self.index >= len(self.batches):
                return None
            self.index += 1
            return [int(self.batches[self.index - 1].data_ptr())]

        def read_calibration_cache(self):
            path = cache_file.with_suffix(".calib") if cache_file else None
            return path.read_bytes() if path and path.is_file() else None

        def write_calibration_cache(self, cache):
            if cache_file:
                cache_file.with_suffix(".calib").write_bytes(bytes(cache))
    return EntropyCalibrator()


def tensorrt_runner(engine_path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """Run a serialized engine on uint8 pixels with torch CUDA tensors as its I/O buffers."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()

    def run(pixels: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(pixels)).cuda()
        context.set_input_shape(INPUT, tuple(x.shape))
        out = torch.empty(tuple(context.get_tensor_shape(OUTPUT)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(INPUT, x.data_ptr())
        context.set_tensor_address(OUTPUT, out.data_ptr())
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return out.cpu().numpy()
    return run
