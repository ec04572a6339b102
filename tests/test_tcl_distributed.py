"""TCL under DDP (2 gloo processes): every rank sees the global batch; gradients reach the local embeddings.

A per-GPU batch of 1 report is a real contrastive batch under DDP (the global batch has 2): no single-report warning."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from custom.losses.report_affinity import ReportAffinity
from custom.losses.tcl import TextInformedContrastiveLoss


def _batch(reports: int = 4):
    """``reports`` reports x 2 crops: image ``(2R, 16)``, text ``(R, 16)``, crop -> report ``(2R,)``, label vectors."""
    torch.manual_seed(0)
    image = F.normalize(torch.randn(8, 16), dim=-1)[: 2 * reports]
    text = F.normalize(torch.randn(4, 16), dim=-1)[:reports]
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])[:reports]  # reports 0 and 1 alike
    return image, text, torch.arange(reports).repeat_interleave(2), features


def _rank_main(rank: int, world: int, port: int, local: int, results, gather: bool = True) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    image, text, image_to_text, features = _batch(world * local)
    crops = slice(rank * 2 * local, (rank + 1) * 2 * local)
    local_image = image[crops].clone().requires_grad_(True)
    local_text = text[rank * local : (rank + 1) * local]
    local_map = image_to_text[crops] - rank * local  # indices into the local reports
    loss_function = TextInformedContrastiveLoss(ReportAffinity("labels"), gather_across_ranks=gather)
    try:
        loss = loss_function(
            local_image, local_text, local_map, torch.tensor(2.0).exp(), features[rank * local : (rank + 1) * local]
        )["loss"]
    except ValueError as error:  # told not to gather under DDP: refused at the first step
        results[rank] = str(error)
        dist.destroy_process_group()
        return
    loss.backward()
    results[rank] = (float(loss), local_image.grad.clone(), loss_function._warned_single_report)
    dist.destroy_process_group()


@pytest.mark.parametrize("local", [2, 1], ids=["2_reports_per_rank", "1_report_per_rank"])
def test_tcl_gathers_the_global_batch_across_two_processes(local):
    image, text, image_to_text, features = _batch(2 * local)
    full_image = image.clone().requires_grad_(True)
    full_loss = TextInformedContrastiveLoss(ReportAffinity("labels"))(
        full_image, text, image_to_text, torch.tensor(2.0).exp(), label_vector=features
    )["loss"]
    full_loss.backward()
    assert float(full_loss) > 0

    results = mp.Manager().dict()
    mp.spawn(_rank_main, args=(2, 29500 + os.getpid() % 1000 + local, local, results), nprocs=2, join=True)
    for rank in range(2):
        loss, grad, warned = results[rank]
        assert abs(loss - float(full_loss)) < 1e-5
        assert torch.allclose(grad, full_image.grad[rank * 2 * local : (rank + 1) * 2 * local], atol=1e-6)
        assert not warned  # the global batch has 2 reports


def test_tcl_told_not_to_gather_is_refused_under_ddp():
    """Each rank would contrast its own reports only: refused in one line at the first step."""
    results = mp.Manager().dict()
    mp.spawn(_rank_main, args=(2, 29600 + os.getpid() % 1000, 1, results, False), nprocs=2, join=True)
    for rank in range(2):
        message = results[rank]
        assert isinstance(message, str) and "\n" not in message
        assert "tcl_loss gather_across_ranks: expected true under DDP (2 ranks), found false" in message
