"""Stop training at the first non-finite loss, before the optimizer step and before any checkpoint is written."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys

__all__ = ["NonFiniteLossError", "StopOnNonFiniteLoss", "batch_sources", "check_finite_loss"]


class NonFiniteLossError(RuntimeError):
    """One line: the iteration, the loss value and the files of the batch that produced it."""


def batch_sources(batch: object, dataset: object = None, limit: int = 4) -> str:
    """The files a batch was loaded from: the image MetaTensor's ``filename_or_obj`` (MONAI loaders), or the
    ``image`` of ``dataset.rows[i]`` for the batch's ``index`` entries (the pre-training datasets)."""
    names: list[str] = []
    if isinstance(batch, Mapping):
        meta = getattr(batch.get(CommonKeys.IMAGE), "meta", None)
        found = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
        if found is not None:
            names = [str(n) for n in (found if isinstance(found, (list, tuple)) else [found])]
        elif "index" in batch and hasattr(dataset, "rows"):
            names = [str(dataset.rows[int(i)]["image"]) for i in torch.as_tensor(batch["index"]).flatten()]
    if not names:
        return "unknown files"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_finite_loss(loss: torch.Tensor | float, iteration: int, sources: str) -> None:
    """Raise :class:`NonFiniteLossError` when ``loss`` is NaN or infinite; ``sources`` names the batch's files."""
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"iteration {iteration}: expected a finite training loss, found {value} from {sources}; "
            "training stopped before the optimizer step, no checkpoint or model was written "
            "(check those volumes for NaN/inf intensities, or lower the learning rate)"
        )


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
