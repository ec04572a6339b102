"""AdamW parameter groups: no weight decay on TCL's temperature, norm weights and biases."""

from __future__ import annotations

import torch
from torch import nn

from custom.optimizers import weight_decay_groups


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 4, 3)
        self.norm = nn.LayerNorm(4)
        self.batch_norm = nn.BatchNorm3d(4)
        self.linear = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))


def test_named_groups_have_no_weight_decay():
    decay, no_decay = weight_decay_groups(_Model(), 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert decay["names"] == ["conv.weight", "linear.weight"]
    assert set(no_decay["names"]) == {
        "conv.bias",
        "norm.weight",
        "norm.bias",
        "batch_norm.weight",
        "batch_norm.bias",
        "linear.bias",
        "logit_scale",
    }
    assert not any(name.startswith("frozen") for name in decay["names"] + no_decay["names"])


def test_adamw_leaves_the_temperature_alone_when_its_gradient_is_zero():
    model = _Model()
    optimizer = torch.optim.AdamW(weight_decay_groups(model, 0.5), lr=0.1)
    before_scale, before_weight = model.logit_scale.detach().clone(), model.linear.weight.detach().clone()
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    assert torch.equal(model.logit_scale.detach(), before_scale)  # decayed, it would shrink by lr * wd = 5 %
    assert torch.allclose(model.linear.weight.detach(), before_weight * (1 - 0.1 * 0.5))


def test_swin_relative_position_bias_tables_are_not_decayed():
    from custom.networks.swin_backbone import SwinUNETRBackbone

    torch.manual_seed(0)
    decay, no_decay = weight_decay_groups(SwinUNETRBackbone(feature_size=12), 0.05)
    tables = [n for n in no_decay["names"] + decay["names"] if n.endswith("relative_position_bias_table")]
    assert len(tables) == 8  # depths 2-2-2-2: one table per Swin block
    assert set(tables) <= set(no_decay["names"]) and not any("relative_position" in n for n in decay["names"])
    assert any(n.endswith("attn.qkv.weight") for n in decay["names"])  # attention weights are still decayed
