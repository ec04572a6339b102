"""TCL under DDP (2 gloo processes): every rank sees the global batch; gradients reach the local embeddings."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from custom.losses.report_affinity import ReportAffinity
from custom.losses.tcl import TextInformedContrastiveLoss


def _batch():
    torch.manual_seed(0)
    image = F.normalize(torch.randn(8, 16), dim=-1)  # 4 reports x 2 crops
    text = F.normalize(torch.randn(4, 16), dim=-1)
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # label vectors: reports 0 and 1 alike
    return image, text, torch.arange(4).repeat_interleave(2), features


def _rank_main(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    image, text, image_to_text, features = _batch()
    local_image = image[rank * 4 : (rank + 1) * 4].clone().requires_grad_(True)
    local_text = text[rank * 2 : (rank + 1) * 2]
    local_map = image_to_text[rank * 4 : (rank + 1) * 4] - rank * 2  # indices into the local reports
    loss = TextInformedContrastiveLoss(ReportAffinity("labels"))(
        local_image, local_text, local_map, torch.tensor(2.0), features[rank * 2 : (rank + 1) * 2]
    )
    loss.backward()
    results[rank] = (float(loss), local_image.grad.clone())
    dist.destroy_process_group()


def test_tcl_gathers_the_global_batch_across_two_processes():
    image, text, image_to_text, features = _batch()
    full_image = image.clone().requires_grad_(True)
    full_loss = TextInformedContrastiveLoss(ReportAffinity("labels"))(
        full_image, text, image_to_text, torch.tensor(2.0), features
    )
    full_loss.backward()

    results = mp.Manager().dict()
    mp.spawn(_rank_main, args=(2, 29500 + os.getpid() % 1000, results), nprocs=2, join=True)
    for rank in range(2):
        loss, grad = results[rank]
        assert abs(loss - float(full_loss)) < 1e-5
        assert torch.allclose(grad, full_image.grad[rank * 4 : (rank + 1) * 4], atol=1e-6)
