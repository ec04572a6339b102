"""The model zoo's own verifier, ``ci/verify_bundle.py`` in min and full modes, on every bundle as it ships: a toy
build and a release build of each (``scripts/verify_model_zoo.py``, which packs, unzips and runs the verifier).

Marked ``model_zoo``: it runs when ``T3D_MODEL_ZOO`` names a checkout of Project-MONAI/model-zoo (the zoo's CI code
is not this project's, so it is never committed here; CI machines reach only the package registries), otherwise it
is skipped. About 8 min on 2 cores (2026-12-03).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.model_zoo
ZOO = os.environ.get("T3D_MODEL_ZOO", "")
VERIFY_MODEL_ZOO = os.path.join(REPO_ROOT, "scripts", "verify_model_zoo.py")
if not os.path.isfile(os.path.join(ZOO, "ci", "verify_bundle.py")):
    pytest.skip("model-zoo checkout not given: T3D_MODEL_ZOO=<Project-MONAI/model-zoo>", allow_module_level=True)


def test_every_bundle_passes_the_model_zoo_verifier_in_min_and_full_modes(tmp_path):
    result = subprocess.run(
        [sys.executable, VERIFY_MODEL_ZOO, "--zoo", ZOO, "--work", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "10 of 10 builds pass min and full" in result.stdout
