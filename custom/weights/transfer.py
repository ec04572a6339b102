"""Load pre-trained image-encoder weights into a downstream MONAI ``SwinUNETR`` / ``BasicUNet``, loudly.

Accepted checkpoints (all read with ``torch.load(..., weights_only=True)``):

- this project's ``models/model.pt``: the full T3D state dict; image-backbone keys carry the ``image_backbone.``
  prefix, every other key (``text_encoder.*``, ``interactor.*``, heads) is ignored;
- this project's ``models/image_encoder.pt``: encoder keys in plain SwinUNETR / BasicUNet naming;
- any of the above saved from a ``DistributedDataParallel`` / ``DataParallel`` model (``module.`` prefixes);
- the public SwinUNETR self-supervised checkpoint (Tang et al., ``model_swinvit.pt``): ``{"state_dict": ...}`` with
  ``module.patch_embed.*`` / ``module.layers1.0.*`` keys (the Swin-ViT alone, so they map to ``swinViT.*``) and
  ``mlp.fc1`` / ``mlp.fc2`` where MONAI says ``mlp.linear1`` / ``mlp.linear2``; also its ``swinViT.*``,
  ``module.swinViT.*`` and ``encoder.*`` variants.

Only encoder tensors are transferred (the prefixes in ``SwinUNETRBackbone.encoder_prefixes`` /
``BasicUNetBackbone.encoder_prefixes``): the decoder and output layer are task specific and start fresh.

Input-channel adaptation (CT to multi-modal MR, e.g. 1 -> 4 channels for BraTS): a first-layer kernel ``W`` of shape
``(C_out, C_src, *k)`` becomes ``W'[:, j] = sum_c W[:, c] / C_dst`` for every target channel ``j``. Fed the same image
in every channel, the adapted layer gives exactly the pre-trained response (``sum_j W'[:, j] x = sum_c W[:, c] x``), so
the pre-trained feature scale is kept and no channel is favoured.

Loading fails with :class:`WeightTransferError` (never a warning) when nothing would be transferred into the encoder,
when a tensor's shape does not fit in a way channel adaptation can fix (a different architecture or size), or when
the encoder's normalisation differs from the pre-training's: batch-norm running statistics in the checkpoint that the
network has no place for (it was built with instance norm) would be dropped, and a batch-norm network fed an
instance-norm checkpoint would normalise with statistics nobody measured. Build the downstream network with the
pre-training's ``norm`` (its ``image_backbone`` config; every bundle's CPU toy reads one value,
``custom.networks.unet_backbone.CPU_TOY_NORM``, so a toy pre-training transfers into every downstream toy).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from custom.errors import WeightTransferError
from custom.networks.encoder_lock import encoder_of, encoder_prefixes_of, lock_encoder
from custom.weights.checkpoint import CheckpointLoadError, NonFiniteWeightsError, load_weights_only

__all__ = ["WeightTransferError", "TransferReport", "transfer_weights", "load_pretrained"]

IMAGE_BACKBONE_PREFIX = "image_backbone."
# wrappers whose ``state_dict`` prefixes keys: DDP / DataParallel
_WRAPPER_PREFIXES = ("module.",)
# checkpoint containers seen in the wild: {"state_dict": ...} (SwinUNETR SSL), {"model": ...}, {"network": ...}
_CONTAINER_KEYS = ("state_dict", "model", "network", "net")
# source-prefix rewrites tried in order when a key does not match the target as is
_PREFIX_REWRITES = (("", "swinViT."), ("encoder.", "swinViT."))
_INFIX_REWRITES = ((".mlp.fc1.", ".mlp.linear1."), (".mlp.fc2.", ".mlp.linear2."))
#: buffers a normalisation layer keeps between inputs (batch norm; instance norm has none by default)
_STATISTIC_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


@dataclass
class TransferReport:
    """What a transfer did. Key lists use the *target* network's naming, except ``unexpected`` (checkpoint naming)."""

    path: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[str] = field(default_factory=list)
    outside_encoder: list[str] = field(default_factory=list)
    ignored_non_image: int = 0

    def summary(self) -> str:
        def head(keys: list[str]) -> str:
            return "" if not keys else " [" + ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "") + "]"

        total = len(self.loaded) + len(self.missing) + len(self.shape_mismatched)
        return "\n".join(
            [
                f"weight transfer from {self.path}:",
                f"  loaded into encoder: {len(self.loaded)}/{total} tensors"
                + (f" ({len(self.adapted)} with input channels adapted){head(self.adapted)}" if self.adapted else ""),
                f"  missing (encoder keeps its random init): {len(self.missing)}{head(self.missing)}",
                f"  shape-mismatched: {len(self.shape_mismatched)}{head(self.shape_mismatched)}",
                f"  unexpected (no such key in the network): {len(self.unexpected)}{head(self.unexpected)}",
                f"  not transferred (decoder / output layer): {len(self.outside_encoder)}{head(self.outside_encoder)}",
                f"  ignored (not image backbone: text encoder, interactor, heads): {self.ignored_non_image}",
            ]
        )


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise WeightTransferError(f"{path}: pre-trained checkpoint not found")
    try:
        checkpoint = load_weights_only(path)
    except NonFiniteWeightsError as err:  # the weights' fault, named as such (not a NaN loss blamed on the data)
        raise WeightTransferError(str(err)) from None
    except CheckpointLoadError as err:  # refused pickle or corrupt file: torch's real reason, never its retry advice
        message = f"{path}: expected a weights-only torch checkpoint, could not load it ({err.reason})"
        raise WeightTransferError(message) from None
    while isinstance(checkpoint, Mapping) and not any(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        inner = next((checkpoint[k] for k in _CONTAINER_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
        if inner is None:
            break
        checkpoint = inner
    if not isinstance(checkpoint, Mapping):
        raise WeightTransferError(f"{path}: expected a state dict, found {type(checkpoint).__name__}")
    return {str(k): v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def _strip_wrappers(key: str) -> str:
    """Drop every leading DDP ``module.`` (a DDP-wrapped T3D model gives ``module.image_backbone.module....``)."""
    changed = True
    while changed:
        changed = False
        for prefix in (*_WRAPPER_PREFIXES, IMAGE_BACKBONE_PREFIX):
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _candidates(key: str) -> list[str]:
    """Target names ``key`` may have, most literal first."""
    names = [key]
    for old, new in _PREFIX_REWRITES:
        if key.startswith(old) and not key.startswith(new):
            names.append(new + key[len(old) :])
    for old, new in _INFIX_REWRITES:
        names += [n.replace(old, new) for n in names if old in n]
    return names


def _adapt_input_channels(source: torch.Tensor, target_shape: torch.Size, in_channels: int) -> torch.Tensor | None:
    """The channel-adapted kernel (module docstring rule) for an input-layer kernel (dim 1 == ``in_channels``) whose
    shape differs from ``target_shape`` in dim 1 only; ``None`` for any other tensor."""
    if source.ndim < 3 or source.ndim != len(target_shape) or source.shape[1] != in_channels:
        return None
    if source.shape[0] != target_shape[0]:
        return None
    if source.shape[2:] != target_shape[2:]:
        return None
    merged = source.sum(dim=1, keepdim=True) / target_shape[1]
    return merged.expand(-1, target_shape[1], *([-1] * (source.ndim - 2))).clone()


def transfer_weights(
    network: torch.nn.Module, path: str, encoder_prefixes: Sequence[str] | None = None, adapt_channels: bool = True
) -> TransferReport:
    """Copy the encoder tensors of the checkpoint at ``path`` into ``network``'s encoder in place (the network
    itself or its ``image_backbone``, unwrapped from DDP: :func:`~custom.networks.encoder_lock.encoder_of`); returns
    the report.

    Raises :class:`WeightTransferError` when no encoder tensor is loaded or a shape mismatch cannot be adapted.
    """
    target_net = encoder_of(network)
    try:
        prefixes = tuple(encoder_prefixes) if encoder_prefixes is not None else encoder_prefixes_of(target_net)
    except ValueError as error:  # the network's fault, named in one line like every other transfer failure
        raise WeightTransferError(f"{path}: {error}") from None
    target = target_net.state_dict()
    source = _read_state_dict(path)
    report = TransferReport(path=path)

    has_backbone_prefix = any(_is_image_backbone_key(k) for k in source)
    # input-layer kernels are the ones reading the image: their dim 1 is the checkpoint's (smallest) channel count
    kernels = [t for k, t in source.items() if t.ndim >= 3 and (_is_image_backbone_key(k) or not has_backbone_prefix)]
    source_in_channels = min((t.shape[1] for t in kernels), default=0)
    new_state: dict[str, torch.Tensor] = {}
    for raw_key, tensor in source.items():
        if has_backbone_prefix and not _is_image_backbone_key(raw_key):
            report.ignored_non_image += 1  # the full T3D model: text encoder, interactor, projections
            continue
        name = next((n for n in _candidates(_strip_wrappers(raw_key)) if n in target), None)
        if name is None:
            report.unexpected.append(raw_key)
        elif not name.startswith(prefixes):
            report.outside_encoder.append(name)
        elif tensor.shape == target[name].shape:
            new_state[name] = tensor
        else:
            adapted = _adapt_input_channels(tensor, target[name].shape, source_in_channels) if adapt_channels else None
            if adapted is None:
                report.shape_mismatched.append(f"{name} {tuple(tensor.shape)}->{tuple(target[name].shape)}")
            else:
                new_state[name] = adapted
                report.adapted.append(name)
    report.loaded = sorted(new_state)
    report.missing = [k for k in target if k.startswith(prefixes) and k not in new_state and not _is_buffer_index(k)]

    _refuse_normalisation_mismatch(path, report, prefixes)
    if report.shape_mismatched:
        raise WeightTransferError(
            f"{path}: {len(report.shape_mismatched)} encoder tensor(s) do not fit the network "
            f"(first: {report.shape_mismatched[0]}); check feature_size / backbone / in_channels"
        )
    if not report.loaded:
        raise WeightTransferError(
            f"{path}: no encoder tensor matched the network ({len(source)} tensors in the checkpoint, e.g. "
            f"{next(iter(source), 'none')}); the encoder would stay untrained"
        )
    target_net.load_state_dict(new_state, strict=False)
    return report


def _refuse_normalisation_mismatch(path: str, report: TransferReport, prefixes: tuple[str, ...]) -> None:
    """One-line :class:`WeightTransferError` when encoder normalisation statistics would be dropped (checkpoint has
    them, the network has no such buffers) or left unmeasured (the network has them, the checkpoint does not)."""
    dropped = [
        k for k in report.unexpected if k.endswith(_STATISTIC_SUFFIXES) and _strip_wrappers(k).startswith(prefixes)
    ]
    unmeasured = [k for k in report.missing if k.endswith(_STATISTIC_SUFFIXES)]
    if dropped:
        raise WeightTransferError(
            f"{path}: {len(dropped)} encoder normalisation statistics of the checkpoint (first: {dropped[0]}) have no "
            "place in the network: it was pre-trained with batch norm and the network has none; build the network "
            "with the pre-training's norm (its image_backbone 'norm', e.g. norm='batch')"
        )
    if unmeasured:
        raise WeightTransferError(
            f"{path}: the network's encoder has {len(unmeasured)} batch-norm statistics (first: {unmeasured[0]}) the "
            "checkpoint does not hold: it was pre-trained without batch norm; build the network with the "
            "pre-training's norm (its image_backbone 'norm')"
        )


def _is_image_backbone_key(key: str) -> bool:
    """A key of the full T3D model's image backbone, possibly under DDP ``module.`` prefixes."""
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key.startswith(IMAGE_BACKBONE_PREFIX)


def _is_buffer_index(key: str) -> bool:
    """Swin's ``relative_position_index`` is a constant buffer: recomputed by the network, not learnt."""
    return key.endswith("relative_position_index")


def load_pretrained(
    network: torch.nn.Module,
    path: str | None,
    encoder_prefixes: Sequence[str] | None = None,
    adapt_channels: bool = True,
    log: Callable[[str], None] = print,
    frozen: bool = False,
    keep_norm_statistics: bool = True,
) -> torch.nn.Module:
    """The one entry point of the bundles: ``network`` (a MONAI SwinUNETR / BasicUNet, or a model with one as its
    ``image_backbone``, as the volume classifier) with its encoder initialised from ``path``; ``path=None`` means
    from scratch. ``frozen``: the encoder then stops training, its normalisation statistics kept as loaded unless
    ``keep_norm_statistics`` is False (the frozen-encoder and linear probes,
    :func:`custom.networks.encoder_lock.lock_encoder`).

    Prints the :class:`TransferReport` and returns ``network`` so a config can chain it, as the bundles'
    ``train.json`` do: ``load_pretrained(@network_def, @pretrained_weights, frozen=@frozen_encoder)``, then ``.to``.
    """
    if path is None or str(path).strip().lower() in ("", "none", "null"):
        log("weight transfer: pretrained_weights is null, the network starts from random initialisation (scratch)")
    else:
        log(transfer_weights(network, str(path), encoder_prefixes, adapt_channels).summary())
    try:
        return lock_encoder(network, frozen, keep_norm_statistics, log)
    except ValueError as error:
        raise WeightTransferError(f"pretrained_weights {path}: {error}") from None
