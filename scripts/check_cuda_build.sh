#!/usr/bin/env bash
# Checks that the compiled kernels build WITH CUDA (no GPU needed): a CUDA torch in .venv-cuda,
# the extension built from a copy of the tree in .venv-cuda/src (so the main tree's CPU build is
# left alone), the CUDA kernels registered for dispatch key CUDA, and the CPU kernel tests run
# against that build. Idempotent: reuses the venv and the ninja build directory when present.
#
# Environment: CUDA_HOME (default /usr/local/cuda), TORCH_CUDA_ARCH_LIST (default "8.0;9.0+PTX"),
# MAX_JOBS (default 2), PYTHON (default python3), TORCH_SPEC (default torch==2.14.1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv-cuda"
SRC="$VENV/src"
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, ninja, pytest, scipy, yaml, tqdm" 2>/dev/null; then
  echo "== creating $VENV with $TORCH_SPEC"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q "$TORCH_SPEC" numpy pyyaml tqdm scipy ninja setuptools pytest
fi
"$VENV/bin/python" -c "import torch; assert torch.version.cuda, 'torch in .venv-cuda is not a CUDA build'; \
print('== torch', torch.__version__, 'CUDA', torch.version.cuda)"

echo "== copying the sources to $SRC"
mkdir -p "$SRC/tests"
rm -rf "$SRC/csrc"
find "$SRC" -path "$SRC/build" -prune -o -name '*.py' -type f -print0 | xargs -0 -r rm -f
cp -a setup.py csrc pytorch_quantization "$SRC/"
rm -f "$SRC"/pytorch_quantization/_C*.so  # the main tree's CPU-only build; build_ext puts the CUDA one back
cp -a tests/unit/test_kernels.py "$SRC/tests/"
[ -f tests/conftest.py ] && cp -a tests/conftest.py "$SRC/tests/"

echo "== building pytorch_quantization._C with CUDA"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH="$CUDA_HOME/bin:$VENV/bin:$PATH"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0+PTX}
export MAX_JOBS=${MAX_JOBS:-2}
export CPATH="$VENV/lib/python3.11/site-packages/nvidia/cu13/include${CPATH:+:$CPATH}"
(cd "$SRC" && "$VENV/bin/python" setup.py build_ext --inplace 2>&1 | tee "$VENV/build.log" | grep -E "pytorch_quantization build|error" || true)
if ! ls "$SRC"/pytorch_quantization/_C*.so >/dev/null 2>&1; then
  echo "FAILED: no extension was built; see $VENV/build.log" >&2
  exit 1
fi

echo "== checking the CUDA kernels are registered"
(cd "$SRC" && PYTHONPATH="$SRC" "$VENV/bin/python" - <<'PY'
import torch
from pytorch_quantization import ops
assert ops.LOAD_ERROR is None, ops.LOAD_ERROR
for op in ops._OPS:  # pylint: disable=protected-access
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pytorch_quantization::{op}", key), (op, key)
assert ops.serves("cpu") and ops.serves("cuda")
print("== CPU and CUDA kernels registered for every op")
PY
)

echo "== CPU kernel tests against the CUDA build"
(cd "$SRC" && PYTHONPATH="$SRC" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_kernels.py)
