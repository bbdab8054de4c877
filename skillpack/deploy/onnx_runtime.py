"""Running an exported ONNX model with ONNX Runtime - torch-free, so that the inference service
stays small (importing torch alone costs ~640 MB of resident memory here)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

INPUT, OUTPUT = "pixels", "logits"


def onnx_metadata(path: str | Path) -> dict:
    """The JSON metadata export_onnx wrote into the file. Keys in ONNX's own namespace (`onnx.`:
    ONNX Runtime's quantizer marks its files with onnx.infer, onnx.quant.pre_process) are not ours
    and not JSON: left out."""
    import json

    import onnxruntime as ort

    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    return {key: json.loads(value) for key, value in meta.items() if not key.startswith("onnx.")}


def onnx_session(path: str | Path, threads: int = 2):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_runner(session) -> Callable[[np.ndarray], np.ndarray]:
    return lambda pixels: session.run([OUTPUT], {INPUT: np.ascontiguousarray(pixels)})[0]
