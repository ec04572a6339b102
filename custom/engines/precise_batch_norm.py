"""Precise batch-norm statistics: recompute the running mean/variance of every batch-norm layer for the final
weights."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice

import torch
from torch import nn

__all__ = ["recompute_batch_norm_statistics"]


@torch.no_grad()
def recompute_batch_norm_statistics(
    network: nn.Module, batches: Iterable, forward: Callable[[object], object], num_batches: int
) -> int:
    """Reset every ``_BatchNorm`` layer of ``network`` and re-estimate its running statistics as the plain average
    over ``num_batches`` of ``batches`` run through ``forward`` in training mode without gradients. Returns the number
    of batches used (0 when the network has no batch norm).

    Why: the running averages (momentum 0.1) lag behind weights that change quickly, as in a short contrastive
    pre-training; evaluated with them, a model that separates volumes well in training mode can give every volume
    nearly the same embedding. Recomputed for the current weights, evaluation mode sees what training saw.
    """
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or num_batches <= 0:
        return 0
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch counts equally
    was_training = network.training
    network.train()
    used = 0
    try:
        for batch in islice(batches, num_batches):
            forward(batch)
            used += 1
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        network.train(was_training)
    return used
