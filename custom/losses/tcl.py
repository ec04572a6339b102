"""Text-informed contrastive learning (TCL): InfoNCE whose positives and negatives are decided by the reports."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["TextInformedContrastiveLoss", "gather_with_local_grad"]


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
    than crop ``n``'s own report ``r(n)`` also counts as positive with weight ``A[r(n), j]``, where ``A`` comes from the
    cosine similarity ``S`` of the reports' ``report_features``:

    - ``"threshold"``: ``A = 1`` where ``S >= similarity_threshold``, else 0 (identical "no acute findings" reports
      are positives of each other, not negatives);
    - ``"soft"``: ``A = exp((S - 1) / soft_temperature)``, 1 for identical reports, decaying with dissimilarity;
    - ``"none"``: ``A`` is the identity (plain multi-positive InfoNCE; with K = 1 this is exactly the CLIP loss).

    Target rows are normalised to sum to one; the loss is the mean of the image->text and text->image soft cross
    entropies. Under DDP all inputs are gathered across ranks first (global batch, gradients to the local part).

    Inputs of ``forward``: ``image_embeddings`` ``(N, E)`` and ``text_embeddings`` ``(B, E)``, both L2-normalised;
    ``image_to_text`` ``(N,)`` index of each crop's report in the local batch; ``logit_scale`` scalar (log inverse
    temperature, clamped at log 100); ``report_features`` ``(B, F)`` any features whose cosine defines report
    similarity (lexical fingerprints, or detached text embeddings), needed unless mode is ``"none"``.
    """

    def __init__(
        self, soft_negatives: str = "threshold", similarity_threshold: float = 0.9, soft_temperature: float = 0.1
    ) -> None:
        super().__init__()
        if soft_negatives not in ("threshold", "soft", "none"):
            raise ValueError(f"soft_negatives: expected 'threshold', 'soft' or 'none', found '{soft_negatives}'")
        self.soft_negatives = soft_negatives
        self.similarity_threshold = similarity_threshold
        self.soft_temperature = soft_temperature

    def report_affinity(self, report_features: torch.Tensor | None, num_reports: int, device: torch.device) -> torch.Tensor:
        """``(B, B)`` weights of report j as a positive for report i (1 on the diagonal)."""
        identity = torch.eye(num_reports, device=device)
        if self.soft_negatives == "none":
            return identity
        if report_features is None:
            raise ValueError(f"TCL with soft_negatives='{self.soft_negatives}': expected report_features, found None")
        features = F.normalize(report_features.detach().float(), dim=-1)
        similarity = features @ features.T
        if self.soft_negatives == "threshold":
            affinity = (similarity >= self.similarity_threshold).float()
        else:
            affinity = torch.exp((similarity - 1.0) / self.soft_temperature)
        return torch.maximum(affinity, identity)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        text_embeddings: torch.Tensor,
        image_to_text: torch.Tensor,
        logit_scale: torch.Tensor,
        report_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        offset = text_embeddings.shape[0] * (dist.get_rank() if dist.is_available() and dist.is_initialized() else 0)
        image_embeddings = gather_with_local_grad(image_embeddings)
        text_embeddings = gather_with_local_grad(text_embeddings)
        image_to_text = gather_with_local_grad(image_to_text + offset)
        if report_features is not None:
            report_features = gather_with_local_grad(report_features)

        scale = logit_scale.clamp(max=4.6052).exp()
        logits_image_to_text = scale * image_embeddings.float() @ text_embeddings.float().T  # (N, B)
        affinity = self.report_affinity(report_features, text_embeddings.shape[0], text_embeddings.device)
        pair_affinity = affinity[image_to_text]  # (N, B): crop n vs report j
        image_targets = pair_affinity / pair_affinity.sum(1, keepdim=True)
        text_targets = pair_affinity.T / pair_affinity.T.sum(1, keepdim=True)  # (B, N): report j vs crop n
        loss_image = -(image_targets * F.log_softmax(logits_image_to_text, dim=1)).sum(1).mean()
        loss_text = -(text_targets * F.log_softmax(logits_image_to_text.T, dim=1)).sum(1).mean()
        return 0.5 * (loss_image + loss_text)
