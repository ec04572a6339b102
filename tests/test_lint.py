"""The code passes the project's ruff configuration (``[tool.ruff]`` in pyproject.toml): lint and format.

Run here so that the README's test command, and with it CI, checks what a reviewer would; ``ruff`` is pinned in the
``test`` extra because its formatter's output changes between releases. To fix: ``ruff format . && ruff check --fix .``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff() -> str:
    found = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    assert found, "ruff is not installed: pip install -e '.[test]' (the test extra pins it)"
    return found


@pytest.mark.parametrize("command", [["check", "--output-format", "concise", "."], ["format", "--check", "."]])
def test_ruff(command):
    done = subprocess.run([_ruff(), *command], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"ruff {' '.join(command)}:\n{done.stdout}{done.stderr}"
