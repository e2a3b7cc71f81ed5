#!/usr/bin/env bash
# The GPU check (issue #18): on a CUDA host, install what it needs into .venv and run it in one go.
#
#   bash bench/gpu_check.sh                 # install, then python -m bench.gpu (under 8 minutes)
#   SKIP_INSTALL=1 bash bench/gpu_check.sh --sections search --n 200000
#
# Installs the project, then swaps faiss-cpu / onnxruntime for their GPU builds and adds
# torchvision (nvJPEG decode) and TensorRT for ONNX Runtime's TensorRT provider. PyPI's Linux
# torch wheels are CUDA builds; TORCH_SPEC pins one (default torch==2.13.0, as the Makefile).
# Arguments go to `python -m bench.gpu` (see its --help); it prints one table and writes
# bench/results/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
PY=.venv/bin/python
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "$TORCH_SPEC" torchvision
  "$PY" -m pip install -q -e ".[test]"
  "$PY" -m pip uninstall -y -q faiss-cpu onnxruntime || true
  "$PY" -m pip install -q faiss-gpu-cu12 onnxruntime-gpu
  "$PY" -m pip install -q tensorrt || echo "tensorrt did not install: the TensorRT EP row will say so" >&2
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'torch sees no CUDA GPU')"
exec timeout 480 "$PY" -m bench.gpu "$@"
