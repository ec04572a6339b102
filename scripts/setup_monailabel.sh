#!/usr/bin/env bash
# MONAI Label's own venv (it cannot share .venv: monailabel 0.8.5 needs numpy<2, jsonschema<4 and torchvision, and
# torchvision beside the main venv's torch 2.13.0 CPU wheel fails to import). About 8 GB and 7 min with a warm pip
# cache; torch 2.14.1 + torchvision 0.29.1 are the pair that imported and served a bundle offline on this machine kind.
# monai is pinned to 1.5.2: monai 1.6's Spacingd updates every `image_*` entry of the data dict as a meta dict, and
# MONAI Label puts the string `image_path` there (AttributeError: 'str' object has no attribute 'update').
# Usage: bash scripts/setup_monailabel.sh [VENV_DIR]
#   (default: $T3D_MONAILABEL_VENV, else ~/.cache/t3d_bundles/monailabel-venv: outside the work tree, reused by reruns)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-${T3D_MONAILABEL_VENV:-$HOME/.cache/t3d_bundles/monailabel-venv}}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "monailabel==0.8.5" "pydicom>=2.4.4,<3" "dicomweb-client[gcp]>=0.59.1,<0.60" "pynetdicom>=2.0.2,<3" \
    "torch==2.14.1" "torchvision==0.29.1" "monai==1.5.2" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# its `monailabel` launcher runs the `python` found on PATH, so the venv must come first
PATH="$VENV/bin:$PATH" "$VENV/bin/monailabel" --help >/dev/null
echo "MONAI Label venv ready: $VENV"
