"""Resumable training: save the whole training state atomically at every epoch end (and optionally every N
iterations) and resume from it on start."""

from __future__ import annotations

import logging
import os

import torch
from ignite.engine import Engine, Events

from custom.engines.distributed import is_main_process
from custom.weights.checkpoint import atomic_save, export_weights, safe_load, unwrap

__all__ = ["ResumableCheckpoint"]

LAST_CHECKPOINT = "checkpoint_last.pt"


class ResumableCheckpoint:
    """Handler: at ``EPOCH_COMPLETED`` (every ``save_every_epochs``), every ``save_every_iterations`` iterations
    (0: off) and at ``COMPLETED`` write ``<save_dir>/checkpoint_last.pt`` and the exports (``model.pt``,
    ``image_encoder.pt``); at ``STARTED`` load ``checkpoint_last.pt`` if it exists and ``resume`` is on, so an
    interrupted run continues from its last save: a kill mid-epoch loses at most ``save_every_iterations`` steps (ignite
    resumes inside the epoch from ``state.iteration``; the data order of that epoch is redrawn). Only the main process
    writes; every process resumes.
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
    ) -> None:
        self.save_dir = save_dir
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.save_every_epochs = save_every_epochs
        self.save_every_iterations = int(save_every_iterations or 0)
        self.resume = resume
        self.logger = logging.getLogger(__name__)

    @property
    def path(self) -> str:
        return os.path.join(self.save_dir, LAST_CHECKPOINT)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_every_epochs), self.save)
        if self.save_every_iterations > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_every_iterations), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

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
        atomic_save(state, self.path)
        export_weights(self.network, self.save_dir)

    def load(self, engine: Engine) -> None:
        if not (self.resume and os.path.isfile(self.path)):
            return
        state = safe_load(self.path)
        unwrap(self.network).load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        engine.state.iteration = int(state["iteration"])
        epoch_length = engine.state.epoch_length
        # a mid-epoch save resumes inside its epoch: ignite starts epoch `iteration // epoch_length + 1` at
        # `iteration % epoch_length`
        engine.state.epoch = engine.state.iteration // epoch_length if epoch_length else int(state["epoch"])
        self.logger.info(f"resumed from {self.path} at epoch {engine.state.epoch}, iteration {engine.state.iteration}")
