#!/usr/bin/env bash
# The main job on the embedded default: set up .venv, then pre-train T3D on a synthetic image-report set that the
# toy overlay generates itself (CPU, a few minutes). Outputs go to bundles/t3d_pretrain/{data,models,runs}, or
# under $T3D_RUN_DIR (an absolute path) when set. Re-running resumes an interrupted run from its last checkpoint; a
# finished run is refused in one line (it would train 0 steps): use another T3D_RUN_DIR to train again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run_dir=${T3D_RUN_DIR:-.}
cd bundles/t3d_pretrain
../../.venv/bin/python -m monai.bundle run --config_file "['configs/train.json','configs/cpu_toy.json']" \
    --bundle_root "$run_dir"
