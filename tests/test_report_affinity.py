"""TCL's report affinity on reports of the length and shape real ones have (100-300 words, mostly negated normals).

The lexical fingerprint this replaced called "no pleural effusion" vs "moderate right pleural effusion" in a
10-sentence report the same report (cosine 0.975): these tests pin the cases it got wrong."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from custom.data.synthetic_ct import Finding
from custom.data.synthetic_reports import write_report
from custom.losses.report_affinity import (
    ReportAffinity,
    ReportAffinityError,
    label_statistics,
    negation_variants,
    off_diagonal_positive_fraction,
)
from custom.runtime.errors import one_line_message
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


# --- coarse labels are refused (#26) --------------------------------------------------------------------------------


def _coarse_label_rows(count: int = 100, unlabelled: float = 0.7, width: int = 11) -> list[dict]:
    """The issue's label set: an 11-term labeler that leaves 70 % of real reports with an all-zero vector."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(count):
        vector = [0] * width
        if index >= round(unlabelled * count):
            vector[int(rng.integers(width))] = 1
        rows.append({"report": f"Report {index}. No pleural effusion.", "label_vector": vector})
    return rows


def test_label_statistics_count_unlabelled_studies_and_positive_pairs_as_a_brute_force_count_does():
    rng = np.random.default_rng(2)
    vectors = torch.tensor(rng.random((60, 4)) < 0.3, dtype=torch.float32)
    for source in ("labels", "label_overlap"):
        unlabelled, positives = label_statistics(vectors, source)
        affinity = ReportAffinity(source)(vectors, 60, "cpu")
        assert unlabelled == pytest.approx(float((vectors.sum(1) == 0).float().mean()))
        assert positives == pytest.approx(
            off_diagonal_positive_fraction(affinity), abs=1e-6
        )  # the affinity is summed in float32


@pytest.mark.parametrize("source", ["labels", "label_overlap"])
def test_explicit_label_affinity_refuses_labels_that_leave_most_studies_unlabelled(source):
    rows = _coarse_label_rows()
    unlabelled, positives = label_statistics(torch.tensor([r["label_vector"] for r in rows], dtype=torch.float32))
    assert unlabelled == pytest.approx(0.7) and positives > 0.3  # the premise: 70 % all-zero, most pairs "equal"
    with pytest.raises(ReportAffinityError) as raised:
        ReportAffinity(source).prepare(rows)
    message = str(raised.value)
    assert "\n" not in message and f"report_affinity '{source}'" in message
    assert "0.700 of 100 studies have no label (max_unlabelled_fraction 0.5)" in message
    assert "max_label_pair_positive_fraction 0.3" in message
    assert one_line_message(RuntimeError("wrapped")) is None
    wrapped = RuntimeError("Failed to evaluate ConfigExpression")
    wrapped.__cause__ = raised.value
    assert one_line_message(wrapped) == message  # a bundle run ends with exactly this line


def test_auto_falls_back_to_text_on_coarse_labels_and_says_why(caplog):
    rows = _coarse_label_rows()
    with caplog.at_level("WARNING", logger="custom.losses.report_affinity"):
        source = ReportAffinity("auto").prepare(rows, lambda reports: torch.eye(len(reports), 128))
    assert source == "text"
    assert any("'auto': text, not labels" in r.message and "0.700 of 100 studies" in r.message for r in caplog.records)


def test_the_synthetic_worlds_labels_are_fine_enough_for_the_label_affinity():
    from custom.data.synthetic_ct import FINDING_NAMES, sample_findings

    rng = np.random.default_rng(0)
    draws = [{f.name for f in sample_findings(rng)} for _ in range(2000)]
    rows = [{"report": "", "label_vector": [int(n in d) for n in FINDING_NAMES]} for d in draws]
    vectors = torch.tensor([r["label_vector"] for r in rows], dtype=torch.float32)
    for source in ("labels", "label_overlap"):
        unlabelled, positives = label_statistics(vectors, source)
        print(f"\nsynthetic world, {source}: unlabelled {unlabelled:.3f}, pair positive fraction {positives:.3f}")
        assert unlabelled < 0.3 and positives < 0.2
    assert ReportAffinity("auto").prepare(rows) == "labels"


# --- calibration reads whole reports (#26) --------------------------------------------------------------------------


def _sentence_stub(late_from: int = 20, late_weight: float = 0.05, width: int = 256):
    """A report embedder that sums one pseudo-random direction per (position, sentence), with sentences from
    ``late_from`` on weighted ``late_weight``: a negation there barely moves the vector, as a late sentence barely
    moves a long report's pooled vector."""
    import zlib

    def direction(position: int, sentence: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(zlib.crc32(f"{position}|{sentence}".encode()))
        return torch.randn(width, generator=generator)

    def embed(reports: list[str]) -> torch.Tensor:
        from custom.transforms.report_text import split_sentences

        return torch.stack(
            [
                sum(
                    (1.0 if k < late_from else late_weight) * direction(k, s)
                    for k, s in enumerate(split_sentences(report))
                )
                for report in reports
            ]
        )

    return embed


def test_calibration_negates_every_sentence_of_an_evenly_spread_sample(caplog):
    from custom.data.synthetic_ct import sample_findings

    rng = np.random.default_rng(1)
    reports = [clean_report(write_report(sample_findings(rng), rng, style="long")) for _ in range(100)]
    embed = _sentence_stub()
    affinity = ReportAffinity("text")
    with caplog.at_level("INFO", logger="custom.losses.report_affinity"):
        affinity.calibrate(embed, reports, progress=False)
    assert any("every sentence of 64 training reports" in r.message for r in caplog.records)
    last = reports[-1]  # past the first 64: only an evenly spread sample reaches it
    variants = negation_variants(last)
    assert len(variants) >= 21
    matrix = affinity(embed([last, *variants]), 1 + len(variants), "cpu")
    # a negation at sentence 20 or later (of 25-35) moves the vector least; calibration must have seen it
    assert matrix[0, 1:].sum() == 0, f"{int(matrix[0, 1:].sum())} one-negation copies called the same report"


# --- the text affinity in train mode (#26) --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_mode_model(offline_text_encoder):
    """A T3D model whose text encoder partly trains (1 of 2 layers, dropout 0.1), as ``text_frozen_layers: 6`` of
    12 in ``train.json``, with a text affinity calibrated on long training reports."""
    from custom.data.synthetic_ct import sample_findings
    from custom.networks.t3d import T3DModel
    from custom.networks.text_encoder import HFTextEncoder
    from custom.networks.unet_backbone import BasicUNetBackbone

    torch.manual_seed(0)
    encoder = HFTextEncoder(offline_text_encoder, frozen_layers=1, max_length=32, pooling="mean")
    assert not encoder.fully_frozen and encoder.model.config.hidden_dropout_prob > 0
    model = T3DModel(BasicUNetBackbone(features=(4, 4, 8, 16, 32, 4)), encoder, embed_dim=16, interactor_heads=4)
    rng = np.random.default_rng(3)
    training = [clean_report(write_report(sample_findings(rng), rng)) for _ in range(16)]
    affinity = ReportAffinity("text")
    affinity.prepare([{"report": r} for r in training], model.report_vectors)
    return model.train(), affinity


def _one_tcl_step(model, affinity, reports: list[str]) -> dict:
    """One T3DTrainer step (TCL only, learning rate 0) on ``reports`` and random crops; returns the step's terms."""
    from custom.engines.pretraining_trainer import step_terms
    from custom.engines.t3d_trainer import T3DTrainer
    from custom.losses.tcl import TextInformedContrastiveLoss
    from custom.losses.tir import MaskedRestorationLoss
    from custom.transforms.corruption import BlockMaskCorruption

    torch.manual_seed(1)
    batch = {"image": torch.rand(len(reports), 1, 1, 32, 32, 32), "report": reports}
    trainer = T3DTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[batch],
        network=model,
        optimizer=torch.optim.AdamW(model.parameters(), lr=0.0),
        tcl_loss=TextInformedContrastiveLoss(affinity, embed_reports=model.report_vectors),
        tir_loss=MaskedRestorationLoss(),
        corruption=BlockMaskCorruption(block_size=8),
        tir_weight=0.0,
        epoch_length=1,
        progress_bar=False,
    )
    trainer.run()
    return step_terms(trainer.state.output)


def test_identical_reports_are_positives_in_a_train_mode_step(train_mode_model):
    model, affinity = train_mode_model
    terms = _one_tcl_step(model, affinity, [clean_report(NORMAL_CHEST)] * 4)
    assert terms["positives"] == 1.0  # 4 identical reports: every pair a positive
    assert model.text_encoder.model.training and model.text_encoder.model.encoder.layer[1].training  # mode restored


def test_identical_reports_that_are_not_positives_stop_the_run_in_one_line(train_mode_model):
    model, affinity = train_mode_model
    reports = [clean_report(NORMAL_CHEST)] * 4
    torch.manual_seed(2)
    with torch.no_grad():  # the keys the affinity used to get: the train-mode forward's pooled vectors, with dropout
        dropout_keys = model.text_encoder(reports).pooled
    keys = torch.nn.functional.normalize(dropout_keys, dim=-1)
    print(f"\ntrain-mode cosine of identical reports {float((keys @ keys.T).min()):.4f}, "
          f"threshold {affinity.similarity_threshold:.6f}")  # fmt: skip
    with pytest.raises(ReportAffinityError) as raised:
        affinity.check_identical_reports(reports, dropout_keys)
    message = str(raised.value)
    assert "\n" not in message and "report_affinity 'text'" in message and "positive fraction 0.000" in message
    assert f"similarity_threshold {affinity.similarity_threshold:.6f}" in message and "cosine 0." in message
    affinity.check_identical_reports(reports, model.report_vectors(reports))  # as calibrated: no error


def test_tcl_names_the_batch_keys_it_needs_and_refuses_a_text_affinity_without_an_embedder(train_mode_model):
    from custom.losses.tcl import TextInformedContrastiveLoss

    model, affinity = train_mode_model
    assert TextInformedContrastiveLoss(ReportAffinity("none")).required_batch_keys == ()
    assert TextInformedContrastiveLoss(ReportAffinity("label_overlap")).required_batch_keys == ("label_vector",)
    with pytest.raises(RuntimeError, match="'auto' was never resolved"):
        assert TextInformedContrastiveLoss(ReportAffinity("auto")).required_batch_keys
    loss = TextInformedContrastiveLoss(affinity)  # calibrated, but never given the model's report_vectors
    assert loss.required_batch_keys == ("report",)
    embeddings = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    with pytest.raises(ReportAffinityError, match="'text': expected tcl_loss embed_reports, found none"):
        loss(embeddings, embeddings, torch.arange(2), torch.tensor(10.0), report=["a.", "b."])


def test_the_temperature_is_bounded_once_after_each_optimiser_step(train_mode_model):
    """The step runs with the scale it finds (200 here), then the trainer clamps the parameter to log(100): the one
    place the bound is applied. A start below 0.01 is refused when the model is built."""
    from custom.networks.t3d import LOGIT_SCALE_MAX, T3DModel
    from custom.networks.unet_backbone import BasicUNetBackbone

    model, affinity = train_mode_model
    before = model.logit_scale.detach().clone()
    model.logit_scale.data.fill_(math.log(200.0))
    try:
        terms = _one_tcl_step(model, affinity, [clean_report(NORMAL_CHEST), clean_report(EFFUSION)])
        assert terms["temperature"] == pytest.approx(1 / 200)
        assert float(model.logit_scale) == pytest.approx(LOGIT_SCALE_MAX)
    finally:
        model.logit_scale.data.copy_(before)
    with pytest.raises(ValueError, match=r"temperature: expected at least 0\.01 .*found 0\.005"):
        T3DModel(BasicUNetBackbone(features=(4, 4, 8, 16, 32, 4)), model.text_encoder, temperature=0.005)
