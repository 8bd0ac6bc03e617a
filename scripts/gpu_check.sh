#!/usr/bin/env bash
# One-command check of the CUDA side on a machine with one NVIDIA GPU (under 8 minutes on an H200):
#   1. env          python, torch, the GPU
#   2. build        the CUDA kernels (reused when the extension in the tree already serves CUDA; else built
#                   in place for this GPU's architecture only)
#   3. tests        tests/unit/test_cuda_kernels.py (incl. the sync-free forward check), test_scaled_e4m3,
#                   test_no_sync, test_weight_cache
#   4. bench        benchmarks/bench_kernels.py --device cuda: per-tensor, per-channel, E4M3, histogram and the
#                   per-call cost; float32/float16/bfloat16; 64 KiB .. 1 GiB; against clone and torch's built-ins
#   5. centerpoint  python integration/centerpoint_ptq.py --device cuda (the embedded default)
#   6. summary      one table on stdout and OUT_DIR/summary.json (every step's status, the kernel targets)
# Every step writes OUT_DIR/<step>.log; the bench also OUT_DIR/bench_kernels.json.
#
#   bash scripts/gpu_check.sh OUT_DIR [--dry-run]
#
# --dry-run (CPU, called by scripts/test.sh): runs every CPU-side step instead: the scripts exist and parse,
# the tests collect, the bench runs tiny on the CPU with the same arguments and writes its JSON, the driver
# parses its arguments, and the summary is written. Exit status 0 when every step passed, 1 otherwise,
# 2 for bad arguments.
# Environment: PYTHON (default: .venv-cuda/bin/python, then .venv/bin/python, then python3), CUDA_HOME
# (default /usr/local/cuda), MAX_JOBS (default: all cores), GPU_CHECK_BUDGET_S (default 470).
set -uo pipefail

usage() {
  echo "usage: bash scripts/gpu_check.sh OUT_DIR [--dry-run]" >&2
  exit 2
}

OUT=""
DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown option $arg" >&2; usage ;;
    *) [ -z "$OUT" ] || { echo "gpu_check: more than one OUT_DIR given" >&2; usage; }; OUT=$arg ;;
  esac
done
[ -n "$OUT" ] || { echo "gpu_check: OUT_DIR is missing" >&2; usage; }
if [ -e "$OUT" ] && [ ! -d "$OUT" ]; then
  echo "gpu_check: OUT_DIR $OUT exists and is not a directory; give a directory path" >&2
  exit 2
fi
mkdir -p "$OUT" || { echo "gpu_check: cannot create OUT_DIR $OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)

cd "$(dirname "$0")/.."
ROOT=$(pwd)
if [ -z "${PYTHON:-}" ]; then
  for candidate in "$ROOT/.venv-cuda/bin/python" "$ROOT/.venv/bin/python" python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
BUDGET=${GPU_CHECK_BUDGET_S:-470}
START=$(date +%s)
STEPS="$OUT/steps.tsv"
: >"$STEPS"

# run_step NAME TIMEOUT_S COMMAND...: runs COMMAND with its output in OUT/NAME.log, within the time left.
run_step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt 10 ]; then
    printf '%s\tskipped\t0\tno time left of the %ss budget\n' "$name" "$BUDGET" >>"$STEPS"
    echo "== $name: skipped (time budget spent)"
    return 0
  fi
  [ "$limit" -le "$left" ] || limit=$left
  echo "== $name (limit ${limit}s): $*"
  local begin=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local seconds=$(($(date +%s) - begin))
  local status=ok note=""
  if [ "$rc" -eq 124 ]; then
    status=failed note="timed out after ${limit}s"
  elif [ "$rc" -ne 0 ]; then
    status=failed note="exit status $rc: $(tail -n 1 "$OUT/$name.log" | tr '\t' ' ' | cut -c1-200)"
  fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$seconds" "$note" >>"$STEPS"
  echo "   $status in ${seconds}s${note:+ ($note)}"
}

skip_step() {
  printf '%s\tskipped\t0\t%s\n' "$1" "$2" >>"$STEPS"
  echo "== $1: skipped ($2)"
}

BENCH_ARGS=(--ops per_tensor per_channel e4m3 e4m3_scaled histogram call --dtypes float32 float16 bfloat16
            --json "$OUT/bench_kernels.json")
CUDA_TESTS=(tests/unit/test_cuda_kernels.py tests/unit/test_scaled_e4m3.py tests/unit/test_no_sync.py
            tests/unit/test_weight_cache.py)

if [ "$DRY_RUN" -eq 1 ]; then
  run_step env 60 "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda build', torch.version.cuda)"
  run_step build 60 bash -c 'ls csrc/cuda/*.cu >/dev/null && "$0" -m py_compile setup.py && bash -n scripts/check_cuda_build.sh' "$PYTHON"
  run_step tests 120 "$PYTHON" -m pytest -q --collect-only -p no:cacheprovider "${CUDA_TESTS[@]}"
  run_step bench 180 "$PYTHON" benchmarks/bench_kernels.py --device cpu --sizes 4K --reps 1 --warmup 0 "${BENCH_ARGS[@]}"
  run_step centerpoint 120 "$PYTHON" integration/centerpoint_ptq.py --help
else
  run_step env 60 "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch ' + \
torch.__version__; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"
  if grep -q "^env	ok" "$STEPS"; then
    SERVES_CUDA="from pytorch_quantization import ops; assert ops.serves('cuda'), ops.LOAD_ERROR or 'no CUDA kernels'"
    if "$PYTHON" -c "$SERVES_CUDA" >/dev/null 2>&1; then
      skip_step build "reused: the extension in the tree already serves CUDA"
    else
      ARCH=$("$PYTHON" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))")
      run_step build 300 env CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" TORCH_CUDA_ARCH_LIST="$ARCH" \
        MAX_JOBS="${MAX_JOBS:-$(nproc)}" bash -c '"$0" setup.py build_ext --inplace && "$0" -c "$1"' "$PYTHON" "$SERVES_CUDA"
    fi
    run_step tests 150 "$PYTHON" -m pytest -q -rs -p no:cacheprovider "${CUDA_TESTS[@]}"
    run_step bench 180 "$PYTHON" benchmarks/bench_kernels.py --device cuda --sizes 64K 16M 256M 1G --reps 11 "${BENCH_ARGS[@]}"
    run_step centerpoint 240 "$PYTHON" integration/centerpoint_ptq.py --device cuda --work-dir "$OUT/centerpoint"
  else
    for step in build tests bench centerpoint; do skip_step "$step" "no usable CUDA torch (see env.log)"; done
  fi
fi

"$PYTHON" scripts/gpu_check_summary.py "$OUT" --dry-run "$DRY_RUN"
