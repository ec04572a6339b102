"""Stop training at the first non-finite loss, before the optimizer step and before any checkpoint is written."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys

from custom.engines.finite_loss import batch_sources, check_finite_loss

__all__ = ["StopOnNonFiniteLoss"]


class StopOnNonFiniteLoss:
    """Handler for MONAI's ``SupervisedTrainer``: checks ``output["loss"]`` at ``LOSS_COMPLETED``, which MONAI fires
    after the loss and before ``backward``, so the weights are never updated with a NaN gradient.

    Unlike ignite's ``TerminateOnNan`` it raises: the run exits non-zero and no ``CheckpointSaver`` writes a "best"
    or final model from poisoned weights (keep ``save_final`` off, as the bundles do)."""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        loss = engine.state.output[CommonKeys.LOSS]
        if not torch.isfinite(loss.detach()).all():
            check_finite_loss(loss, engine.state.iteration, batch_sources(engine.state.batch))
