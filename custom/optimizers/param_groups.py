"""Parameter groups for AdamW: weight decay on weight matrices and kernels only, never on position biases."""

from __future__ import annotations

from torch import nn

__all__ = ["NO_DECAY_NAMES", "weight_decay_groups"]

#: parameters, by name, that are never decayed whatever their shape: TCL's learnable log inverse temperature, and
#: SwinUNETR's relative position bias tables (2-D, but a learned attention offset per window position, not a weight
#: matrix: Swin's and timm's recipes exclude them from decay)
NO_DECAY_NAMES: tuple[str, ...] = ("logit_scale", "relative_position_bias_table")


def weight_decay_groups(network: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters of ``network`` in two AdamW groups: ``weight_decay`` for weight matrices and convolution
    kernels (``ndim >= 2``), 0 for biases, normalisation weights, other vectors and scalars, and :data:`NO_DECAY_NAMES`.

    Decaying ``logit_scale`` pulls the TCL temperature towards 1 (uniform targets); decaying a norm's gain, a bias or a
    relative position bias table shrinks a scale or an offset, not the model's capacity. Each group carries ``names``
    for inspection (AdamW ignores extra keys)."""
    decay, no_decay = {"params": [], "names": []}, {"params": [], "names": []}
    for name, parameter in network.named_parameters():
        if not parameter.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        group = no_decay if parameter.ndim < 2 or leaf in NO_DECAY_NAMES else decay
        group["params"].append(parameter)
        group["names"].append(name)
    return [{**decay, "weight_decay": weight_decay}, {**no_decay, "weight_decay": 0.0}]
