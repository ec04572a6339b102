"""Checkpoint files of a pre-training run: atomic writes, safe loads, and the downstream-ready encoder export.

``models/`` of a run holds
- ``checkpoint_last.pt``: everything needed to resume (network, optimizer, LR scheduler, epoch/iteration);
- ``model.pt``: the full T3D model state dict (what ``inference.json`` and MONAI Label load);
- ``image_encoder.pt``: the image encoder only, with plain SwinUNETR / BasicUNet key names, so
  ``SwinUNETR(...).load_state_dict(torch.load(path, weights_only=True), strict=False)`` misses no encoder key;
- ``image_encoder.json``: which backbone class and constructor arguments the encoder belongs to.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
import zipfile

import torch
from torch import nn

from custom.errors import OneLineError

__all__ = [
    "CheckpointLoadError",
    "NonFiniteWeightsError",
    "CheckpointSaveError",
    "first_non_finite_tensor",
    "load_failure_reason",
    "load_weights_only",
    "atomic_save",
    "remove_orphan_temp_files",
    "safe_load",
    "unwrap",
    "image_encoder_state_dict",
    "export_weights",
]

# lines of torch's weights-only message that are advice, not the reason (one of them suggests weights_only=False,
# which would run whatever the pickle names: never repeated here)
_ADVICE_LINE = re.compile(
    r"^(Weights only load failed|In PyTorch \d|Please file an issue|Check the documentation|WeightsUnpickler error)"
    r"|weights_only",
    re.IGNORECASE,
)


class CheckpointLoadError(OneLineError, ValueError):
    """A checkpoint ``torch.load(..., weights_only=True)`` refused or could not read; ``reason`` is torch's real reason
    (one line), the message names the file as well."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: expected a readable weights-only checkpoint, found {reason}")
        self.path = path
        self.reason = reason


class NonFiniteWeightsError(CheckpointLoadError):
    """A checkpoint that loads but holds NaN/inf values: a model of NaNs would be served (all-background
    segmentations, exit 0) or fine-tuned from (a NaN loss blamed on the data)."""

    def __init__(self, path: str, tensor: str, count: int, size: int, more: int) -> None:
        others = f" (and {more} more tensor(s))" if more else ""
        ValueError.__init__(
            self,
            f"{path}: expected finite weights, found {count} NaN/inf of {size} values in tensor '{tensor}'{others}",
        )
        self.path, self.tensor = path, tensor
        self.reason = f"{count} NaN/inf values in tensor '{tensor}'{others}"


def _tensors(value: object, prefix: str = ""):
    """``(dotted key, tensor)`` of every tensor in a checkpoint (nested dicts, lists, tuples), in stored order."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{prefix}.{index}" if prefix else str(index))


def first_non_finite_tensor(checkpoint: object) -> tuple[str, int, int, int] | None:
    """``(key, NaN/inf count, size, number of other such tensors)`` of the first floating-point tensor holding a
    non-finite value, or None."""
    found = None
    others = 0
    for key, tensor in _tensors(checkpoint):
        if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.numel() == 0:
            continue
        bad = int((~torch.isfinite(tensor.detach())).sum())
        if bad:
            if found is None:
                found = (key, bad, int(tensor.numel()))
            else:
                others += 1
    return None if found is None else (*found, others)


class CheckpointSaveError(OneLineError, RuntimeError):
    """A checkpoint that could not be written (disk full, ``ulimit -f``, a read-only folder); the earlier file of that
    name is kept whole. One line naming the file."""


def _first_sentence(line: str) -> str:
    """The first sentence of a long torch message (what follows is advice: "If you are seeing this error ...")."""
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", line.strip(), maxsplit=1)[0]


def _reason_lines(text: str) -> list[str]:
    """First sentences of the message lines that state a reason (torch's advice lines dropped)."""
    sentences = [_first_sentence(line) for line in text.splitlines() if line.strip()]
    return [s for s in sentences if not _ADVICE_LINE.search(s)]


def load_failure_reason(path: str, err: BaseException) -> str:
    """One line saying why ``torch.load(path, weights_only=True)`` failed with ``err``: torch's own reason (for a
    refused pickle the ``unsupported GLOBAL ...`` line naming what the file would run), never torch's advice to retry
    with ``weights_only=False``."""
    try:
        size = os.path.getsize(path)
    except OSError:
        size = None
    if size == 0:
        return "an empty file (0 bytes)"
    # torch re-raises the unpickler's error inside a long advice text ("Weights only load failed ... Re-running
    # `torch.load` with `weights_only` set to `False` will likely succeed ..."); the original error is its context
    candidates = [err]
    inner = err.__cause__ or err.__context__
    if inner is not None and inner is not err:
        candidates.insert(0, inner)
    for candidate in candidates:
        lines = _reason_lines(str(candidate))
        if lines:
            reason = f"{type(candidate).__name__}: {lines[0]}"
            break
    else:
        reason = f"{type(err).__name__} (no message)"
    if size is not None and not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            zip_start = f.read(4) == b"PK\x03\x04"
        form = "a zip that is damaged or cut short" if zip_start else "not the zip format torch.save writes"
        reason += f" ({size} bytes, {form})"
    elif isinstance(err, EOFError) and size is not None:
        reason += f" ({size} bytes, cut short)"
    return reason


def load_weights_only(path: str, map_location: str | torch.device = "cpu") -> object:
    """``torch.load(path, weights_only=True)``; raises :class:`CheckpointLoadError` (one line: the file and torch's
    real reason) when torch refuses or cannot read it, :class:`NonFiniteWeightsError` (the file and the first tensor)
    when any floating-point tensor in it holds NaN/inf, ``FileNotFoundError`` (one line) when it is absent. Every
    checkpoint this project loads (inference weights, resume states, pre-trained encoders, packed weights) comes
    through here."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        with warnings.catch_warnings():  # legacy-format files: torch warns about the pickle protocol before failing
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for damaged or refused files
        raise CheckpointLoadError(path, load_failure_reason(path, err)) from None
    bad = first_non_finite_tensor(checkpoint)
    if bad is not None:
        raise NonFiniteWeightsError(path, *bad)
    return checkpoint


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a number no PID can be counts as alive: the file is not ours to delete)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):  # someone else's process; not a PID at all
        return True
    return True


def remove_orphan_temp_files(path: str) -> list[str]:
    """Delete the temporary files an interrupted :func:`atomic_save` (or a killed process) of ``path`` left: exactly
    ``<path>.tmp<PID>`` in ``path``'s folder whose PID is no live process. Returns the removed paths.

    (A PID taken again by an unrelated live process keeps its file until that process ends; processes on other hosts
    sharing the folder are not seen, which is fine while one process writes a given checkpoint.)
    """
    folder = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(re.escape(os.path.basename(path)) + r"\.tmp([1-9][0-9]*)")
    removed = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if not match or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
            continue
        orphan = os.path.join(folder, name)
        if os.path.isfile(orphan) and not os.path.islink(orphan):
            try:
                os.remove(orphan)
                removed.append(orphan)
            except FileNotFoundError:  # removed meanwhile by another process cleaning up
                pass
    return removed


def atomic_save(obj: object, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a checkpoint.
    Temporary files of ``path`` left by processes killed mid-save are deleted first (:func:`remove_orphan_temp_files`);
    a failed save removes its own."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    remove_orphan_temp_files(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch says "basic_ios::clear" / "file write failed" for a full disk
        if os.path.exists(tmp):
            os.remove(tmp)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = getattr(err, "strerror", None) or (lines[0] if lines else type(err).__name__)
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
        kept = "the earlier file is kept" if os.path.exists(path) else "no file written"
        raise CheckpointSaveError(
            f"{path}: expected to save the checkpoint, found {type(err).__name__}: {reason} ({free} bytes free on its "
            f"disk; {kept})"
        ) from err
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def safe_load(path: str, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(..., weights_only=True)`` with a one-line error naming the file and torch's reason
    (:func:`load_weights_only`)."""
    return load_weights_only(path, map_location)


def unwrap(network: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or the model itself)."""
    return network.module if hasattr(network, "module") and isinstance(network.module, nn.Module) else network


def image_encoder_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's encoder tensors under their plain MONAI names (``swinViT.*``, ``encoder1.*`` ... /
    ``conv_0.*``...)."""
    return {k: v.detach().cpu() for k, v in backbone.state_dict().items() if k.startswith(backbone.encoder_prefixes)}


def _backbone_description(backbone: nn.Module) -> dict:
    return {
        "backbone": type(backbone).__name__,
        "monai_class": type(backbone).__mro__[1].__name__,
        "bottleneck_channels": int(backbone.bottleneck_channels),
        "embedding_channels": int(backbone.embedding_channels),
        "encoder_prefixes": list(backbone.encoder_prefixes),
    }


def export_weights(network: nn.Module, save_dir: str) -> None:
    """Write ``model.pt``, ``image_encoder.pt`` and ``image_encoder.json`` of a T3D model into ``save_dir``."""
    model = unwrap(network)
    atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, os.path.join(save_dir, "model.pt"))
    atomic_save(image_encoder_state_dict(model.image_backbone), os.path.join(save_dir, "image_encoder.pt"))
    remove_orphan_temp_files(os.path.join(save_dir, "image_encoder.json"))
    tmp = os.path.join(save_dir, f"image_encoder.json.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_backbone_description(model.image_backbone), f, indent=1)
    os.replace(tmp, os.path.join(save_dir, "image_encoder.json"))
