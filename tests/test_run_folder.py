"""One run per folder, and only its own checkpoints (issue #31): a lock file with the holder's pid and host, stale
locks taken over; resuming checks the checkpoint's fingerprint (network, optimizer, datalist, step settings) and
refuses a finished run, each in one line naming the file; ``resume="force"`` overrides. The AMP grad-scaler state is
saved and resumed (issue #30)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from ignite.engine import Engine, Events

from custom.handlers.checkpointing import LAST_CHECKPOINT, LOCK_FILE, ResumableCheckpoint, RunFolderError
from custom.weights.checkpoint import CheckpointLoadError, safe_load


def _engine(folder, datalist, resume=True, width=2, seen=None):
    torch.manual_seed(0)
    network = torch.nn.Linear(width, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)

    def step(engine, batch):
        if seen is not None:
            seen.append(engine.state.iteration)
        optimizer.zero_grad()
        network(batch[:, :width]).sum().backward()
        optimizer.step()

    engine = Engine(step)
    handler = ResumableCheckpoint(
        str(folder), network, optimizer, export_t3d_weights=False, resume=resume, run_inputs={"datalist": datalist}
    )
    handler.attach(engine)
    return engine, handler


def _datalist(tmp_path, name="datalist.json", rows=4) -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"training": [{"image": f"img{i}.nii.gz"} for i in range(rows)]}))
    return str(path)


DATA = [torch.ones(1, 4)] * 3


def test_the_lock_is_taken_released_and_refused_to_a_live_holder(tmp_path):
    datalist = _datalist(tmp_path)
    engine, _ = _engine(tmp_path, datalist)
    engine.run(DATA, max_epochs=1)
    assert not os.path.exists(tmp_path / LOCK_FILE)  # released at the end
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname(), "started": "2026-12-07T10:00:00"}
        (tmp_path / LOCK_FILE).write_text(json.dumps(lock))
        engine, _ = _engine(tmp_path, datalist)
        with pytest.raises(RunFolderError) as caught:
            engine.run(DATA, max_epochs=2)
        assert str(caught.value) == (
            f"{tmp_path / LOCK_FILE}: expected no other run in {tmp_path}, found one running (pid {holder.pid} on "
            f"{socket.gethostname()}, since 2026-12-07T10:00:00); wait for it, use another bundle_root, or delete "
            "the lock file if that run is gone"
        )
        assert json.loads((tmp_path / LOCK_FILE).read_text()) == lock  # the holder's lock is untouched
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: a stale lock, taken over
    seen: list = []
    engine, _ = _engine(tmp_path, datalist, seen=seen)
    engine.run(DATA, max_epochs=2)
    assert seen == [4, 5, 6] and not os.path.exists(tmp_path / LOCK_FILE)
    # another host's lock cannot be checked from here: refused
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "other-node", "started": "x"}))
    engine, _ = _engine(tmp_path, datalist)
    with pytest.raises(RunFolderError, match="found one running \\(pid 1 on other-node"):
        engine.run(DATA, max_epochs=3)


def test_resuming_with_another_datalist_or_network_is_refused_unless_forced(tmp_path):
    engine, _ = _engine(tmp_path, _datalist(tmp_path))
    engine.run(DATA, max_epochs=1)
    other = _datalist(tmp_path, "other.json", rows=5)
    engine, _ = _engine(tmp_path, other)
    with pytest.raises(RunFolderError) as caught:
        engine.run(DATA, max_epochs=2)
    assert str(caught.value) == (
        f"{tmp_path / LAST_CHECKPOINT}: expected a checkpoint of this run to resume, found one whose datalist "
        "differs from this run's; --resume force resumes anyway, --resume False trains afresh (replacing its "
        "checkpoints)"
    )
    engine, _ = _engine(tmp_path, other, width=3)
    with pytest.raises(RunFolderError, match="found one whose datalist, network differ from this run's"):
        engine.run(DATA, max_epochs=2)
    seen: list = []
    engine, _ = _engine(tmp_path, other, resume="force", seen=seen)
    engine.run(DATA, max_epochs=2)
    assert seen == [4, 5, 6]  # forced: resumed at epoch 2


def test_a_finished_run_is_not_resumed_to_zero_steps(tmp_path):
    datalist = _datalist(tmp_path)
    engine, _ = _engine(tmp_path, datalist)
    engine.run(DATA, max_epochs=2)
    engine, _ = _engine(tmp_path, datalist)
    with pytest.raises(RunFolderError) as caught:
        engine.run(DATA, max_epochs=2)
    assert str(caught.value).startswith(
        f"{tmp_path / LAST_CHECKPOINT}: expected an unfinished run to resume, found one saved at epoch 2 (iteration "
        "6), at or past this run's max_epochs 2: resuming would train 0 steps"
    )
    seen: list = []
    engine, _ = _engine(tmp_path, datalist, seen=seen)
    engine.run(DATA, max_epochs=3)  # more epochs: a genuine continuation
    assert seen == [7, 8, 9]
    seen.clear()
    engine, _ = _engine(tmp_path, datalist, resume=False, seen=seen)
    engine.run(DATA, max_epochs=1)  # --resume False: afresh
    assert seen == [1, 2, 3] and safe_load(str(tmp_path / LAST_CHECKPOINT))["iteration"] == 3


def test_another_networks_checkpoint_names_the_file(tmp_path):
    torch.save({"network": torch.nn.Linear(7, 7).state_dict(), "optimizer": {}, "epoch": 1, "iteration": 1},
               tmp_path / LAST_CHECKPOINT)  # fmt: skip
    engine, _ = _engine(tmp_path, _datalist(tmp_path))
    with pytest.raises(CheckpointLoadError) as caught:
        engine.run(DATA, max_epochs=2)
    message = str(caught.value)
    assert message.startswith(
        f"{tmp_path / LAST_CHECKPOINT}: expected a readable weights-only checkpoint, found a state that does not "
        "fit the configured network (RuntimeError: Error(s) in loading state_dict for Linear:"
    )
    assert "\n" not in message


def test_a_bad_resume_value_is_one_line():
    with pytest.raises(RunFolderError, match="--resume 'maybe': expected True, False or force"):
        ResumableCheckpoint("x", torch.nn.Linear(1, 1), None, resume="maybe")


def _amp_trainer(folder, datalist, amp=True, resume=True):
    """A MONAI ``SupervisedTrainer`` with AMP: its ``run`` creates ``engine.scaler`` before ``STARTED`` (the resume),
    as on CUDA; the CUDA scaler it builds is replaced by a CPU one (this machine has no CUDA) that doubles its scale
    after every step, so the scale records how many scaled steps the run has taken."""
    from monai.engines import SupervisedTrainer

    torch.manual_seed(0)
    network = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[{"image": torch.ones(1, 2), "label": torch.zeros(1, 1)}] * 3,
        network=network,
        optimizer=optimizer,
        loss_function=torch.nn.MSELoss(),
        amp=amp,
    )
    handler = ResumableCheckpoint(
        str(folder), network, optimizer, export_t3d_weights=False, resume=resume, run_inputs={"datalist": datalist}
    )
    handler.attach(trainer)
    return trainer, network


@pytest.fixture
def cpu_grad_scaler(monkeypatch):
    monkeypatch.setattr(torch.cuda.amp, "GradScaler", lambda: torch.amp.GradScaler("cpu", growth_interval=1))


@pytest.mark.filterwarnings("ignore:.*(CUDA|autocast|GradScaler).*")
def test_the_amp_grad_scaler_state_is_saved_and_resumed(tmp_path, cpu_grad_scaler):
    datalist = _datalist(tmp_path)
    straight, straight_net = _amp_trainer(tmp_path / "straight", datalist)
    straight.state.max_epochs = 2
    straight.run()  # 6 steps uninterrupted
    assert straight.scaler.get_scale() == 2.0**16 * 2**6  # each of the 6 steps was scaled and grew the scale

    first, _ = _amp_trainer(tmp_path / "resumed", datalist)
    first.run()  # 3 steps, then "killed"
    resumed, resumed_net = _amp_trainer(tmp_path / "resumed", datalist)
    resumed.state.max_epochs = 2
    resumed.run()
    # without the saved scaler state the resumed run restarts at 2**16 and ends at 2**16 * 2**3
    assert resumed.scaler.state_dict() == straight.scaler.state_dict()
    for a, b in zip(resumed_net.parameters(), straight_net.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.filterwarnings("ignore:.*(CUDA|autocast|GradScaler).*")
def test_resuming_an_amp_run_without_amp_is_refused_unless_forced(tmp_path, cpu_grad_scaler):
    datalist = _datalist(tmp_path)
    trainer, _ = _amp_trainer(tmp_path, datalist)
    trainer.run()
    trainer, _ = _amp_trainer(tmp_path, datalist, amp=False)
    trainer.state.max_epochs = 2
    with pytest.raises(RunFolderError) as caught:
        trainer.run()
    assert str(caught.value).startswith(
        f"{tmp_path / LAST_CHECKPOINT}: expected a checkpoint of this run to resume, found one whose step differs "
        "from this run's; --resume force"
    )
    trainer, _ = _amp_trainer(tmp_path, datalist, amp=False, resume="force")
    trainer.state.max_epochs = 2
    trainer.run()
    assert trainer.state.iteration == 6  # forced: resumed at iteration 3


def _best_model_run(saver, network: torch.nn.Module, score: float) -> None:
    """One evaluator epoch whose key metric is ``score``; the saver writes ``model.pt`` when it is the best."""
    evaluator = Engine(lambda engine, batch: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metric(engine):  # registered before the saver's handler, as MONAI's metric handlers are
        engine.state.metrics = {"val_mean_dice": score}

    saver.attach(evaluator)
    evaluator.run([0], max_epochs=1)


@pytest.mark.parametrize("failing_write", ["half written, then ENOSPC", "ENOSPC before any byte"])
def test_a_full_disk_during_the_best_model_save_keeps_the_earlier_model_pt(tmp_path, monkeypatch, failing_write):
    """Issue #31: the downstream bundles' ``model.pt`` (their best-on-validation model) survives a save that fails
    (a full disk simulated by a failing ``torch.save``), and the failure is one line naming the file. MONAI's own
    ``CheckpointSaver`` deletes the old ``model.pt`` before writing the new one in place: it fails this test."""
    import errno

    from custom.handlers.checkpointing import BestModelSaver
    from custom.runtime.errors import one_line_message
    from custom.weights.checkpoint import CheckpointSaveError

    network = torch.nn.Linear(3, 1)
    saver = BestModelSaver(
        str(tmp_path),
        {"model": network},
        save_key_metric=True,
        key_metric_name="val_mean_dice",
        key_metric_filename="model.pt",
    )
    _best_model_run(saver, network, 0.5)
    model = tmp_path / "model.pt"
    first = {k: v.clone() for k, v in network.state_dict().items()}
    assert torch.equal(torch.load(model, weights_only=True)["weight"], first["weight"])

    real_save = torch.save

    def full_disk(obj, path, *args, **kwargs):
        if failing_write.startswith("half"):
            real_save(obj, path, *args, **kwargs)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    with torch.no_grad():
        network.weight.add_(1.0)
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointSaveError) as caught:
        _best_model_run(saver, network, 0.9)  # better: MONAI would replace model.pt
    monkeypatch.setattr(torch, "save", real_save)
    message = one_line_message(caught.value)
    assert message.startswith(f"{model}: expected to save the checkpoint, found OSError: No space left on device")
    assert "the earlier file is kept" in message and "\n" not in message
    assert torch.equal(torch.load(model, weights_only=True)["weight"], first["weight"])  # the old model, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left behind
