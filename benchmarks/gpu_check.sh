#!/usr/bin/env bash
# One table of what a GPU machine does with the project, in <= 8 minutes on one H200 (benchmarks/gpu_check.py).
#   bash benchmarks/gpu_check.sh          # CUDA machine
#   bash benchmarks/gpu_check.sh --dry    # CPU, toy sizes: checks the script itself (the test suite runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=python
if [ -x .venv/bin/python ]; then python_bin=.venv/bin/python; fi
exec "$python_bin" benchmarks/gpu_check.py "$@"
