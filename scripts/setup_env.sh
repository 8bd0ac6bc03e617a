#!/usr/bin/env bash
# Creates (or reuses) .venv with everything the project needs: the pinned CPU torch, this package with
# its compiled CPU kernels, the test tools, and the MMDetection3D stack (mmcv from ../shared/wheels when
# that folder exists, else built from its sdist). Idempotent: a second run only checks.
#   bash scripts/setup_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
PY=.venv/bin/python
$PY -m pip install -q torch==2.13.0 numpy scipy pyyaml tqdm pytest onnx onnxruntime onnxscript ninja 'setuptools>=77.0.3,<81' wheel
$PY -m pip install -q --no-build-isolation -e .
$PY -c "import pytorch_quantization as pq; print('pytorch_quantization kernel backend:', pq.kernel_backend())"

WHEELS_ARGS=()
if [ -d ../shared/wheels ]; then WHEELS_ARGS=(--wheels ../shared/wheels); fi
PYTHON=$PY bash scripts/setup_mmdet3d.sh "${WHEELS_ARGS[@]}"
