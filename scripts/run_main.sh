#!/usr/bin/env bash
# Sets up the project's environment (scripts/setup_env.sh) and runs the main job:
# CenterPoint PTQ (fp32 / w8 / w8a8) through MMDetection3D. Without arguments it runs on the embedded
# default: a synthetic nuScenes-format dataset generated once under work_dirs/ and the committed tiny
# checkpoint. Arguments are passed to integration/centerpoint_ptq.py (see its --help).
#   bash scripts/run_main.sh [centerpoint_ptq.py args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python integration/centerpoint_ptq.py "$@"
