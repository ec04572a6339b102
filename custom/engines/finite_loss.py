"""The finite-loss check every trainer runs before its optimizer step: one line naming the iteration, the value and
the batch's files. The pre-training trainers call it in their step; the downstream bundles' MONAI trainers reach it
through :class:`custom.handlers.finite_loss.StopOnNonFiniteLoss`."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from monai.utils import CommonKeys

from custom.errors import OneLineError

__all__ = ["NonFiniteLossError", "batch_sources", "check_finite_loss"]


class NonFiniteLossError(OneLineError, RuntimeError):
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
