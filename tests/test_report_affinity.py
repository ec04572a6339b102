"""TCL's report affinity on reports of the length and shape real ones have (100-300 words, mostly negated normals).

The lexical fingerprint this replaced called "no pleural effusion" vs "moderate right pleural effusion" in a
10-sentence report the same report (cosine 0.975): these tests pin the cases it got wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from custom.data.synthetic_ct import Finding
from custom.data.synthetic_reports import write_report
from custom.losses.report_affinity import ReportAffinity, negation_variants, off_diagonal_positive_fraction
from custom.transforms.report_text import clean_report

NORMAL_CHEST = (
    "Contrast-enhanced CT of the chest. The lungs are clear. No pulmonary nodules or masses. No pleural effusion. "
    "No pneumothorax. The heart is normal in size. No pericardial effusion. No mediastinal or hilar lymphadenopathy. "
    "The thoracic aorta is normal in calibre. The visualised upper abdomen is unremarkable. "
    "No acute osseous abnormality."
)
EFFUSION = NORMAL_CHEST.replace("No pleural effusion.", "Moderate right pleural effusion.")
NODULE = NORMAL_CHEST.replace("No pulmonary nodules or masses.", "A 9 mm spiculated nodule in the right upper lobe.")


def _rows(reports: list[str], label_vectors: list[list[int]] | None = None) -> list[dict]:
    rows = [{"report": clean_report(r)} for r in reports]
    for row, vector in zip(rows, label_vectors or []):
        row["label_vector"] = vector
    return rows


def test_auto_uses_label_vectors_when_every_row_has_them():
    affinity = ReportAffinity("auto")
    assert affinity.prepare(_rows([NORMAL_CHEST, EFFUSION], [[0, 0], [0, 1]])) == "labels"
    assert ReportAffinity("auto").prepare(_rows([NORMAL_CHEST]), lambda r: torch.eye(len(r), 4)) == "text"
    with pytest.raises(ValueError, match="label_vector.*row #1"):
        ReportAffinity("labels").prepare([{"report": "a.", "label_vector": [0]}, {"report": "b."}])


def test_long_reports_differing_in_one_finding_are_not_positives_under_labels():
    rng = np.random.default_rng(0)
    effusion = Finding("pleural effusion", "right")
    nodule = Finding("nodule", "right", "upper", 9.0)
    reports = [
        write_report([], rng),
        write_report([], rng),
        write_report([effusion], rng),
        write_report([effusion, nodule], rng),
    ]
    assert min(len(r.split()) for r in reports) >= 90  # the long style is what is tested here
    vectors = torch.tensor([[0, 0], [0, 0], [1, 0], [1, 1]], dtype=torch.float32)  # (effusion, nodule)
    affinity = ReportAffinity("labels")(vectors, 4, "cpu")
    assert affinity[0, 1] == 1  # two normal studies: positives, however differently worded
    assert affinity[0, 2] == 0 and affinity[2, 3] == 0  # one finding added, or present vs negated: negatives
    assert off_diagonal_positive_fraction(affinity) == pytest.approx(2 / 12)


@pytest.fixture(scope="module")
def text_affinity(offline_text_encoder):
    from custom.networks.text_encoder import HFTextEncoder
    from custom.networks.text_whitening import TextWhitening

    torch.manual_seed(0)
    encoder = HFTextEncoder(offline_text_encoder, frozen_layers=-1, max_length=32, pooling="mean")
    rng = np.random.default_rng(1)
    from custom.data.synthetic_ct import sample_findings

    training = [clean_report(write_report(sample_findings(rng), rng)) for _ in range(96)]
    whitening = TextWhitening(encoder.hidden_size, 32)
    whitening.fit(encoder(training).pooled)

    def report_vectors(reports: list[str]) -> torch.Tensor:
        return whitening(encoder(reports).pooled)

    affinity = ReportAffinity("text")
    affinity.prepare([{"report": r} for r in training], report_vectors)
    return affinity, report_vectors


def test_text_affinity_separates_a_changed_or_negated_finding_and_keeps_identical_reports(text_affinity):
    affinity, report_vectors = text_affinity
    assert affinity.similarity_threshold is not None and affinity.similarity_threshold < 1.0
    reports = [clean_report(r) for r in (NORMAL_CHEST, NORMAL_CHEST, EFFUSION, NODULE)]
    matrix = affinity(report_vectors(reports), 4, "cpu")
    assert matrix[0, 1] == 1  # identical normal reports
    assert matrix[0, 2] == 0 and matrix[0, 3] == 0 and matrix[2, 3] == 0  # effusion / nodule change the report
    report = clean_report(NORMAL_CHEST)
    variants = negation_variants(report, limit=20)
    assert len(variants) >= 8
    flipped = affinity(report_vectors([report, *variants]), 1 + len(variants), "cpu")
    assert flipped[0, 1:].sum() == 0  # no one-negation variant is a positive of the report
