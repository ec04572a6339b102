#!/usr/bin/env bash
# One-step set-up: .venv with torch, the design-card packages (monai, transformers, nibabel, pytorch-ignite, fire,
# pytest) and this repository's custom/ package (editable, so every bundle can `import custom`).
# torch is installed first and pinned only here: 2.13.0 is the CPU wheel this project's machines have on disk, and a
# bare `torch` would pull a multi-GB CUDA build. GPU users: T3D_TORCH_SPEC="torch" (or any spec) keeps their build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_install() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
pip_install "${T3D_TORCH_SPEC:-torch==2.13.0}"
pip_install -e ".[test]"
