#!/usr/bin/env bash
# The GPU check of the export stage, one command on a CUDA machine (no network there):
#   prepare here:   bash benchmarks/gpu_check.sh prepare     # wheels + model + test data into .gpu/ (git-ignored)
#   run there:      bash benchmarks/gpu_check.sh run          # device tool: run(command=..., carry=[".gpu"])
# It builds and checks ONNX, AOTInductor fp16 (CUDA) and, where TensorRT is installed, TensorRT
# FP16 / INT8 engines, and times them against eager PyTorch at batch 1 / 64 / 1024
# (benchmarks/results/latency.json, copied to $OUT). Budget: under 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-run}" in
  prepare)
    mkdir -p .gpu/wheels .gpu/prepared
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    # what the lent machine lacks (its torch, timm, onnx, onnxruntime, numpy, pandas, sklearn are used as they are)
    .venv/bin/pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
      --platform manylinux_2_17_x86_64 -d .gpu/wheels pydantic pydantic-core annotated-types typing-inspection \
      onnxscript onnx-ir ml-dtypes pyyaml
    cp models/model.pt .gpu/model.pt
    cp data/prepared/{test_images.npy,test_labels.npy,train_images.npy,train_labels.npy,manifest.csv,classes.json,summary.json} .gpu/prepared/
    du -sh .gpu ;;
  run)
    python -m pip install -q --no-index --find-links .gpu/wheels pydantic onnxscript pyyaml
    export PYTHONPATH="$PWD" OMP_WAIT_POLICY=PASSIVE
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    timeout 450 python -m benchmarks.latency --model .gpu/model.pt --data .gpu/prepared --batches 1 64 1024 \
      --seconds 1 --threads 8
    cp benchmarks/results/latency.json "${OUT:-/tmp}/latency_gpu.json" ;;
  *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
