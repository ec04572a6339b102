#!/usr/bin/env bash
# The registered paper-table protocol (#27, t3d_tools/experiments/protocol_v3.json) at GPU size: one H100, 8 worker
# processes sharing it, stopped after 12 minutes (resumable: run it again with the same OUT to finish).
#   scripts/paper_table_gpu.sh                 # run into results/gpu
#   scripts/paper_table_gpu.sh --dry_run       # resolve every config of the plan without running (CPU is enough)
#   OUT=/tmp/gpu JOBS=4 scripts/paper_table_gpu.sh --world custom.data.synthetic_world.ensure_world
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout "${TIMEOUT_S:-720}" "${PYTHON:-python}" -m t3d_tools.experiments.paper_table --protocol v3 --scale gpu \
    --out "${OUT:-results/gpu}" --jobs "${JOBS:-8}" "$@"
