"""Text-informed contrastive learning (TCL): InfoNCE whose positives and negatives are decided by the reports."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from custom.losses.report_affinity import ReportAffinity, ReportAffinityError, off_diagonal_positive_fraction

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
    undo their rounding.

    The interface follows open_clip's ``ClipLoss(output_dict=True)``: everything a step needs comes in as arguments
    and everything it measured goes out in the returned dict; nothing is read back from the loss afterwards.

    Args:
        affinity: which reports count as the same (default ``"none"``); ``"auto"`` is resolved by :meth:`prepare`.
        embed_reports: report strings -> ``(B, H)`` what the ``"text"`` affinity compares, computed exactly as its
            threshold was calibrated (the model's :meth:`~custom.networks.t3d.T3DModel.report_vectors`: eval mode, no
            gradients); used by :meth:`prepare` and at every step, so it is given once, here.
        gather_across_ranks: under DDP, gather every input across ranks first (the global batch; gradients reach the
            local part only, as open_clip's ``gather_with_grad=False`` plus its local gradient). The multi-GPU overlay
            sets it; a multi-rank run without it is refused at the first step, since each rank would then contrast
            its own few reports only.

    A global batch of one report gets a warning, once per loss: with no other report there is no negative, so TCL is
    exactly 0 for K = 1 (and only evens out the K crops' logits otherwise). Not refused, because batch-1 steps are
    what timing and memory measurements of the paper-size step run (``benchmarks/t3d_vs_ssl_step.py``). Under DDP
    the global batch is the sum over ranks, so a per-GPU batch of 1 on 2+ GPUs is a real contrastive batch.
    """

    def __init__(
        self,
        affinity: ReportAffinity | None = None,
        embed_reports: Callable[[list[str]], torch.Tensor] | None = None,
        gather_across_ranks: bool = False,
    ) -> None:
        super().__init__()
        self.affinity = affinity if affinity is not None else ReportAffinity("none")
        self.embed_reports = embed_reports
        self.gather_across_ranks = bool(gather_across_ranks)
        self._checked_ranks = False
        self._warned_single_report = False

    @property
    def required_batch_keys(self) -> tuple[str, ...]:
        """The batch keys :meth:`forward` needs besides the model's output, passed to it by the same names:
        ``label_vector`` for the label affinities, ``report`` for the text affinity, none otherwise."""
        if self.affinity.source == "auto":
            raise RuntimeError("report_affinity 'auto' was never resolved: call TextInformedContrastiveLoss.prepare")
        return ("label_vector",) if self.affinity.needs_labels else ("report",) if self.affinity.needs_text else ()

    def prepare(self, rows: list[dict]) -> str:
        """Before training, on the training ``rows``: resolve ``"auto"``, refuse coarse labels and calibrate the text
        threshold (:meth:`ReportAffinity.prepare` with this loss's ``embed_reports``); returns the resolved source."""
        return self.affinity.prepare(rows, self.embed_reports)

    def logits(
        self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        """``(N, E)``, ``(B, E)`` -> float32 ``(N, B)`` scaled cosine similarities, whatever autocast is active."""
        with torch.autocast(image_embeddings.device.type, enabled=False):
            return logit_scale.float() * image_embeddings.float() @ text_embeddings.float().T

    def forward(
        self,
        image_embeddings: torch.Tensor,
        text_embeddings: torch.Tensor,
        image_to_text: torch.Tensor,
        logit_scale: torch.Tensor,
        label_vector: torch.Tensor | None = None,
        report: list[str] | None = None,
    ) -> dict:
        """``image_embeddings`` ``(N, E)`` and ``text_embeddings`` ``(B, E)``, both L2-normalised; ``image_to_text``
        ``(N,)`` index of each crop's report in the local batch; ``logit_scale`` scalar tensor, the multiplier of the
        cosine similarities (``exp`` of the model's parameter, 1 / temperature, as open_clip's model output; the
        model keeps it bounded); then the batch entries :attr:`required_batch_keys` names: ``label_vector`` ``(B, C)``
        or ``report`` (``B`` strings).

        Returns ``{"loss": scalar tensor, "positive_fraction": float, "logit_scale": float}``: the loss, the mean
        off-diagonal affinity of the (global) batch (the fraction of different-report pairs treated as positives),
        and the scale the logits used."""
        keys = self._report_keys(label_vector, report, text_embeddings.device)
        if self.gather_across_ranks:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            offset = text_embeddings.shape[0] * rank
            image_embeddings = gather_with_local_grad(image_embeddings)
            text_embeddings = gather_with_local_grad(text_embeddings)
            image_to_text = gather_with_local_grad(image_to_text + offset)
            if keys is not None:
                keys = gather_with_local_grad(keys)
        elif not self._checked_ranks:
            self._refuse_ungathered_ranks()
        if text_embeddings.shape[0] < 2 and not self._warned_single_report:
            self._warned_single_report = True
            logger.warning(
                "TCL: the global batch has 1 report (batch_size 1 without DDP, or a last partial batch of 1): with no "
                "other report there is no negative, so TCL is 0 (K = 1) or only evens out the K crops, and nothing "
                "is learned from it; use batch_size >= 2 and drop_last=True (a per-GPU batch of 1 is fine under DDP "
                "on 2+ GPUs). Warned once."
            )

        logits_image_to_text = self.logits(image_embeddings, text_embeddings, logit_scale)  # (N, B) float32
        affinity = self.affinity(keys, text_embeddings.shape[0], text_embeddings.device)
        with torch.autocast(logits_image_to_text.device.type, enabled=False):
            pair_affinity = affinity[image_to_text]  # (N, B): crop n vs report j
            image_targets = pair_affinity / pair_affinity.sum(1, keepdim=True)
            text_targets = pair_affinity.T / pair_affinity.T.sum(1, keepdim=True)  # (B, N): report j vs crop n
            loss_image = -(image_targets * F.log_softmax(logits_image_to_text, dim=1)).sum(1).mean()
            loss_text = -(text_targets * F.log_softmax(logits_image_to_text.T, dim=1)).sum(1).mean()
        return {
            "loss": 0.5 * (loss_image + loss_text),
            "positive_fraction": off_diagonal_positive_fraction(affinity),
            "logit_scale": float(logit_scale.detach()),
        }

    def _report_keys(
        self, label_vector: torch.Tensor | None, report: list[str] | None, device: torch.device
    ) -> torch.Tensor | None:
        """What the affinity compares for this batch: the label vectors ``(B, C)``, the text vectors ``(B, H)``
        computed as the threshold was calibrated (identical reports that are not positives stop the run), or None."""
        if self.affinity.needs_labels:
            if label_vector is None:
                raise ReportAffinityError(
                    f"report_affinity '{self.affinity.source}': expected the batch's 'label_vector', found none"
                )
            return torch.as_tensor(label_vector).to(device)
        if self.affinity.needs_text:
            if report is None or self.embed_reports is None:
                missing = "the batch's 'report'" if report is None else "tcl_loss embed_reports"
                raise ReportAffinityError(f"report_affinity 'text': expected {missing}, found none")
            reports = list(report)
            keys = self.embed_reports(reports).to(device)
            self.affinity.check_identical_reports(reports, keys)
            return keys
        return None

    def _refuse_ungathered_ranks(self) -> None:
        self._checked_ranks = True
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError(
                f"tcl_loss gather_across_ranks: expected true under DDP ({dist.get_world_size()} ranks), found false "
                "(each rank would contrast only its own reports; configs/multi_gpu_train.json sets it)"
            )
