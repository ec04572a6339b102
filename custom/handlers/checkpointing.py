"""Resumable training: save the whole training state atomically at every epoch end (and optionally every N
iterations) and resume from it on start."""

from __future__ import annotations

import logging
import os

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from custom.engines.distributed import is_main_process
from custom.weights.checkpoint import atomic_save, export_weights, safe_load, unwrap

__all__ = ["ResumableCheckpoint"]

LAST_CHECKPOINT = "checkpoint_last.pt"


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
    ) -> None:
        self.save_dir = save_dir
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.save_every_epochs = save_every_epochs
        self.save_every_iterations = int(save_every_iterations or 0)
        self.resume = resume
        self.export_t3d_weights = export_t3d_weights
        self.evaluator = evaluator
        self.best_model_saver = best_model_saver
        self.logger = logging.getLogger(__name__)

    @property
    def path(self) -> str:
        return os.path.join(self.save_dir, LAST_CHECKPOINT)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.STARTED, self._attach_saves)

    def _attach_saves(self, engine: Engine) -> None:
        if engine.has_event_handler(self.save):  # a second run() of the same engine
            return
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_every_epochs), self.save)
        if self.save_every_iterations > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_every_iterations), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

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
        }
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
        unwrap(self.network).load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
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
