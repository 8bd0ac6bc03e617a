#!/usr/bin/env bash
# Sets up the project's environment (scripts/setup_env.sh), the Waymo environments (scripts/setup_waymo.sh:
# TensorFlow for the converters, the TensorFlow 2.13 metrics environment; about 5.5 min cold) and runs the
# whole test suite.
#   bash scripts/test.sh [pytest args...]
# When nvcc is present it also compiles and links the CUDA kernels against the CUDA build of torch
# (scripts/check_cuda_build.sh, in a separate .venv-cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
bash scripts/setup_waymo.sh

# the CPU-side steps of the one-command GPU check (argument parsing, scripts, bench JSON, summary)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHON=.venv/bin/python bash scripts/gpu_check.sh "$(mktemp -d)" --dry-run

if command -v nvcc >/dev/null 2>&1; then
  bash scripts/check_cuda_build.sh
else
  echo "CUDA build check skipped: nvcc not found"
fi

OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/python -m pytest -q -rs tests "$@"
