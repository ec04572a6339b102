"""A training bundle killed with SIGKILL mid-epoch resumes from its last iteration checkpoint when run again.

The run is the bundle's CPU toy under ``python -m monai.bundle run`` with ``checkpoint_every_iterations`` 3; it is
killed as soon as a checkpoint from inside an epoch is on disk. The rerun (same command) must resume from exactly
that iteration, lose at most 3 steps, finish the remaining iterations once each, and keep the best-model
bookkeeping (``model.pt`` is the best-on-validation model of the whole run).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import BUNDLES

from custom.weights.checkpoint import safe_load

pytestmark = pytest.mark.slow

EVERY = 3  # checkpoint_every_iterations of the killed run
ITERATION_LOG = re.compile(r"Epoch: (\d+)/\d+, Iter: (\d+)/(\d+) --")


def _command(bundle: str, root: str, max_epochs: int) -> list[str]:
    configs = "['configs/train.json','configs/cpu_toy.json']"
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        configs,
        "--bundle_root",
        root,
        "--max_epochs",
        str(max_epochs),
        "--val_interval",
        "1",
        "--checkpoint_every_iterations",
        str(EVERY),
    ]


def _logged_iterations(log: str) -> list[int]:
    """Global iteration numbers of the trainer's per-iteration log lines."""
    return [(int(e) - 1) * int(n) + int(i) for e, i, n in ITERATION_LOG.findall(log)]


@pytest.mark.parametrize("bundle", ["t3d_btcv_seg", "t3d_bimcv_cls"])
def test_sigkill_mid_epoch_resumes_from_the_last_iteration_checkpoint(bundle, tmp_path):
    root, max_epochs = str(tmp_path), 3
    checkpoint = tmp_path / "models" / "checkpoint_last.pt"
    cwd = os.path.join(BUNDLES, bundle)
    log_path = tmp_path / "first_run.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen(_command(bundle, root, max_epochs), cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        saved = None
        deadline = time.monotonic() + 600
        while first.poll() is None and time.monotonic() < deadline:
            if checkpoint.is_file():
                state = safe_load(str(checkpoint))  # atomic writes: a complete file or the previous one
                if _inside_a_later_epoch(log_path, state["iteration"]):
                    saved = state
                    first.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.05)
        first.wait()
    assert saved is not None, log_path.read_text()[-3000:]
    assert first.returncode == -signal.SIGKILL
    first_log = log_path.read_text()
    killed_after = max(_logged_iterations(first_log))
    on_disk = safe_load(str(checkpoint))  # the process may have saved once more before the signal landed
    resumed_at = on_disk["iteration"]
    assert killed_after - resumed_at < EVERY + 1  # at most `EVERY` finished steps are lost (one may have been running)

    second = subprocess.run(_command(bundle, root, max_epochs), cwd=cwd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    epoch_length = int(ITERATION_LOG.search(log).group(3))
    assert f"at epoch {resumed_at // epoch_length}, iteration {resumed_at}" in log
    total = max_epochs * epoch_length
    assert _logged_iterations(log) == list(range(resumed_at + 1, total + 1))  # each remaining step once
    final = safe_load(str(checkpoint))
    assert (final["epoch"], final["iteration"]) == (max_epochs, total)
    validation = final["validation"]
    assert validation["best_metric_epoch"] >= 1 and os.path.isfile(tmp_path / "models" / "model.pt")
    assert validation["best_model_saver"]["_saved"][0][0] == pytest.approx(validation["best_metric"])
    print(
        f"\n[{bundle}] SIGKILL after iteration {killed_after} (epoch length {epoch_length}); resumed from iteration "
        f"{resumed_at}, ran {resumed_at + 1}..{total}; best validation metric {validation['best_metric']:.3f} "
        f"at epoch {validation['best_metric_epoch']}"
    )


def _inside_a_later_epoch(log_path, iteration: int) -> bool:
    """A save inside an epoch after the first (so one validation is behind it): not at an epoch end."""
    match = ITERATION_LOG.search(log_path.read_text())
    if match is None:
        return False
    epoch_length = int(match.group(3))
    return iteration > epoch_length and iteration % epoch_length != 0
