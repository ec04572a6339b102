"""Checkpoint I/O (``custom.weights.checkpoint``): one-line load errors that name the file and torch's real reason (and
never torch's advice to retry with ``weights_only=False``), and the temporary files of ``atomic_save``: a save killed
half-way leaves ``<path>.tmp<PID>``, which the next save of that checkpoint deletes once that PID is gone."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from monai.networks.nets import BasicUNet

from custom.errors import WeightTransferError
from custom.weights.checkpoint import CheckpointLoadError, atomic_save, remove_orphan_temp_files, safe_load
from custom.weights.transfer import transfer_weights
from t3d_tools.packaging.pack import PackError, check_weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _RunsACommand:
    """Pickles as ``os.system(command)``: what a malicious checkpoint does. ``weights_only=True`` refuses it unrun."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _bad_checkpoints(folder) -> dict[str, tuple[str, str]]:
    """name -> (path, regex the reason must match)."""
    marker = folder / "command_ran"
    malicious = str(folder / "malicious.pt")
    torch.save({"weight": torch.zeros(2), "payload": _RunsACommand(f"touch {shlex.quote(str(marker))}")}, malicious)
    random_bytes = folder / "random.pt"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    empty = folder / "empty.pt"
    empty.write_bytes(b"")
    real = folder / "real.pt"
    torch.save({"weight": torch.arange(1000.0)}, real)
    truncated = folder / "truncated.pt"
    data = real.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return {
        "malicious": (malicious, r"UnpicklingError: .*GLOBAL (posix|os|nt)\.system\b.*"),
        "random": (str(random_bytes), r"\w+: .+ \(4096 bytes, not the zip format torch\.save writes\)"),
        "empty": (str(empty), r"an empty file \(0 bytes\)"),
        "truncated": (
            str(truncated),
            r"RuntimeError: PytorchStreamReader failed reading zip archive: .+ "
            rf"\({len(data) // 2} bytes, a zip that is damaged or cut short\)",
        ),
    }


def _one_line_without_the_unsafe_advice(message: str) -> None:
    assert "\n" not in message
    assert "weights_only" not in message and "False" not in message  # never "re-run with weights_only=False"


@pytest.mark.parametrize("case", ["malicious", "random", "empty", "truncated"])
def test_load_errors_name_the_file_and_torchs_real_reason(tmp_path, case):
    path, reason = _bad_checkpoints(tmp_path)[case]
    with pytest.raises(CheckpointLoadError) as caught:
        safe_load(path)
    message = str(caught.value)
    print(f"\n{case}: {message}")
    assert re.fullmatch(rf"{re.escape(path)}: expected a readable weights-only checkpoint, found {reason}", message)
    assert isinstance(caught.value, ValueError) and re.fullmatch(reason, caught.value.reason)
    _one_line_without_the_unsafe_advice(message)

    # the downstream weight transfer and the pack give the same reason in their own one-line errors
    network = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    with pytest.raises(WeightTransferError) as caught:
        transfer_weights(network, path)
    assert str(caught.value) == (
        f"{path}: expected a weights-only torch checkpoint, could not load it ({caught.value.__context__.reason})"
    )
    assert re.fullmatch(reason, caught.value.__context__.reason)
    _one_line_without_the_unsafe_advice(str(caught.value))
    with pytest.raises(PackError) as caught:
        check_weights("toy_bundle", path)
    assert re.fullmatch(
        rf"toy_bundle: {re.escape(path)} does not load as a weights-only checkpoint \({reason}\)", str(caught.value)
    )
    _one_line_without_the_unsafe_advice(str(caught.value))
    assert not (tmp_path / "command_ran").exists()  # the malicious payload was never run


def test_pack_command_line_prints_the_refused_global_as_its_last_line(tmp_path):
    from test_pack import _fake_bundle

    bundle = _fake_bundle(tmp_path)
    path, reason = _bad_checkpoints(tmp_path)["malicious"]
    result = subprocess.run(
        [sys.executable, "-m", "t3d_tools.packaging", str(bundle), "--weights", path, "--dist", str(tmp_path / "dist")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    print(f"\n{last}")
    assert re.fullmatch(
        rf"error: toy_bundle: {re.escape(path)} does not load as a weights-only checkpoint \({reason}\)", last
    )
    assert result.stderr.strip().splitlines() == [last]  # the only thing printed
    _one_line_without_the_unsafe_advice(result.stderr.strip())
    assert not (tmp_path / "command_ran").exists()


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_atomic_save_deletes_only_orphans_of_its_own_target(tmp_path):
    dead = _dead_pid()
    sleeper = subprocess.Popen(["sleep", "60"])  # a live process: its temporary file may still be being written
    try:
        target = tmp_path / "checkpoint_last.pt"
        files = {
            f"checkpoint_last.pt.tmp{dead}": True,  # orphan of this target: deleted
            f"checkpoint_last.pt.tmp{sleeper.pid}": False,  # its writer is alive
            f"model.pt.tmp{dead}": False,  # another checkpoint's
            f"checkpoint_last.pt.tmp{dead}.npy": False,  # not the exact pattern
            "checkpoint_last.pt.tmpx1": False,
            f"checkpoint_last.pt.tmp0{dead}": False,
            f"other/checkpoint_last.pt.tmp{dead}": False,  # another folder
            "checkpoint_last.pt.tmp99999999999999999999": False,  # no PID can be that: not ours to judge
        }
        os.makedirs(tmp_path / "other")
        for name in files:
            (tmp_path / name).write_bytes(name.encode())
        atomic_save({"weight": torch.ones(3)}, str(target))
        for name, deleted in files.items():
            assert (tmp_path / name).exists() != deleted, name
            if not deleted:
                assert (tmp_path / name).read_bytes() == name.encode()
        assert torch.equal(safe_load(str(target))["weight"], torch.ones(3))
        assert remove_orphan_temp_files(str(target)) == []  # nothing left to clean
    finally:
        sleeper.kill()
        sleeper.wait()
    # once the writer is gone its file is an orphan too
    assert remove_orphan_temp_files(str(target)) == [str(tmp_path / f"checkpoint_last.pt.tmp{sleeper.pid}")]


_KILLED_MID_SAVE = """
import os, sys, time
import torch
from custom.weights import checkpoint

def stuck_replace(src, dst):  # the temporary file is written; the process dies before the rename
    print("written", flush=True)
    time.sleep(120)

checkpoint.os.replace = stuck_replace
checkpoint.atomic_save({"weight": torch.zeros(1000)}, sys.argv[1])
"""


def test_a_save_killed_by_sigkill_leaves_an_orphan_that_the_next_save_deletes(tmp_path):
    target = tmp_path / "models" / "checkpoint_last.pt"
    atomic_save({"weight": torch.ones(2)}, str(target))
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_MID_SAVE, str(target)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "written"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
    orphan = tmp_path / "models" / f"checkpoint_last.pt.tmp{child.pid}"
    assert orphan.is_file() and orphan.stat().st_size > 0  # what SIGKILL leaves
    assert torch.equal(safe_load(str(target))["weight"], torch.ones(2))  # the checkpoint itself is intact
    deadline = time.time() + 10
    while time.time() < deadline:  # the kernel may take a moment to reap the PID
        try:
            os.kill(child.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    atomic_save({"weight": torch.full((2,), 3.0)}, str(target))
    assert sorted(os.listdir(tmp_path / "models")) == ["checkpoint_last.pt"]
    assert torch.equal(safe_load(str(target))["weight"], torch.full((2,), 3.0))


def test_a_crash_mid_epoch_resumes_from_the_last_iteration_checkpoint(tmp_path):
    from ignite.engine import Engine, Events

    from custom.handlers.checkpointing import ResumableCheckpoint

    torch.manual_seed(0)

    from custom.networks.unet_backbone import BasicUNetBackbone

    def make(crash_at: int | None, seen: list):
        torch.manual_seed(0)
        network = torch.nn.Module()  # what export_weights needs: an image backbone (untouched here) and a trained part
        network.image_backbone = BasicUNetBackbone(features=(2, 2, 2, 2, 2, 2))
        network.head = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(network.parameters(), lr=0.1)

        def step(engine, batch):
            if engine.state.iteration == crash_at:
                raise KeyboardInterrupt("killed")  # what a SIGKILL leaves: nothing after the last save
            seen.append(engine.state.iteration)
            optimizer.zero_grad()
            network.head(batch).sum().backward()
            optimizer.step()

        engine = Engine(step)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        ResumableCheckpoint(str(tmp_path), network, optimizer, scheduler, save_every_iterations=2).attach(engine)
        # attached after the checkpoint, as in the bundles: a save must still hold this iteration's step
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: scheduler.step())
        return engine, network

    first_seen: list = []
    engine, _ = make(crash_at=8, seen=first_seen)
    with pytest.raises(KeyboardInterrupt):
        engine.run([torch.ones(1, 2)] * 5, max_epochs=2)  # epoch_length 5: the crash is in epoch 2
    assert first_seen == [1, 2, 3, 4, 5, 6, 7]
    saved = safe_load(str(tmp_path / "checkpoint_last.pt"))
    assert saved["iteration"] == 6  # saved every 2 iterations
    assert saved["lr_scheduler"]["last_epoch"] == 6  # the scheduler step of iteration 6 is in it

    second_seen: list = []
    engine, network = make(crash_at=None, seen=second_seen)
    engine.run([torch.ones(1, 2)] * 5, max_epochs=2)
    assert second_seen == [7, 8, 9, 10]  # at most 2 steps lost, the epoch finishes, nothing repeated twice
    assert (engine.state.epoch, engine.state.iteration) == (2, 10)
    final = safe_load(str(tmp_path / "checkpoint_last.pt"))
    assert (final["epoch"], final["iteration"]) == (2, 10)
    assert torch.equal(final["network"]["head.weight"], network.head.weight)
