"""Resumable training: save the whole training state atomically at every epoch end (and optionally every N
iterations) and resume from it on start; one run per folder, and only its own checkpoints.

- A lock file ``<save_dir>/.run.lock`` (the holder's pid, host and start time) is taken at start and released at the
  end: a second training into the same folder is refused in one line naming the holder. A lock whose process is gone
  (same host) is stale and taken over; one from another host is refused (its process cannot be checked from here).
- Each checkpoint holds the run's fingerprint: the network's architecture (state-dict keys and shapes), the optimizer
  and its hyper-parameters (the learning rate aside: schedules change it), and a sha1 of each ``run_inputs`` file
  (the datalist), and the trainer's step settings (its class, AMP on or off and its dtype, the gradient clip).
  Resuming from a checkpoint of another network, optimizer, datalist or step is refused in one line, and so is
  resuming a run that already reached this run's ``max_epochs`` (it would "resume" to zero steps and keep the old
  model); ``resume="force"`` (``--resume force``) resumes anyway, ``resume=False`` (``--resume False``) trains afresh.
- Each checkpoint holds the trainer's AMP grad-scaler state (``engine.scaler``, float16 on CUDA) when it has an
  enabled one: a resumed run continues with the loss scale the interrupted run had reached, not a fresh 2**16 that
  would skip steps (overflow) again until it backs off.

The downstream bundles' best-on-validation ``model.pt`` is written by :class:`BestModelSaver`, MONAI's
``CheckpointSaver`` with the same atomic save: the earlier ``model.pt`` stays whole until the new one is complete.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointSaver

from custom.distributed import is_main_process
from custom.errors import OneLineError
from custom.weights.checkpoint import CheckpointLoadError, atomic_save, export_weights, safe_load, unwrap

__all__ = ["BestModelSaver", "ResumableCheckpoint", "RunFolderError", "run_fingerprint"]

LAST_CHECKPOINT = "checkpoint_last.pt"
LOCK_FILE = ".run.lock"
_RESUME_MODES = (True, False, "force")


class RunFolderError(OneLineError, ValueError):
    """A run folder another run holds, or a checkpoint in it that is not this run's to resume; one line."""


def _sha1(value: object) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _step_settings(engine: Engine | None) -> list:
    """The trainer's class and the step settings a config sets on it: AMP (and its dtype), the gradient clip."""
    dtype = getattr(engine, "amp_dtype", None) or (getattr(engine, "amp_kwargs", None) or {}).get("dtype")
    return [
        type(engine).__name__,
        bool(getattr(engine, "amp", False)),
        str(dtype),
        getattr(engine, "gradient_clip", None),
    ]


def run_fingerprint(
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    run_inputs: Mapping[str, str],
    engine: Engine | None = None,
) -> dict:
    """What must match for a checkpoint to be this run's: ``network`` (class, state-dict keys and shapes),
    ``optimizer`` (class and hyper-parameters except the learning rate), ``step`` (the trainer ``engine``'s class,
    AMP and dtype, gradient clip) and one sha1 per ``run_inputs`` file."""
    model = unwrap(network)
    architecture = [type(model).__name__] + [[k, list(v.shape)] for k, v in model.state_dict().items()]
    groups = [
        {k: v for k, v in group.items() if k not in ("params", "lr", "initial_lr")} for group in optimizer.param_groups
    ]
    inputs = {}
    for name, path in sorted(run_inputs.items()):
        digest = hashlib.sha1()
        if path and os.path.isfile(path):
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        inputs[name] = digest.hexdigest()[:16] if path and os.path.isfile(path) else "absent"
    return {
        "network": _sha1(architecture),
        "optimizer": _sha1([type(optimizer).__name__, groups]),
        "step": _sha1(_step_settings(engine)),
        **inputs,
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):  # someone else's process; not a pid at all
        return True
    return True


def _grad_scaler(engine: Engine) -> torch.amp.GradScaler | None:
    """The trainer's AMP grad scaler when it has an enabled one. MONAI's ``Trainer.run`` creates ``engine.scaler``
    before ``STARTED``, so the resume at ``STARTED`` restores into the scaler the steps use; a disabled one (AMP off,
    or a CUDA scaler on a machine without CUDA) has no state."""
    scaler = getattr(engine, "scaler", None)
    return scaler if scaler is not None and scaler.is_enabled() else None


class _AtomicDiskSaver(BaseSaveHandler):
    """Ignite's save handler with :func:`~custom.weights.checkpoint.atomic_save`. Ignite removes the file it replaces
    *before* writing the new one, and MONAI's disk saver writes in place (``atomic=False``): a full disk left no
    ``model.pt`` at all, or half of one. Here a fixed ``filename`` is never removed (the next save replaces it
    whole, by rename) and a failed save is one line naming the file, the earlier file kept."""

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        self.dirname, self.filename = dirname, filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if is_main_process():
            atomic_save(checkpoint, os.path.join(self.dirname, self.filename or filename))

    def remove(self, filename: str) -> None:
        path = os.path.join(self.dirname, filename)
        if self.filename is None and is_main_process() and os.path.exists(path):
            os.remove(path)


class BestModelSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) whose every file is written by :class:`_AtomicDiskSaver`."""

    def __init__(self, save_dir: str, *args, **kwargs) -> None:
        super().__init__(save_dir, *args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:  # MONAI's saver holds the fixed file name (model.pt), if any
                checkpoint.save_handler = _AtomicDiskSaver(save_dir, getattr(checkpoint.save_handler, "filename", None))


class ResumableCheckpoint:
    """Handler: at ``EPOCH_COMPLETED`` (every ``save_every_epochs``), every ``save_every_iterations`` iterations
    (0: off) and at ``COMPLETED`` write ``<save_dir>/checkpoint_last.pt``; at ``STARTED`` load it if it exists and
    ``resume`` is on, so an interrupted run continues from its last save: a kill mid-epoch loses at most
    ``save_every_iterations`` steps (ignite resumes inside the epoch from ``state.iteration``; the data order of that
    epoch is redrawn). Only the main process writes; every process resumes.

    Make it the first handler. Ignite runs the handlers of one event in attachment order: the resume at ``STARTED``
    must come before the other handlers' ``STARTED`` (``TrainingCurves`` trims its history to the resumed iteration),
    while the saves must come after the handlers whose state they hold (the ``LrScheduleHandler`` step and the
    ``ValidationHandler`` run of the same iteration or epoch). So the saves are attached at ``STARTED``, after
    every handler of the config.

    Args:
        export_t3d_weights: also write the pre-training exports (``model.pt``, ``image_encoder.pt``) at every save.
            Downstream bundles leave it off: their ``model.pt`` is ``best_model_saver``'s best-on-validation model.
        evaluator: the validation engine; its best metric and epoch are saved and restored, so the best-model
            bookkeeping survives a resume.
        best_model_saver: the evaluator's key-metric ``CheckpointSaver``; its list of saved scores is restored, so
            after a resume ``model.pt`` is replaced only by a better model, as in an uninterrupted run.
        resume: True (resume a checkpoint of this run), False (train afresh), ``"force"`` (resume whatever is there).
        run_inputs: ``{name: file}`` whose contents are part of the run's fingerprint (the datalist).
    """

    def __init__(
        self,
        save_dir: str,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: object | None = None,
        save_every_epochs: int = 1,
        save_every_iterations: int = 0,
        resume: bool = True,
        export_t3d_weights: bool = True,
        evaluator: Engine | None = None,
        best_model_saver: CheckpointSaver | None = None,
        run_inputs: Mapping[str, str] | None = None,
    ) -> None:
        self.save_dir = save_dir
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.save_every_epochs = save_every_epochs
        self.save_every_iterations = int(save_every_iterations or 0)
        if isinstance(resume, str) and resume.lower() in ("true", "false"):
            resume = resume.lower() == "true"
        if resume not in _RESUME_MODES:
            raise RunFolderError(f"--resume {resume!r}: expected True, False or force")
        self.resume = resume
        self.run_inputs = dict(run_inputs or {})
        self.export_t3d_weights = export_t3d_weights
        self.evaluator = evaluator
        self.best_model_saver = best_model_saver
        self.logger = logging.getLogger(__name__)

    @property
    def path(self) -> str:
        return os.path.join(self.save_dir, LAST_CHECKPOINT)

    @property
    def lock_path(self) -> str:
        return os.path.join(self.save_dir, LOCK_FILE)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.acquire_lock)
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.STARTED, self._attach_saves)

    def acquire_lock(self, engine: Engine | None = None) -> None:
        """Take ``<save_dir>/.run.lock`` (main process only); a live holder is refused in one line naming it, a
        dead one on this host (a killed run) is taken over."""
        if not is_main_process():
            return
        os.makedirs(self.save_dir, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # unreadable or half-written: a killed writer, or one writing now
                    time.sleep(0.2)
                    holder = self._holder() or {"pid": -1, "host": me["host"]}
                same_host = holder.get("host") == me["host"]
                pid = int(holder.get("pid", -1)) if str(holder.get("pid", "")).lstrip("-").isdigit() else -1
                if same_host and (pid == me["pid"] or pid <= 0 or not _pid_alive(pid)):
                    self.logger.warning(f"{self.lock_path}: taking over the stale lock of pid {pid} (no such process)")
                    try:
                        os.remove(self.lock_path)
                    except FileNotFoundError:
                        pass
                    continue
                raise RunFolderError(
                    f"{self.lock_path}: expected no other run in {self.save_dir}, found one running (pid {pid} on "
                    f"{holder.get('host')}, since {holder.get('started', '?')}); wait for it, use another "
                    "bundle_root, or delete the lock file if that run is gone"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._locked = True
            atexit.register(self.release_lock)
            return
        raise RunFolderError(f"{self.lock_path}: expected to take the run lock, found it taken over and over")

    def _holder(self) -> dict | None:
        try:
            with open(self.lock_path, encoding="utf-8") as f:
                holder = json.load(f)
            return holder if isinstance(holder, dict) else None
        except (OSError, ValueError):
            return None

    def release_lock(self, engine: Engine | None = None) -> None:
        if not getattr(self, "_locked", False):
            return
        holder = self._holder()
        if holder is not None and holder.get("pid") == os.getpid():
            try:
                os.remove(self.lock_path)
            except FileNotFoundError:
                pass
        self._locked = False

    def _attach_saves(self, engine: Engine) -> None:
        if engine.has_event_handler(self.save):  # a second run() of the same engine
            return
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_every_epochs), self.save)
        if self.save_every_iterations > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_every_iterations), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)
        engine.add_event_handler(Events.COMPLETED, self.release_lock)  # after the last save; a crash: atexit

    def _validation_state(self) -> dict:
        state = {
            "best_metric": self.evaluator.state.best_metric,
            "best_metric_epoch": self.evaluator.state.best_metric_epoch,
        }
        if self.best_model_saver is not None:
            # MONAI restores the key-metric list with CheckpointSaver.load_state_dict but has no public getter for it
            state["best_model_saver"] = self.best_model_saver._key_metric_checkpoint.state_dict()
        return state

    def save(self, engine: Engine) -> None:
        if not is_main_process():
            return
        state = {
            "network": unwrap(self.network).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "fingerprint": run_fingerprint(self.network, self.optimizer, self.run_inputs, engine),
        }
        scaler = _grad_scaler(engine)
        if scaler is not None:
            state["grad_scaler"] = scaler.state_dict()
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        if self.evaluator is not None:
            state["validation"] = self._validation_state()
        atomic_save(state, self.path)
        if self.export_t3d_weights:
            export_weights(self.network, self.save_dir)

    def load(self, engine: Engine) -> None:
        if not (self.resume and os.path.isfile(self.path)):
            return
        state = safe_load(self.path)
        if self.resume != "force":
            self._check_resumable(engine, state)
        try:
            unwrap(self.network).load_state_dict(state["network"])
        except (RuntimeError, KeyError, TypeError) as err:  # another network's checkpoint: name the file
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            reason = f"{type(err).__name__}: {lines[0] if lines else ''}"
            if len(lines) > 1:
                reason += f" {lines[1][:200]}"
            raise CheckpointLoadError(
                self.path, f"a state that does not fit the configured network ({reason})"
            ) from None
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        scaler = _grad_scaler(engine)
        if scaler is not None and "grad_scaler" in state:
            scaler.load_state_dict(state["grad_scaler"])
        validation = state.get("validation")
        if self.evaluator is not None and validation is not None:
            self.evaluator.state.best_metric = validation["best_metric"]
            self.evaluator.state.best_metric_epoch = validation["best_metric_epoch"]
            if self.best_model_saver is not None and "best_model_saver" in validation:
                self.best_model_saver.load_state_dict(validation["best_model_saver"])
        engine.state.iteration = int(state["iteration"])
        epoch_length = engine.state.epoch_length
        # a mid-epoch save resumes inside its epoch: ignite starts epoch `iteration // epoch_length + 1` at
        # `iteration % epoch_length`
        engine.state.epoch = engine.state.iteration // epoch_length if epoch_length else int(state["epoch"])
        self.logger.info(f"resumed from {self.path} at epoch {engine.state.epoch}, iteration {engine.state.iteration}")

    def _check_resumable(self, engine: Engine, state: dict) -> None:
        """Refuse (one line) a checkpoint of another run (fingerprint) or of a run that is already finished."""
        force = "; --resume force resumes anyway, --resume False trains afresh (replacing its checkpoints)"
        saved = state.get("fingerprint")
        if isinstance(saved, dict):
            now = run_fingerprint(self.network, self.optimizer, self.run_inputs, engine)
            differing = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            if differing:
                raise RunFolderError(
                    f"{self.path}: expected a checkpoint of this run to resume, found one whose "
                    f"{', '.join(differing)} differ{'s' if len(differing) == 1 else ''} from this run's{force}"
                )
        epoch_length = engine.state.epoch_length or 0
        if epoch_length and int(state.get("iteration", 0)) >= int(engine.state.max_epochs) * epoch_length:
            raise RunFolderError(
                f"{self.path}: expected an unfinished run to resume, found one saved at epoch {state.get('epoch')} "
                f"(iteration {state.get('iteration')}), at or past this run's max_epochs {engine.state.max_epochs}: "
                f"resuming would train 0 steps; use another bundle_root, or raise max_epochs{force}"
            )
