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

    Unlike BatchNorm in training mode, an output never depends on its batch-mates: the statistics are exponential
    moving averages (``momentum``) of earlier training batches, updated *after* the batch is standardised with the
    previous values; the first training batch sets them (and is standardised by its own statistics). So a per-GPU
    batch of one volume works, and evaluation computes the same function as training. The statistics are buffers:
    checkpoints carry them, and DDP broadcasts rank 0's at every forward.
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
        first = self.training and int(self.batches_seen) == 0
        if first:  # the first training batch sets the statistics it is standardised with
            self._blend(x.detach().float(), weight=1.0)
        out = (x.float() - self.running_mean) / (self.running_var + self.eps).sqrt()
        if self.training and not first:  # after use: this batch only shapes the statistics of later batches
            self._blend(x.detach().float(), weight=self.momentum)
        if self.training:
            self.batches_seen += 1
        return out

    @torch.no_grad()
    def _blend(self, x: torch.Tensor, weight: float) -> None:
        self.running_mean.lerp_(x.mean(0), weight)
        if x.shape[0] > 1:  # one row has no spread: the variance keeps its value
            self.running_var.lerp_(x.var(0, unbiased=False), weight)
