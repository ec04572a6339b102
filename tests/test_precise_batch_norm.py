"""Precise batch-norm statistics: what the function computes, and that the T3D trainer runs it before checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from custom.engines.precise_batch_norm import recompute_batch_norm_statistics


def test_running_statistics_become_the_average_over_the_given_batches():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    norm = network[1]
    norm.running_mean.fill_(100.0)  # stale statistics, as after fast-changing weights
    batches = [torch.randn(16, 4) * (i + 1) for i in range(5)]
    network.eval()
    used = recompute_batch_norm_statistics(network, iter(batches), network, num_batches=3)
    assert used == 3
    assert not network.training and norm.momentum == 0.1  # mode and momentum restored
    assert int(norm.num_batches_tracked) == 3
    with torch.no_grad():
        per_batch = [network[0](b) for b in batches[:3]]
    assert torch.allclose(norm.running_mean, torch.stack([h.mean(0) for h in per_batch]).mean(0), atol=1e-6)
    assert torch.allclose(norm.running_var, torch.stack([h.var(0) for h in per_batch]).mean(0), atol=1e-5)
    assert recompute_batch_norm_statistics(nn.Linear(2, 2), iter(batches), lambda b: None, num_batches=3) == 0
