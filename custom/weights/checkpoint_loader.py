"""MONAI's ``CheckpointLoader`` handler with one-line failures naming the checkpoint file.

MONAI's handler calls ``torch.load(load_path, weights_only=True)`` and ``load_state_dict(strict=True)`` at
``Events.STARTED``: an absent, empty, damaged or refused file (a pickle naming ``posix.system``) and weights of another
network then end an inference or evaluation run in a long traceback whose last line is torch's advice or the start of
a multi-line key list. :class:`CheckpointLoader` loads the file with :func:`custom.weights.checkpoint.load_weights_only`
(torch's real reason, never its advice to retry with ``weights_only=False``) and raises
:class:`~custom.weights.checkpoint.CheckpointLoadError` (one of the bundles' one-line errors) naming the file; loading
itself is MONAI's. The class keeps MONAI's name so a config only changes its ``_target_`` module.
"""

from __future__ import annotations

import os

import torch
from monai.handlers import CheckpointLoader as MonaiCheckpointLoader

from custom.weights.checkpoint import CheckpointLoadError, load_weights_only

__all__ = ["CheckpointLoader", "CheckpointMismatchError"]


class CheckpointMismatchError(CheckpointLoadError):
    """The checkpoint loads but does not fit the network (missing / unexpected keys, other shapes)."""

    def __init__(self, path: str, network: str, reason: str) -> None:
        ValueError.__init__(self, f"{path}: expected the weights of the configured {network}, found {reason}")
        self.path, self.reason = path, reason


def _mismatch(network: torch.nn.Module, state: object) -> str | None:
    """Why ``state`` does not load strictly into ``network`` (one line), or None when it fits."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return f"a {type(state).__name__} instead of a state dict of tensors"
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = [
        f"{len(missing)} missing key(s), e.g. {missing[0]}" if missing else "",
        f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}" if unexpected else "",
        f"{len(shapes)} shape mismatch(es) (checkpoint vs network), e.g. {shapes[0]}" if shapes else "",
    ]
    found = "; ".join(p for p in parts if p)
    return found or None


class CheckpointLoader(MonaiCheckpointLoader):
    """``monai.handlers.CheckpointLoader`` (same arguments) whose failures are one-line
    :class:`~custom.weights.checkpoint.CheckpointLoadError` naming ``load_path``: an absent or unreadable file, a
    refused pickle, or (``strict=True``, ``strict_shape=True``) a state dict that does not fit a network in
    ``load_dict``."""

    def __call__(self, engine) -> None:  # noqa: ANN001 - an ignite Engine
        path = str(self.load_path)
        if not os.path.isfile(path):
            raise CheckpointLoadError(path, "no file (train the bundle first, or set ckpt_dir to the weights' folder)")
        checkpoint = load_weights_only(path, self.map_location or "cpu")
        if self.strict and self.strict_shape:
            key, target = next(iter(self.load_dict.items()))
            if isinstance(target, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
                target = target.module  # what ignite's Checkpoint.load_objects loads into
            if len(self.load_dict) == 1 and isinstance(target, torch.nn.Module):
                state = checkpoint[key] if isinstance(checkpoint, dict) and key in checkpoint else checkpoint
                reason = _mismatch(target, state)
                if reason is not None:
                    raise CheckpointMismatchError(path, type(target).__name__, reason)
        super().__call__(engine)
