"""Which reports of a batch say the same thing: the report-report affinity behind TCL's text-informed targets.

Two studies whose reports describe the same findings should not be negatives of each other; two whose reports differ
in one finding, or in its negation, must be. The affinity ``A`` ``(B, B)`` (1 on the diagonal) says how much report
``j`` counts as a positive for report ``i``. Its source is a choice, because what is reliable depends on the data:

- ``"labels"``: the datalist's multi-hot ``label_vector`` (BIMCV's report-mined labels, the synthetic findings):
  ``A = 1`` where the vectors are equal, else 0. Exact, and immune to how long or how worded the report is.
- ``"label_overlap"``: soft weights from the same vectors, ``|a AND b| / |a OR b|`` (two empty vectors: 1).
- ``"text"``: cosine of the text encoder's own pooled report vectors, ``A = 1`` at or above a threshold that
  :meth:`ReportAffinity.calibrate` sets on the training reports, just above the similarity of reports that differ
  by one negated sentence.
- ``"none"``: the identity (plain multi-positive InfoNCE).
- ``"auto"`` (the bundles' default): ``"labels"`` when every training row carries a ``label_vector``, else ``"text"``.

A lexical word/bigram fingerprint was the source before: on 100-300-word reports it called "no pleural effusion" vs
"moderate right pleural effusion" the same report (cosine 0.975), so it is gone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from custom.transforms.report_text import split_sentences

__all__ = ["AFFINITY_SOURCES", "ReportAffinity", "negation_variants", "off_diagonal_positive_fraction"]

AFFINITY_SOURCES: tuple[str, ...] = ("auto", "labels", "label_overlap", "text", "none")
LABEL_SOURCES: tuple[str, ...] = ("labels", "label_overlap")

logger = logging.getLogger(__name__)

_NEGATION_START = re.compile(r"^(no|there is no|there are no)\s+", re.IGNORECASE)


def negation_variants(report: str, limit: int = 4) -> list[str]:
    """Up to ``limit`` copies of ``report`` that each differ from it in one sentence's negation ("No X." <-> "X.").

    They are the hardest case the text affinity must separate: everything else in the report is the same."""
    sentences = split_sentences(report)
    variants = []
    for index, sentence in enumerate(sentences):
        match = _NEGATION_START.match(sentence)
        if match:
            rest = sentence[match.end() :]
            flipped = rest[:1].upper() + rest[1:]
        else:
            flipped = "No " + sentence[:1].lower() + sentence[1:]
        variants.append(" ".join(sentences[:index] + [flipped] + sentences[index + 1 :]))
        if len(variants) == limit:
            break
    return variants


def off_diagonal_positive_fraction(affinity: torch.Tensor) -> float:
    """Mean affinity between different reports of ``(B, B)`` ``affinity`` (for 0/1 affinities: the fraction of
    report pairs treated as positives). Near 1 the targets are uniform and a collapsed embedding is optimal."""
    size = affinity.shape[0]
    if size < 2:
        return 0.0
    return float((affinity.sum() - affinity.diagonal().sum()) / (size * (size - 1)))


class ReportAffinity:
    """``report_keys`` ``(B, F)`` -> affinity ``(B, B)``; the keys are label vectors or pooled text vectors.

    Args:
        source: one of :data:`AFFINITY_SOURCES`; ``"auto"`` must be resolved by :meth:`prepare` before use.
        similarity_threshold: the ``"text"`` threshold; None until :meth:`calibrate` sets it (a number given here
            is used as is and calibration leaves it alone).
    """

    def __init__(self, source: str = "auto", similarity_threshold: float | None = None) -> None:
        if source not in AFFINITY_SOURCES:
            raise ValueError(f"report_affinity: expected one of {AFFINITY_SOURCES}, found {source!r}")
        self.source = source
        self.similarity_threshold = similarity_threshold

    @property
    def needs_labels(self) -> bool:
        return self.source in LABEL_SOURCES

    @property
    def needs_text(self) -> bool:
        return self.source == "text"

    def prepare(self, rows: Sequence[dict], embed_reports: Callable[[list[str]], torch.Tensor] | None = None) -> str:
        """Resolve ``"auto"`` from the training ``rows`` and calibrate the text threshold when the source is text.

        ``embed_reports``: report strings -> ``(B, F)`` vectors (the model's :meth:`report_vectors`). Returns the
        resolved source."""
        if self.source == "auto":
            self.source = "labels" if rows and all("label_vector" in r for r in rows) else "text"
        elif self.needs_labels and not all("label_vector" in r for r in rows):
            missing = next(i for i, r in enumerate(rows) if "label_vector" not in r)
            raise ValueError(
                f"report_affinity '{self.source}': expected a 'label_vector' in every training row, "
                f"found none in row #{missing} (use 'text' or 'auto' for datalists without labels)"
            )
        if self.needs_text and self.similarity_threshold is None:
            if embed_reports is None:
                raise ValueError("report_affinity 'text': expected a report embedder to calibrate the threshold")
            self.calibrate(embed_reports, [r["report"] for r in rows])
        logger.info(
            f"TCL report affinity: {self.source}"
            + (f", threshold {self.similarity_threshold:.6f}" if self.needs_text else "")
        )
        return self.source

    @torch.no_grad()
    def calibrate(
        self, embed_reports: Callable[[list[str]], torch.Tensor], reports: Sequence[str], sample: int = 64
    ) -> float:
        """Set the text threshold halfway between 1 (identical reports) and the highest similarity between a report
        and a copy with one sentence's negation flipped, over the first ``sample`` training reports."""
        reports = list(reports[:sample])
        highest = -1.0
        for report in reports:
            variants = negation_variants(report)
            if not variants:
                continue
            vectors = F.normalize(embed_reports([report, *variants]).float(), dim=-1)
            highest = max(highest, float((vectors[1:] @ vectors[0]).max()))
        # identical reports have cosine 1 up to rounding (~1e-7), so the threshold never goes above 1 - 1e-6
        self.similarity_threshold = min(0.5 * (1.0 + highest), 1.0 - 1e-6)
        if highest >= self.similarity_threshold:
            logger.warning(
                "report_affinity 'text': the text encoder gives a one-negation variant the same vector as its report, "
                "so negated findings will not separate reports; use label vectors ('labels') if the data has them"
            )
        logger.info(
            f"report_affinity 'text': highest one-negation similarity {highest:.6f} over {len(reports)} training "
            f"reports -> threshold {self.similarity_threshold:.6f}"
        )
        return self.similarity_threshold

    def __call__(self, report_keys: torch.Tensor | None, num_reports: int, device: torch.device | str) -> torch.Tensor:
        identity = torch.eye(num_reports, device=device)
        if self.source == "none":
            return identity
        if self.source == "auto":
            raise RuntimeError("report_affinity 'auto' was never resolved: call ReportAffinity.prepare(rows) first")
        if report_keys is None:
            raise ValueError(f"report_affinity '{self.source}': expected report keys, found None")
        keys = report_keys.detach().float()
        if self.source == "labels":
            affinity = ((keys[:, None, :] - keys[None, :, :]).abs() < 0.5).all(-1).float()
        elif self.source == "label_overlap":
            present = (keys > 0.5).float()
            intersection = present @ present.T
            union = present.sum(1, keepdim=True) + present.sum(1) - intersection
            affinity = torch.where(union > 0, intersection / union.clamp_min(1.0), torch.ones_like(union))
        else:
            if self.similarity_threshold is None:
                raise RuntimeError(
                    "report_affinity 'text': the threshold was never calibrated (ReportAffinity.prepare)"
                )
            keys = F.normalize(keys, dim=-1)
            affinity = (keys @ keys.T >= self.similarity_threshold).float()
        return torch.maximum(affinity, identity)
