"""Precise batch-norm statistics: what the function computes, and that the T3D trainer runs it before the epoch's
checkpoint (the checkpoint holds the recomputed statistics)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
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


class _RestorationStub(nn.Module):
    """The T3D model's call signature with one batch norm first: its statistics depend on the input crops only, so
    the precise ones are known without running the network."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm3d(1)
        self.conv = nn.Conv3d(1, 1, 3, padding=1)

    def forward(self, images, corrupted, reports, crop_to_report):
        return SimpleNamespace(
            restored=self.conv(self.norm(corrupted)), logit_scale=torch.ones(())
        )  # the multiplier exp(log scale), as T3DModel returns it


def test_the_t3d_trainer_recomputes_the_statistics_before_the_epochs_checkpoint(tmp_path):
    from custom.engines.t3d_trainer import T3DTrainer
    from custom.handlers.checkpointing import LAST_CHECKPOINT, ResumableCheckpoint
    from custom.losses.tir import MaskedRestorationLoss
    from custom.weights.checkpoint import safe_load

    torch.manual_seed(0)
    batches = [{"image": torch.randn(2, 2, 1, 8, 8, 8) * (i + 1) + i, "report": ["a", "b"]} for i in range(3)]
    network = _RestorationStub()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    trainer = T3DTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=batches,
        network=network,
        optimizer=optimizer,
        tcl_loss=None,
        tir_loss=MaskedRestorationLoss(),
        corruption=lambda crops: (crops, torch.ones_like(crops, dtype=torch.bool)),  # identity: the norm sees crops
        tcl_weight=0.0,
        epoch_length=3,
        progress_bar=False,
        precise_bn_batches=2,
        train_handlers=[ResumableCheckpoint(str(tmp_path), network, optimizer, export_t3d_weights=False)],
    )
    trainer.run()
    saved = safe_load(str(tmp_path / LAST_CHECKPOINT))["network"]
    crops = [b["image"].flatten(0, 1) for b in batches[:2]]
    precise_mean = torch.stack([c.mean() for c in crops]).mean()
    precise_var = torch.stack([c.var() for c in crops]).mean()
    # without the recomputation (or after the save) the checkpoint holds the momentum-0.1 statistics of 3 training
    # steps: running mean 0.277 against the precise 0.474
    assert saved["norm.running_mean"].item() == pytest.approx(precise_mean.item(), rel=1e-5)
    assert saved["norm.running_var"].item() == pytest.approx(precise_var.item(), rel=1e-4)
    assert int(saved["norm.num_batches_tracked"]) == 2
