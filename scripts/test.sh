#!/usr/bin/env bash
# Sets up the project's environment from scratch (or reuses it) and runs the whole test suite.
#   bash scripts/test.sh [pytest args...]
# Steps: .venv with the pinned CPU torch; our package with its compiled CPU ops; the MMDetection3D
# stack (from ../shared/wheels when present, else built from source); a compile-and-link check of the
# CUDA kernels against the CUDA build of torch when nvcc is present; then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
PY=.venv/bin/python
$PY -m pip install -q torch==2.13.0 numpy scipy pyyaml tqdm pytest onnx onnxruntime ninja 'setuptools>=77.0.3,<81' wheel
$PY -m pip install -q --no-build-isolation -e .
$PY -c "import pytorch_quantization as pq; print('kernel backend:', pq.kernel_backend())"

WHEELS_ARGS=()
if [ -d ../shared/wheels ]; then WHEELS_ARGS=(--wheels ../shared/wheels); fi
if [ -f scripts/setup_mmdet3d.sh ]; then
  PYTHON=$PY bash scripts/setup_mmdet3d.sh "${WHEELS_ARGS[@]}"
fi

if command -v nvcc >/dev/null 2>&1 && [ -f scripts/check_cuda_build.sh ]; then
  bash scripts/check_cuda_build.sh
else
  echo "CUDA build check skipped: nvcc not found"
fi

OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} $PY -m pytest -q -rs tests "$@"
