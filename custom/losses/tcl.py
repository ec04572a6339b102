"""Text-informed contrastive learning (TCL): InfoNCE whose positives and negatives are decided by the reports."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from custom.losses.report_affinity import ReportAffinity, off_diagonal_positive_fraction
from custom.networks.temperature import LOGIT_SCALE_MAX

__all__ = ["TextInformedContrastiveLoss", "gather_with_local_grad"]

logger = logging.getLogger(__name__)


def gather_with_local_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0; gradients flow to this rank's part only (as open_clip does:
    every rank computes the loss of the global batch, DDP averages the gradients)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(
            f"TCL under DDP: expected the same local batch on every rank, found {[int(s) for s in sizes]} "
            "(use drop_last=True in the distributed dataloader)"
        )
    gathered = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    gathered[dist.get_rank()] = tensor
    return torch.cat(gathered)


class TextInformedContrastiveLoss(nn.Module):
    """Bidirectional InfoNCE between sub-volume and report embeddings with report-informed soft targets.

    Every crop is a positive of its own report (so the K crops of a volume share one positive). A report ``j`` other
    than crop ``n``'s own report ``r(n)`` also counts as positive with weight ``A[r(n), j]`` from ``affinity``
    (:class:`~custom.losses.report_affinity.ReportAffinity`: equal label vectors, their overlap, calibrated text
    similarity, or none; with ``"none"`` and K = 1 this is exactly the CLIP loss).

    Target rows are normalised to sum to one; the loss is the mean of the image->text and text->image soft cross
    entropies. Logits and log-softmax are computed in float32 outside any autocast region (under bf16 autocast a
    matmul returns bfloat16, whose 8-bit mantissa rounds logits of scale up to 100 by up to 0.4). The embeddings must
    arrive in float32 too (the model's heads produce them so under autocast): casting bf16 embeddings up here cannot
    undo their rounding. Under DDP all inputs are gathered across ranks first (global batch, gradients to the local
    part).

    A global batch of one report gets a warning, once per loss: with no other report there is no negative, so TCL is
    exactly 0 for K = 1 (and only evens out the K crops' logits otherwise). Not refused, because batch-1 steps are
    what timing and memory measurements of the paper-size step run (``benchmarks/t3d_vs_ssl_step.py``). Under DDP
    the global batch is the sum over ranks, so a per-GPU batch of 1 on 2+ GPUs is a real contrastive batch.

    Inputs of ``forward``: ``image_embeddings`` ``(N, E)`` and ``text_embeddings`` ``(B, E)``, both L2-normalised;
    ``image_to_text`` ``(N,)`` index of each crop's report in the local batch; ``logit_scale`` scalar (log inverse
    temperature, clamped at :data:`LOGIT_SCALE_MAX`); ``report_keys`` ``(B, F)`` what the affinity compares (label
    vectors or pooled text vectors), needed unless the source is ``"none"``.
    After each call ``positive_fraction`` holds the mean off-diagonal affinity of the (global) batch.
    """

    def __init__(self, affinity: ReportAffinity | None = None) -> None:
        super().__init__()
        self.affinity = affinity if affinity is not None else ReportAffinity("none")
        self.positive_fraction = 0.0
        self._warned_single_report = False

    def logits(
        self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        """``(N, E)``, ``(B, E)`` -> float32 ``(N, B)`` scaled cosine similarities, whatever autocast is active."""
        with torch.autocast(image_embeddings.device.type, enabled=False):
            scale = logit_scale.float().clamp(max=LOGIT_SCALE_MAX).exp()
            return scale * image_embeddings.float() @ text_embeddings.float().T

    def forward(
        self,
        image_embeddings: torch.Tensor,
        text_embeddings: torch.Tensor,
        image_to_text: torch.Tensor,
        logit_scale: torch.Tensor,
        report_keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        offset = text_embeddings.shape[0] * (dist.get_rank() if dist.is_available() and dist.is_initialized() else 0)
        image_embeddings = gather_with_local_grad(image_embeddings)
        text_embeddings = gather_with_local_grad(text_embeddings)
        image_to_text = gather_with_local_grad(image_to_text + offset)
        if report_keys is not None:
            report_keys = gather_with_local_grad(report_keys)
        if text_embeddings.shape[0] < 2 and not self._warned_single_report:
            self._warned_single_report = True
            logger.warning(
                "TCL: the global batch has 1 report (batch_size 1 without DDP, or a last partial batch of 1): with no "
                "other report there is no negative, so TCL is 0 (K = 1) or only evens out the K crops, and nothing "
                "is learned from it; use batch_size >= 2 and drop_last=True (a per-GPU batch of 1 is fine under DDP "
                "on 2+ GPUs). Warned once."
            )

        logits_image_to_text = self.logits(image_embeddings, text_embeddings, logit_scale)  # (N, B) float32
        affinity = self.affinity(report_keys, text_embeddings.shape[0], text_embeddings.device)
        self.positive_fraction = off_diagonal_positive_fraction(affinity)
        with torch.autocast(logits_image_to_text.device.type, enabled=False):
            pair_affinity = affinity[image_to_text]  # (N, B): crop n vs report j
            image_targets = pair_affinity / pair_affinity.sum(1, keepdim=True)
            text_targets = pair_affinity.T / pair_affinity.T.sum(1, keepdim=True)  # (B, N): report j vs crop n
            loss_image = -(image_targets * F.log_softmax(logits_image_to_text, dim=1)).sum(1).mean()
            loss_text = -(text_targets * F.log_softmax(logits_image_to_text.T, dim=1)).sum(1).mean()
            return 0.5 * (loss_image + loss_text)
