"""``benchmarks/gpu_check.sh --dry``: the GPU check's whole plumbing on the CPU, so it is ready when a GPU is lent."""

from __future__ import annotations

import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # the whole GPU check's plumbing at CPU size: minutes on 2 cores (timeout 900 s)
def test_gpu_check_dry_run_prints_its_table():
    done = subprocess.run(
        ["bash", os.path.join(REPO, "benchmarks", "gpu_check.sh"), "--dry"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| check (CPU (--dry")
    rows = {line.split(" | ")[0][2:]: line for line in table[1:]}
    assert {"pre-training, bf16", "pre-training, fp32", "DDP smoke, 1 process, gloo"} <= set(rows)
    assert "steps/s" in rows["pre-training, fp32"] and "TFLOP/step" in rows["pre-training, fp32"]
    assert (
        "| passed |" in rows["DDP smoke, 1 process, gloo"]
        and "checkpoint written: True" in rows["DDP smoke, 1 process, gloo"]
    )
    assert any(name.startswith("BTCV inference 40x40x30") for name in rows)
