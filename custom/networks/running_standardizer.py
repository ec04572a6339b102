"""Per-feature standardisation with running statistics: the centring that lets TCL leave its uniform start."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RunningStandardizer"]


class RunningStandardizer(nn.Module):
    """``(B, D)`` -> ``(B, D)``: each feature minus its running mean, over its running standard deviation.

    Why: at initialisation a backbone's pooled features of different crops point the same way (SwinUNETR fs48: mean
    cosine 0.992 between crops of different volumes; fs12 on 64^3 volumes 0.998; a BERT's pooled report vectors are
    as anisotropic), so the projected embeddings are nearly identical, every TCL logit is the same, and the gradient
    on each side is proportional to the other side's tiny spread: a fixed point that training at a transformer's
    learning rate does not leave (``benchmarks/swin_uniform_escape.py``). Removing the shared direction and scaling
    what differs to unit variance puts the differences between crops, and between reports, at the scale the
    projection is initialised for.

    Unlike BatchNorm in training mode, an output never depends on its batch-mates: a training batch is standardised
    with the statistics of the batches *before* it, then joins them. The statistics start at mean 0, variance 1 (the
    first batch passes unchanged) and are the plain average of the batches seen while there are fewer than
    ``1 / momentum``, an exponential moving average (``momentum``) after that, so they settle within a few steps. A
    per-GPU batch of one volume works, and evaluation computes the same function as training. The statistics are
    buffers: checkpoints carry them, and DDP broadcasts rank 0's at every forward.
    """

    def __init__(self, dim: int, momentum: float = 0.05, eps: float = 1e-5) -> None:
        super().__init__()
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum: expected a value in (0, 1], found {momentum}")
        self.momentum, self.eps = float(momentum), float(eps)
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("batches_seen", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (x.float() - self.running_mean) / (self.running_var + self.eps).sqrt()
        if self.training:  # after use: this batch only shapes the statistics of later batches
            self._update(x.detach().float())
        return out

    @torch.no_grad()
    def _update(self, x: torch.Tensor) -> None:
        seen = int(self.batches_seen)
        weight = max(self.momentum, 1.0 / (seen + 1))  # a plain average until 1 / momentum batches, then an EMA
        self.running_mean.lerp_(x.mean(0), weight)
        if x.shape[0] > 1:  # one row has no spread: the variance keeps its value
            variance_weight = 1.0 if seen == 0 else weight  # the first batch replaces the placeholder variance of 1
            self.running_var.lerp_(x.var(0, unbiased=False), variance_weight)
        self.batches_seen += 1
