"""The README's first commands are true: the demo runs and prints what it promises; CI runs the test command."""

from __future__ import annotations

import os
import re
import subprocess

from conftest import REPO_ROOT


def _first_commands() -> list[str]:
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        block = re.search(r"```bash\n(.*?)```", f.read(), re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_exactly_the_readme_test_command():
    demo, tests = _first_commands()
    with open(os.path.join(REPO_ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci_lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert tests in ci_lines
    assert "bash scripts/setup.sh" in ci_lines  # the same setup the demo starts with
    with open(os.path.join(REPO_ROOT, "scripts", "demo.sh"), encoding="utf-8") as f:
        assert "bash scripts/setup.sh" in f.read()


def test_readme_demo_runs_and_shows_learning(tmp_path):
    demo, _ = _first_commands()
    env = {**os.environ, "T3D_RUN_DIR": str(tmp_path)}
    result = subprocess.run(demo, shell=True, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    means = {
        key: (float(first), float(last))
        for key, first, last in re.findall(r"(\w+): first-epoch mean ([\d.]+) -> last-epoch mean ([\d.]+)", output)
    }
    assert means["tcl"][1] < means["tcl"][0] and means["tir"][1] < means["tir"][0], means
    final = re.findall(r"report_to_volume_R1': ([\d.]+).*'chance_R1': ([\d.]+)", output)[-1]
    r1, chance = float(final[0]), float(final[1])
    print(f"\nREADME demo: TCL {means['tcl']}, TIR {means['tir']}, report->volume R@1 {r1:.3f} (chance {chance:.3f})")
    # the demo must report retrieval against its chance level; that R@1 beats chance on this toy is NOT yet true
    # (see the README's "Demo numbers"), so it is printed, not asserted
    assert 0.0 <= r1 <= 1.0 and chance == 1 / 16
    for name in ("model.pt", "image_encoder.pt", "checkpoint_last.pt"):
        assert os.path.isfile(tmp_path / "models" / name)
    assert os.path.isfile(tmp_path / "runs" / "loss_curves.png")
