#!/usr/bin/env bash
# Sets up what the Waymo tools need; idempotent (a second run only checks, in seconds).
#   bash scripts/setup_waymo.sh
# (a) Converters and the synthetic-data generator: tensorflow-cpu 2.21 (works with numpy 2 and
#     protobuf 7) plus waymo-open-dataset-tf-2-12-0 1.6.7 without its pins, installed into the
#     project's .venv beside torch and MMDetection3D (they only add packages there; MMDetection3D's
#     converter needs mmdet3d and TensorFlow in one interpreter). WAYMO_TF_PYTHON names another
#     interpreter. Measured here: about 70 s with an empty pip cache, 23 s with a warm one.
# (b) The metrics op (py_metrics_ops, linked against TensorFlow 2.13 exactly): a separate
#     .venv-waymo-metrics (WAYMO_METRICS_VENV) with waymo-open-dataset-tf-2-12-0==1.6.7 and its pins
#     (TensorFlow 2.13, numpy 1.23). Python 3.10 or 3.11 (WAYMO_BASE_PYTHON, default python3);
#     2.8 GB on disk; measured about 6.5 min with an empty pip cache, about 65 s with a warm one.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
TF_PY=${WAYMO_TF_PYTHON:-.venv/bin/python}
METRICS_VENV=${WAYMO_METRICS_VENV:-.venv-waymo-metrics}
BASE_PY=${WAYMO_BASE_PYTHON:-python3}
WAYMO_PKG=waymo-open-dataset-tf-2-12-0==1.6.7
NEED_FREE_KB=$((4 * 1024 * 1024))

if [ ! -x "$TF_PY" ]; then
  echo "setup_waymo: $TF_PY not found; create the project environment first: bash scripts/setup_env.sh" >&2
  exit 2
fi

start=$(date +%s)
if "$TF_PY" -c "import tensorflow, waymo_open_dataset.utils.frame_utils" >/dev/null 2>&1; then
  echo "setup_waymo: converter TensorFlow already present in $TF_PY"
else
  "$TF_PY" -m pip install -q tensorflow-cpu==2.21.0
  "$TF_PY" -m pip install -q --no-deps "$WAYMO_PKG"
  "$TF_PY" -c "import tensorflow as tf, numpy, waymo_open_dataset.utils.frame_utils
print('setup_waymo: converter environment: tensorflow', tf.__version__, 'numpy', numpy.__version__)"
fi
echo "setup_waymo: converter environment ready ($(( $(date +%s) - start )) s)"

start=$(date +%s)
if [ -x "$METRICS_VENV/bin/python" ] && \
   "$METRICS_VENV/bin/python" -c "from waymo_open_dataset.metrics.ops import py_metrics_ops" >/dev/null 2>&1; then
  echo "setup_waymo: metrics environment already present in $METRICS_VENV"
else
  if ! "$BASE_PY" -c "import sys; sys.exit(sys.version_info[:2] not in ((3, 10), (3, 11)))"; then
    echo "setup_waymo: the metrics environment needs Python 3.10 or 3.11; set WAYMO_BASE_PYTHON" >&2
    exit 2
  fi
  mkdir -p "$(dirname "$METRICS_VENV")"
  free_kb=$(df -Pk "$(dirname "$METRICS_VENV")" | awk 'NR == 2 {print $4}')
  if [ "$free_kb" -lt "$NEED_FREE_KB" ]; then
    echo "setup_waymo: the metrics environment needs 4 GiB free disk, $((free_kb / 1024)) MiB available" >&2
    exit 2
  fi
  rm -rf "$METRICS_VENV"
  "$BASE_PY" -m venv "$METRICS_VENV"
  "$METRICS_VENV/bin/python" -m pip install -q --prefer-binary "$WAYMO_PKG"
  TF_CPP_MIN_LOG_LEVEL=2 "$METRICS_VENV/bin/python" -c "import tensorflow as tf
from waymo_open_dataset.metrics.ops import py_metrics_ops
print('setup_waymo: metrics environment: tensorflow', tf.__version__)"
fi
echo "setup_waymo: metrics environment ready ($(( $(date +%s) - start )) s)"
