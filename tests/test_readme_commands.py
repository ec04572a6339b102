"""The README's first commands are true: the demo runs and prints what it promises; CI runs the test command."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
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


@pytest.mark.slow
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
    # measured 2026-12-02 (deterministic vocabulary, batch-independent heads, the encoder build on a forked RNG,
    # 2 threads): TCL 2.86 -> 2.02 (uniform: ln 16 = 2.77), R@1 5/32; side runs (seeds 0 and 1 at 1 thread, earlier
    # initialisations) gave last-epoch TCL 1.85-2.34 and R@1 3/32-8/32. The TCL bound sits below that spread; the
    # retrieval bounds are set by chance (below), for this seeded run.
    assert chance == 1 / 32
    assert means["tcl"][1] < 2.4, means  # below the uniform value: the two towers agree on held-in pairs
    # A random ranking puts each report's volume first with probability 1/32: the number of hits of the 32 reports
    # is Binomial(32, 1/32), and P(>= 4) = 0.017 (P(>= 2), the old bound, is 0.26). The demo is seeded (seed 0)
    # and gave 5 of 32 (README, "Demo numbers").
    assert round(r1 * 32) >= 4, (r1, chance)
    for name in ("model.pt", "image_encoder.pt", "checkpoint_last.pt"):
        assert os.path.isfile(tmp_path / "models" / name)
    assert os.path.isfile(tmp_path / "runs" / "loss_curves.png")
    _zero_shot_runs_and_retrieval_beats_chance(str(tmp_path))


def _zero_shot_runs_and_retrieval_beats_chance(run_dir: str) -> None:
    """The zero-shot and retrieval overlays on the demo's checkpoint (the commands of bundles/t3d_bimcv_cls/docs)."""
    python = os.path.join(REPO_ROOT, ".venv", "bin", "python")
    for overlay in ("evaluate_zero_shot.json", "evaluate_retrieval.json"):
        configs = f"['configs/train.json','configs/cpu_toy.json','configs/{overlay}']"
        result = subprocess.run(
            [python, "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", run_dir],
            cwd=os.path.join(REPO_ROOT, "bundles", "t3d_pretrain"), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    with open(os.path.join(run_dir, "runs", "zero_shot_metrics.json"), encoding="utf-8") as f:
        zero_shot = json.load(f)["macro"]
    with open(os.path.join(run_dir, "runs", "retrieval_metrics.json"), encoding="utf-8") as f:
        retrieval = json.load(f)
    print(
        f"zero-shot macro AUROC {zero_shot['auroc']:.3f} (CI {zero_shot['auroc_ci']}, chance 0.5); "
        f"report->volume R@5 {retrieval['report_to_volume_R5']:.3f} (chance {retrieval['chance_R5']:.3f})"
    )
    # measured 2026-12-02: R@5 0.656 (chance 5/32); 0.56-0.59 in side runs. Zero-shot macro AUROC was 0.526
    # (CI 0.443-0.610) and 0.498-0.634 across seeds and initialisations, most CIs reaching 0.5: the demo does not
    # learn zero-shot reliably (README, "Demo numbers"), so only that the overlay runs and reports is asserted.
    assert (
        zero_shot["classes_scored"] > 0 and zero_shot["auroc_ci"][0] <= zero_shot["auroc"] <= zero_shot["auroc_ci"][1]
    )
    # chance R@5 is 5/32: hits of the 32 reports are Binomial(32, 5/32), P(>= 11) = 0.007; measured 21 of 32
    assert retrieval["chance_R5"] == 5 / 32 and round(retrieval["report_to_volume_R5"] * 32) >= 11, retrieval
