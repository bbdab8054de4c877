#!/usr/bin/env bash
# The GPU checks, one command each on a CUDA machine (no network needed; its own torch,
# torchvision, timm, numpy, pandas, scikit-learn, scipy, pyyaml, tqdm are used as they are):
#
# 1. training (resident engine, GPU recipes, concurrent ablation) - benchmarks/gpu.py:
#      prepare here:   bash benchmarks/gpu_check.sh prepare-train  # pydantic wheels + Fashion-MNIST .gz into .gpu/
#      run there:      OUT=/tmp/out bash benchmarks/gpu_check.sh train [benchmarks/gpu.py flags]
#    It writes $OUT/gpu.json and $OUT/gpu.log (copy gpu.json to benchmarks/results/gpu.json here). Budget: the
#    script stops starting work after --budget-s (450 s by default) and is killed at 540 s.
#
# 2. export (ONNX, AOTInductor fp16 on CUDA, TensorRT where installed) - benchmarks/latency.py:
#      prepare here:   bash benchmarks/gpu_check.sh prepare          # wheels + model + test data into .gpu/
#      run there:      OUT=/tmp/out bash benchmarks/gpu_check.sh run
#    It builds and checks ONNX, AOTInductor fp16 (CUDA) and, where TensorRT is installed, TensorRT
#    FP16 / INT8 engines, and times them against eager PyTorch at batch 1 / 64 / 1024
#    (benchmarks/results/latency.json, copied to $OUT). Budget: under 8 minutes.
#
# .gpu/ is git-ignored (.gitignore): copy it with the working tree to the CUDA machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYDANTIC_WHEELS="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0"
FMNIST_DIR=/usr/share/datasets/fashion-mnist
case "${1:-run}" in
  prepare-train)
    mkdir -p .gpu/train-wheels .gpu/fashion-mnist
    # the versions of this project's venv, built for a CUDA machine's Python 3.12 (pure wheels but pydantic-core)
    .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .gpu/train-wheels $PYDANTIC_WHEELS
    cp "$FMNIST_DIR"/*-ubyte.gz .gpu/fashion-mnist/
    du -sh .gpu/train-wheels .gpu/fashion-mnist ;;
  train)
    shift
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .gpu/train-wheels/*.whl
    export PYTHONPATH="/tmp/site:$PWD" OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
    out="${OUT:-/tmp}"
    set +e
    timeout 540 python3 -m benchmarks.gpu --out "$out/gpu.json" --data-root .gpu/fashion-mnist "$@" 2>&1 | tee "$out/gpu.log"
    status=${PIPESTATUS[0]}
    set -e
    exit "$status" ;;
  prepare)
    mkdir -p .gpu/wheels .gpu/prepared
    # what a CUDA image may lack (its torch, timm, onnx, onnxruntime, numpy, pandas, sklearn are used as they are)
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
  *) echo "usage: $0 prepare-train|train [benchmarks/gpu.py flags]|prepare|run" >&2; exit 2 ;;
esac
