#!/usr/bin/env bash
# Install the MMDetection3D 1.4 stack (CenterPoint on CPU) into the current Python environment.
#
#   bash scripts/setup_mmdet3d.sh [--wheels DIR]
#
# Versions that work together on Python 3.11 + torch 2.13.0 (see the project's ENVIRONMENT notes):
# mmengine 0.10.7, mmcv 2.1.0 with ops, mmdet 3.3.0, mmdet3d 1.4.0, spconv 2.3.8 + cumm 0.7.11,
# nuscenes-devkit 1.2.0. mmdet3d, nuscenes-devkit and lyft_dataset_sdk go in with --no-deps (their
# pins -- numpy<2, an old matplotlib, black/flake8 -- break or rebuild the environment); their real
# runtime dependencies are installed explicitly. --wheels DIR installs mmcv from a prebuilt
# mmcv-2.1.0 wheel in DIR (it must match the installed torch); otherwise mmcv is compiled from its
# sdist (10-35 min on 2 cores). Every step is skipped when its imports already work, so a second
# run is a quick no-op. Set PYTHON to choose the interpreter (default: python, else python3).
set -euo pipefail

WHEELS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) [ $# -ge 2 ] || { echo "setup_mmdet3d: --wheels needs a folder" >&2; exit 2; }
                  WHEELS="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "setup_mmdet3d: unknown argument '$1' (usage: $0 [--wheels DIR])" >&2; exit 2 ;;
    esac
done
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then
    echo "setup_mmdet3d: --wheels $WHEELS is not a folder" >&2; exit 2
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if command -v python >/dev/null 2>&1; then PY=python; else PY=python3; fi
fi
PIP=("$PY" -m pip install --prefer-binary)

# "python statement" -> succeeds when the check passes (quietly).
check() { "$PY" -c "$1" >/dev/null 2>&1; }

# All step checks run in ONE interpreter (imports are slow); it prints the keys of failing steps.
declare -A CHECKS NAMES
ORDER=()
define() { ORDER+=("$1"); NAMES[$1]="$2"; CHECKS[$1]="$3"; }
failing_steps() {
    local args=() key
    for key in "${ORDER[@]}"; do args+=("$key" "${CHECKS[$key]}"); done
    "$PY" -c '
import sys
pairs = sys.argv[1:]
failed = []
for key, code in zip(pairs[::2], pairs[1::2]):
    try:
        exec(code, {})
    except BaseException:
        failed.append(key)
print("probe-done", *failed)
' "${args[@]}" 2>/dev/null | tail -n 1
}

# step KEY INSTALL_COMMAND...: install and verify (called only for failing steps).
step() {
    local key="$1"; shift
    echo "setup_mmdet3d: installing ${NAMES[$key]}"
    "$@"
    if ! check "${CHECKS[$key]}"; then
        echo "setup_mmdet3d: ${NAMES[$key]} still fails its check after installing: $PY -c \"${CHECKS[$key]}\"" >&2
        exit 1
    fi
}

if ! check "import torch"; then
    echo "setup_mmdet3d: torch is not importable with $PY; install it first (pip install torch==2.13.0 for CPU)" >&2
    exit 1
fi

install_mmcv() {
    local wheel=""
    if [ -n "$WHEELS" ]; then
        wheel="$(ls "$WHEELS"/mmcv-2.1.0-*.whl 2>/dev/null | head -n 1 || true)"
        [ -n "$wheel" ] || echo "setup_mmdet3d: no mmcv-2.1.0 wheel in $WHEELS; building from source"
    fi
    if [ -n "$wheel" ]; then
        "${PIP[@]}" "$wheel"
    else
        "${PIP[@]}" 'setuptools>=77.0.3,<81' ninja
        MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" "${PIP[@]}" --no-build-isolation mmcv==2.1.0
    fi
}

RUNTIME_MODULES=(numba shapely pyquaternion pycocotools scipy pandas sklearn cachetools descartes cv2
                 matplotlib networkx plyfile skimage tensorboard trimesh terminaltables)
RUNTIME_PACKAGES=(numba shapely pyquaternion pycocotools scipy pandas scikit-learn cachetools descartes
                  opencv-python-headless matplotlib networkx plyfile scikit-image tensorboard trimesh
                  terminaltables)
runtime_check="import $(IFS=,; echo "${RUNTIME_MODULES[*]}")"

define mmengine "mmengine 0.10.7" "import mmengine; assert mmengine.__version__ == '0.10.7'"
define mmcv "mmcv 2.1.0 with ops" "import mmcv; assert mmcv.__version__ == '2.1.0'; from mmcv.ops import nms_rotated, Voxelization"
define mmdet "mmdet 3.3.0" "import mmdet; assert mmdet.__version__ == '3.3.0'"
define spconv "spconv 2.3.8 + cumm 0.7.11" "import spconv, cumm; from importlib.metadata import version as v; assert v('spconv') == '2.3.8' and v('cumm') == '0.7.11'"
define runtime "runtime dependencies (${RUNTIME_PACKAGES[*]})" "$runtime_check"
define nodeps "mmdet3d 1.4.0, nuscenes-devkit 1.2.0, lyft_dataset_sdk (--no-deps)" "import mmdet3d, nuscenes, lyft_dataset_sdk; assert mmdet3d.__version__ == '1.4.0'; from importlib.metadata import version as v; assert v('nuscenes-devkit') == '1.2.0'"
define stack "the assembled stack (register_all_modules, mmdet3d.evaluation)" "import mmdet3d, mmcv, spconv, nuscenes; from mmdet3d.utils import register_all_modules; register_all_modules(); import mmdet3d.evaluation"

PROBE="$(failing_steps || true)"
if [[ "$PROBE" == probe-done* ]]; then
    FAILING=" ${PROBE#probe-done} "
else  # the probe itself died (e.g. a broken compiled extension): redo every step
    FAILING=" ${ORDER[*]} "
fi
needs() { [[ "$FAILING" == *" $1 "* ]]; }
for key in "${ORDER[@]}"; do
    if [[ "$FAILING" != *" $key "* ]]; then echo "setup_mmdet3d: skip ${NAMES[$key]} (imports already)"; fi
done

if needs mmengine; then step mmengine "${PIP[@]}" mmengine==0.10.7; fi
if needs mmcv; then step mmcv install_mmcv; fi
if needs mmdet; then step mmdet "${PIP[@]}" mmdet==3.3.0; fi
if needs spconv; then step spconv "${PIP[@]}" spconv==2.3.8 cumm==0.7.11; fi
if needs runtime; then step runtime "${PIP[@]}" "${RUNTIME_PACKAGES[@]}"; fi
if needs nodeps; then step nodeps "${PIP[@]}" --no-deps mmdet3d==1.4.0 nuscenes-devkit==1.2.0 lyft_dataset_sdk; fi
if [[ -z "${FAILING// /}" ]]; then
    echo "setup_mmdet3d: nothing to do, the MMDetection3D stack already imports"
else
    step stack true
    echo "setup_mmdet3d: stack OK"
fi
