"""Report <-> volume retrieval metrics from an embedding similarity matrix."""

from __future__ import annotations

import torch

__all__ = ["retrieval_ranks", "retrieval_metrics"]


def retrieval_ranks(similarity: torch.Tensor) -> torch.Tensor:
    """1-based rank of the true match (the diagonal) in each row of ``similarity`` ``(Q, Q)``; ties count against
    the query (a tie with the true match ranks it below), so a constant embedding scores no better than chance."""
    true = similarity.diagonal().unsqueeze(1)
    return (similarity >= true).sum(dim=1)


def retrieval_metrics(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Volume ``i`` belongs to report ``i``. Returns ``report_to_volume_R{k}``, ``volume_to_report_R{k}`` (fractions),
    both median ranks and ``chance_R{k}`` (= k / N) for the same gallery size."""
    similarity = image_embeddings.float() @ text_embeddings.float().T  # (volumes, reports)
    count = similarity.shape[0]
    results: dict[str, float] = {}
    for name, ranks in (
        ("report_to_volume", retrieval_ranks(similarity.T)),
        ("volume_to_report", retrieval_ranks(similarity)),
    ):
        for k in ks:
            results[f"{name}_R{k}"] = float((ranks <= k).float().mean())
        results[f"{name}_median_rank"] = float(ranks.float().median())
    for k in ks:
        results[f"chance_R{k}"] = min(k, count) / count
    return results
