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
- ``"auto"`` (the bundles' default): ``"labels"`` when every training row carries a ``label_vector`` and the labels
  are fine enough to tell studies apart (see below), else ``"text"``.

Coarse labels are refused. A labeler with a small vocabulary leaves most studies with an all-zero vector and makes
studies with different findings "equal" (on 1,500 real English reports the curation's 11-term labeler left 70.5 % of
studies unlabelled and made 50.7 % of all pairs positives). :meth:`ReportAffinity.prepare` measures both numbers on
the training rows; above ``max_unlabelled_fraction`` or ``max_label_pair_positive_fraction`` an explicit
``"labels"``/``"label_overlap"`` stops the run in one line and ``"auto"`` falls back to ``"text"``, saying why.

The ``"text"`` keys must be computed the way the threshold was calibrated: the model's
:meth:`~custom.networks.t3d.T3DModel.report_vectors` (eval mode, no gradients, no autocast), never the train-mode
forward, whose dropout puts identical reports at cosine ~0.92 against a threshold ~0.999996.
:meth:`ReportAffinity.check_identical_reports` stops a run whose identical reports are not positives.

A lexical word/bigram fingerprint was the source before: on 100-300-word reports it called "no pleural effusion" vs
"moderate right pleural effusion" the same report (cosine 0.975), so it is gone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from custom.errors import OneLineError
from custom.transforms.report_text import split_sentences

__all__ = [
    "AFFINITY_SOURCES",
    "CALIBRATION_SAMPLE",
    "ReportAffinity",
    "ReportAffinityError",
    "label_statistics",
    "negation_variants",
    "off_diagonal_positive_fraction",
]

AFFINITY_SOURCES: tuple[str, ...] = ("auto", "labels", "label_overlap", "text", "none")
LABEL_SOURCES: tuple[str, ...] = ("labels", "label_overlap")

logger = logging.getLogger(__name__)

_NEGATION_START = re.compile(r"^(no|there is no|there are no)\s+", re.IGNORECASE)

#: training reports the ``"text"`` threshold is calibrated on (spread evenly over the training rows); every sentence
#: of each is negated in turn, so a 32-sentence report adds 32 encodings (~2,000 for 64 long reports)
CALIBRATION_SAMPLE = 64


class ReportAffinityError(OneLineError, ValueError):
    """A report affinity that cannot do its job on this data (coarse labels, identical reports that are not
    positives); the message is one line naming ``report_affinity`` and the measured numbers."""


def negation_variants(report: str, limit: int | None = None) -> list[str]:
    """Copies of ``report`` that each differ from it in one sentence's negation ("No X." <-> "X."): one per sentence,
    in order, or the first ``limit``.

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
        if limit is not None and len(variants) == limit:
            break
    return variants


def off_diagonal_positive_fraction(affinity: torch.Tensor) -> float:
    """Mean affinity between different reports of ``(B, B)`` ``affinity`` (for 0/1 affinities: the fraction of
    report pairs treated as positives). Near 1 the targets are uniform and a collapsed embedding is optimal."""
    size = affinity.shape[0]
    if size < 2:
        return 0.0
    return float((affinity.sum() - affinity.diagonal().sum()) / (size * (size - 1)))


def label_statistics(label_vectors: torch.Tensor, source: str = "labels") -> tuple[float, float]:
    """``(N, C)`` multi-hot label vectors of N studies -> (fraction of studies with no label at all, mean affinity
    under ``source`` over the N (N - 1) ordered pairs of different studies: for ``"labels"`` the fraction of pairs
    whose vectors are equal, i.e. that TCL would treat as positives).

    Counted over the distinct vectors (weighted by how many studies share each), so it costs ``O(U^2)`` for U distinct
    vectors, not ``O(N^2)``."""
    present = (label_vectors.float() > 0.5).float()
    count = present.shape[0]
    if count == 0:
        return 0.0, 0.0
    unlabelled = float((present.sum(1) == 0).float().mean())
    if count < 2:
        return unlabelled, 0.0
    distinct, counts = torch.unique(present, dim=0, return_counts=True)
    affinity = ReportAffinity(source)(distinct, distinct.shape[0], "cpu")  # 1 on the diagonal: equal vectors
    weights = counts.double()
    pair_mass = float(weights @ affinity.double() @ weights) - count  # every study paired with itself removed
    return unlabelled, pair_mass / (count * (count - 1))


class ReportAffinity:
    """``report_keys`` ``(B, F)`` -> affinity ``(B, B)``; the keys are label vectors or pooled text vectors.

    Args:
        source: one of :data:`AFFINITY_SOURCES`; ``"auto"`` must be resolved by :meth:`prepare` before use.
        similarity_threshold: the ``"text"`` threshold; None until :meth:`calibrate` sets it (a number given here
            is used as is and calibration leaves it alone).
        max_unlabelled_fraction: label sources are refused (``"auto"``: not chosen) when more than this fraction of
            training studies has an all-zero label vector. 0.5: beyond it the labels say nothing about most studies,
            and those studies alone already make more than 0.25 of all pairs positives.
        max_label_pair_positive_fraction: label sources are refused (``"auto"``: not chosen) when more than this
            fraction of pairs of different training studies are positives (equal vectors; ``"label_overlap"``: the
            mean soft weight). 0.3: every report of a batch of 4 then counts on average 1.9 of the 4 reports as its
            targets (itself included), and a batch's expected positive fraction is 0.6 of the trainer's
            ``max_positive_fraction`` warning at 0.5 (targets near uniform favour a collapsed embedding).
            The synthetic world's labels are well inside both: about a quarter of studies normal, under 0.1 of pairs
            positive (``tests/test_report_affinity.py`` prints them).
    """

    def __init__(
        self,
        source: str = "auto",
        similarity_threshold: float | None = None,
        max_unlabelled_fraction: float = 0.5,
        max_label_pair_positive_fraction: float = 0.3,
    ) -> None:
        if source not in AFFINITY_SOURCES:
            raise ReportAffinityError(f"report_affinity: expected one of {AFFINITY_SOURCES}, found {source!r}")
        self.source = source
        self.similarity_threshold = similarity_threshold
        self.max_unlabelled_fraction = max_unlabelled_fraction
        self.max_label_pair_positive_fraction = max_label_pair_positive_fraction

    @property
    def needs_labels(self) -> bool:
        return self.source in LABEL_SOURCES

    @property
    def needs_text(self) -> bool:
        return self.source == "text"

    def prepare(self, rows: Sequence[dict], embed_reports: Callable[[list[str]], torch.Tensor] | None = None) -> str:
        """Resolve ``"auto"`` from the training ``rows``, refuse coarse labels, and calibrate the text threshold when
        the source is text.

        ``embed_reports``: report strings -> ``(B, F)`` vectors (the model's :meth:`report_vectors`). Returns the
        resolved source."""
        labelled = bool(rows) and all("label_vector" in r for r in rows)
        if self.source == "auto":
            self.source = "labels" if labelled else "text"
            if labelled:
                coarse = self._coarse_labels(rows)
                if coarse:
                    logger.warning(f"report_affinity 'auto': text, not labels: {coarse}")
                    self.source = "text"
        elif self.needs_labels:
            if not labelled:
                missing = next(i for i, r in enumerate(rows) if "label_vector" not in r)
                raise ReportAffinityError(
                    f"report_affinity '{self.source}': expected a 'label_vector' in every training row, "
                    f"found none in row #{missing} (use 'text' or 'auto' for datalists without labels)"
                )
            coarse = self._coarse_labels(rows)
            if coarse:
                raise ReportAffinityError(f"report_affinity '{self.source}': {coarse}; use 'text' or 'auto'")
        if self.needs_text and self.similarity_threshold is None:
            if embed_reports is None:
                raise ReportAffinityError(
                    "report_affinity 'text': expected a report embedder to calibrate the threshold"
                )
            self.calibrate(embed_reports, [r["report"] for r in rows])
        logger.info(
            f"TCL report affinity: {self.source}"
            + (f", threshold {self.similarity_threshold:.6f}" if self.needs_text else "")
        )
        return self.source

    def _coarse_labels(self, rows: Sequence[dict]) -> str | None:
        """Why the training rows' label vectors are too coarse for a label affinity (one line with the measured
        numbers), or None when they are fine."""
        source = self.source if self.needs_labels else "labels"
        vectors = torch.tensor([r["label_vector"] for r in rows], dtype=torch.float32)
        unlabelled, pair_positives = label_statistics(vectors, source)
        if unlabelled <= self.max_unlabelled_fraction and pair_positives <= self.max_label_pair_positive_fraction:
            return None
        return (
            f"the training label vectors are too coarse to tell studies apart: {unlabelled:.3f} of "
            f"{len(rows)} studies have no label (max_unlabelled_fraction {self.max_unlabelled_fraction}) and "
            f"{pair_positives:.3f} of pairs of different studies would be positives "
            f"(max_label_pair_positive_fraction {self.max_label_pair_positive_fraction})"
        )

    @torch.no_grad()
    def calibrate(
        self,
        embed_reports: Callable[[list[str]], torch.Tensor],
        reports: Sequence[str],
        sample: int = CALIBRATION_SAMPLE,
        batch_size: int = 32,
        progress: bool = True,
    ) -> float:
        """Set the text threshold halfway between 1 (identical reports) and the highest similarity between a report
        and a copy of it with one sentence's negation flipped, over every sentence of ``sample`` training reports
        spread evenly over ``reports``. Report and copies are encoded ``batch_size`` strings at a time.

        Every sentence, not the first few: in a long report a finding's negation late in the text (sentence 20 of 32)
        moves a pooled vector least, so it is the case that sets the threshold."""
        reports = list(reports)
        if len(reports) > sample:
            reports = [reports[i] for i in np.linspace(0, len(reports) - 1, sample).round().astype(int)]
        texts, owners = [], []  # owner: (index of the report in `reports`, True for the report itself)
        for index, report in enumerate(reports):
            variants = negation_variants(report)
            if variants:
                texts += [report, *variants]
                owners += [(index, True)] + [(index, False)] * len(variants)
        from tqdm import tqdm

        vectors = [
            F.normalize(embed_reports(texts[start : start + batch_size]).float(), dim=-1)
            for start in tqdm(
                range(0, len(texts), batch_size), desc="calibrating report affinity", unit="batch", disable=not progress
            )
        ]
        is_variant = torch.tensor([not original for _, original in owners], dtype=torch.bool)
        highest = -1.0
        if vectors:
            vectors = torch.cat(vectors)
            row_of = {index: row for row, (index, original) in enumerate(owners) if original}
            similarity = (vectors * vectors[[row_of[index] for index, _ in owners]]).sum(-1)
            highest = float(similarity[is_variant].max())
        # identical reports have cosine 1 up to rounding (~1e-7), so the threshold never goes above 1 - 1e-6
        self.similarity_threshold = min(0.5 * (1.0 + highest), 1.0 - 1e-6)
        if highest >= self.similarity_threshold:
            logger.warning(
                "report_affinity 'text': the text encoder gives a one-negation variant the same vector as its report, "
                "so negated findings will not separate reports; use label vectors ('labels') if the data has them"
            )
        logger.info(
            f"report_affinity 'text': highest one-negation similarity {highest:.6f} over every sentence of "
            f"{len(reports)} training reports ({int(is_variant.sum())} negation variants) -> threshold "
            f"{self.similarity_threshold:.6f}"
        )
        return self.similarity_threshold

    def check_identical_reports(self, reports: Sequence[str], report_keys: torch.Tensor) -> None:
        """Stop the run when a batch's identical report strings are not positives of each other under ``"text"``.

        Identical reports are the one case whose answer is known; if they are not positives the keys were not
        computed the way the threshold was calibrated (e.g. a train-mode forward with dropout), and the affinity is
        silently off. ``report_keys`` ``(B, F)`` are the keys of ``reports``."""
        if not self.needs_text:
            return
        first: dict[str, int] = {}
        pairs = []
        for index, report in enumerate(reports):
            if report in first:
                pairs.append((first[report], index))
            else:
                first[report] = index
        if not pairs:
            return
        left, right = torch.tensor(pairs).T
        affinity = self(report_keys, len(reports), report_keys.device)
        positive = float(affinity[left, right].mean())
        if positive < 1.0:
            keys = F.normalize(report_keys.detach().float(), dim=-1)
            lowest = float((keys[left] * keys[right]).sum(-1).min())
            raise ReportAffinityError(
                f"report_affinity 'text': identical reports of a training batch are not positives (positive fraction "
                f"{positive:.3f} over {len(pairs)} pair(s)): their report vectors reach cosine {lowest:.6f} against "
                f"similarity_threshold {self.similarity_threshold:.6f}; the affinity keys must be computed as "
                f"calibrated (T3DModel.report_vectors: eval mode, no gradients)"
            )

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
