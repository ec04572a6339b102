"""Zero-shot classification and report <-> volume retrieval: prompt files, the scoring and the two workflow handlers.

Mechanics are checked on hand-constructed embeddings whose answer is known (a perfect zero-shot AUROC, a perfect
and a known-imperfect retrieval); the last test runs both workflows (``t3d_pretrain`` overlays
``evaluate_zero_shot.json`` / ``evaluate_retrieval.json``) from a real toy pre-training checkpoint and prints the
numbers against chance. That checkpoint (``toy_pretraining``) is shared with ``tests/test_cls_bundle.py``.
"""

from __future__ import annotations

import csv
import json
import math
import os

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine

from custom.data.classification_datalist import read_class_names
from custom.data.synthetic_ct import FINDING_NAMES
from custom.errors import DataError
from custom.evaluation.retrieval import retrieval_metrics
from custom.evaluation.zero_shot import PROMPTS_DIR, class_prompt_embeddings, load_prompt_set, zero_shot_probabilities
from custom.handlers.retrieval_report import RetrievalReport
from custom.handlers.zero_shot_classification import ZeroShotClassification

_PRETRAIN: dict[str, str] = {}


def toy_pretraining(tmp_path_factory) -> str:
    """Bundle root of a real ``t3d_pretrain`` CPU-toy run (2 steps; its synthetic data, text encoder and
    ``models/model.pt``), made once per session."""
    from conftest import run_bundle

    if "root" not in _PRETRAIN:
        root = tmp_path_factory.mktemp("t3d_pretrain_toy_cls")
        run_bundle(
            "t3d_pretrain", ["train.json", "cpu_toy.json"], str(root), max_epochs=1, epoch_length=2, batch_size=2
        )
        _PRETRAIN["root"] = str(root)
    return _PRETRAIN["root"]


# ---------------------------------------------------------------- prompt files
def _prompt_file(tmp_path, classes: dict, defaults: dict | None = None) -> str:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"version": "test-1", "defaults": defaults or {}, "classes": classes}))
    return str(path)


def test_unknown_class_in_a_prompt_file_is_a_one_line_error(tmp_path):
    path = _prompt_file(
        tmp_path, {"nodule": {"positive": ["a"], "negative": ["b"]}, "nodul": {"positive": ["a"], "negative": ["b"]}}
    )
    with pytest.raises(DataError) as raised:
        load_prompt_set(path, ["nodule", "mass"])
    message = str(raised.value)
    assert "\n" not in message
    for part in (path, "'classes'", "['nodule', 'mass']", "unknown class 'nodul'"):
        assert part in message, message


def test_missing_phrasings_and_defaults(tmp_path):
    path = _prompt_file(tmp_path, {"mass": {"positive": ["A mass."], "negative": []}})
    with pytest.raises(DataError, match=r"classes.mass.negative"):
        load_prompt_set(path, ["mass"])
    path = _prompt_file(tmp_path, {"mass": {"positive": ["A mass."], "negative": ["No mass."]}})
    with pytest.raises(DataError, match="expected phrasings for class 'nodule'"):
        load_prompt_set(path, ["mass", "nodule"])  # no defaults to fall back on
    path = _prompt_file(
        tmp_path,
        {"mass": {"positive": ["A mass."], "negative": ["No mass."]}},
        {"positive": ["There is {name}."], "negative": ["No {name}."]},
    )
    prompts = load_prompt_set(path, ["mass", "nodule"])
    assert prompts.prompts["nodule"] == (["There is nodule."], ["No nodule."])
    assert prompts.from_defaults == ["nodule"] and prompts.version == "test-1"


def test_shipped_prompt_sets_fit_the_synthetic_class_list():
    """Both shipped files load against the synthetic engine's class list as it is now (read, not hard-coded)."""
    names = list(FINDING_NAMES)
    tailored = load_prompt_set("findings_v1.json", names)  # a bare name resolves to custom/data/prompts/
    assert tailored.path == os.path.join(PROMPTS_DIR, "findings_v1.json")
    for positive, negative in tailored.prompts.values():
        assert len(positive) >= 2 and len(negative) >= 2  # ensembles, not single prompts
    generic = load_prompt_set(os.path.join(PROMPTS_DIR, "generic_v1.json"), names)
    assert generic.from_defaults == names


# ---------------------------------------------------------------- scoring on known embeddings
_AXES = {"mass": 0, "no mass": 1, "effusion": 2, "no effusion": 3}


def _keyword_embedding(texts: list[str]) -> torch.Tensor:
    """Hand-made text tower: one axis per phrase kind ("no X" checked before "X")."""
    rows = []
    for text in texts:
        key = next(k for k in sorted(_AXES, key=len, reverse=True) if k in text.lower())
        rows.append(F.one_hot(torch.tensor(_AXES[key]), 4).float())
    return torch.stack(rows)


def _two_class_prompts(tmp_path) -> str:
    return _prompt_file(
        tmp_path,
        {
            "mass": {"positive": ["A mass.", "There is a mass."], "negative": ["No mass.", "There is no mass."]},
            "effusion": {"positive": ["An effusion."], "negative": ["No effusion."]},
        },
    )


def test_prompt_ensembles_are_averaged_and_normalised(tmp_path):
    prompts = load_prompt_set(_two_class_prompts(tmp_path), ["mass", "effusion"])
    positive, negative = class_prompt_embeddings(_keyword_embedding, prompts)
    torch.testing.assert_close(positive, torch.eye(4)[[0, 2]])
    torch.testing.assert_close(negative, torch.eye(4)[[1, 3]])
    # a volume on the "mass" axis: P(mass) = softmax(s * [1, 0])[0]; P(effusion) = softmax(s * [0, 0])[0] = 0.5
    probabilities = zero_shot_probabilities(torch.tensor([[1.0, 0, 0, 0]]), positive, negative, scale=2.0)
    torch.testing.assert_close(probabilities, torch.tensor([[1 / (1 + math.exp(-2.0)), 0.5]]))


class _KeywordModel(torch.nn.Module):
    """Stands in for a T3D model in the handlers: ``embed_reports`` and ``logit_scale`` are all they use."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))

    def embed_reports(self, texts: list[str]) -> torch.Tensor:
        return _keyword_embedding(texts)


def _engine(outputs: list[dict]) -> Engine:
    """An evaluator-shaped engine: iteration i yields batch ``{"index": [i]}`` and output ``outputs[i]``."""

    def step(engine: Engine, batch: dict) -> dict:
        return outputs[int(batch["index"][0])]

    engine = Engine(step)
    engine.network = _KeywordModel()
    return engine


def test_zero_shot_handler_scores_a_known_case_perfectly(tmp_path):
    labels = [[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]]
    # volume embedding = sum of the axes of its findings, with the "no X" axis for absent ones (then normalised)
    images = [F.normalize(torch.tensor([[a, 1 - a, b, 1 - b]], dtype=torch.float32), dim=-1) for a, b in labels]
    rows = [{"image": f"v{i}.nii.gz", "label_vector": v} for i, v in enumerate(labels)]
    handler = ZeroShotClassification(
        _two_class_prompts(tmp_path), ["mass", "effusion"], rows, str(tmp_path / "out"), n_bootstrap=50
    )
    engine = _engine([{"image_embedding": e} for e in images])
    handler.attach(engine)
    engine.run([{"index": [i]} for i in range(len(images))], max_epochs=1)
    assert engine.state.metrics["zero_shot_macro_auroc"] == 1.0
    assert handler.report["prompt_version"] == "test-1" and handler.report["logit_scale"] == pytest.approx(10.0)
    for name in (
        "zero_shot_metrics.json",
        "zero_shot_per_class.csv",
        "zero_shot_predictions.csv",
        "zero_shot_roc_curves.png",
    ):
        assert os.path.isfile(tmp_path / "out" / name), name


def test_zero_shot_handler_rejects_a_wrong_length_label_vector(tmp_path):
    rows = [{"image": "v0.nii.gz", "label_vector": [1, 0]}, {"image": "v1.nii.gz", "label_vector": [1]}]
    with pytest.raises(DataError) as raised:
        ZeroShotClassification(
            _two_class_prompts(tmp_path), ["mass", "effusion"], rows, str(tmp_path), split="validation"
        )
    message = str(raised.value)
    assert "\n" not in message and "v1.nii.gz" in message and "'label_vector'" in message and "length 2" in message


def test_retrieval_metrics_known_ranks():
    images = torch.eye(4)
    assert retrieval_metrics(images, images)["report_to_volume_R1"] == 1.0
    # reports 0 and 1 are swapped: their true volume scores 0, tied with two others and below one -> rank 4
    # (ties count against the query); ranks [4, 4, 1, 1]: R@1 1/2, R@5 1, lower median 1
    texts = images[[1, 0, 2, 3]]
    metrics = retrieval_metrics(images, texts, ks=(1, 5))
    assert metrics["report_to_volume_R1"] == 0.5 and metrics["report_to_volume_R5"] == 1.0
    assert metrics["volume_to_report_median_rank"] == 1.0 and metrics["chance_R1"] == 0.25
    metrics = retrieval_metrics(images, texts, ks=(1, 3))
    assert metrics["report_to_volume_R3"] == 0.5


def test_retrieval_handler_writes_metrics_and_sheet(tmp_path):
    rows = []
    for i in range(5):
        path = tmp_path / f"v{i}.nii.gz"
        nib.save(nib.Nifti1Image(np.full((8, 8, 6), -1000 + 200 * i, dtype=np.int16), np.eye(4)), str(path))
        rows.append({"image": str(path), "report": f"report {i}"})
    embeddings = torch.eye(5)
    outputs = [
        {"image_embedding": embeddings[i : i + 1], "text_embedding": embeddings[[(i + 1) % 5 if i < 2 else i]]}
        for i in range(5)
    ]
    handler = RetrievalReport(rows, str(tmp_path / "out"), ks=(1, 5), sheet_queries=3)
    engine = _engine(outputs)
    handler.attach(engine)
    engine.run([{"index": [i]} for i in range(5)], max_epochs=1)
    # reports 0 and 1 point at the wrong volume (their true volume ties at 0 with the others: ranked last, 5)
    assert engine.state.metrics["retrieval_report_to_volume_R1"] == pytest.approx(3 / 5)
    assert handler.metrics["gallery_size"] == 5 and handler.metrics["chance_R5"] == 1.0
    with open(tmp_path / "out" / "retrieval_metrics.json") as f:
        assert json.load(f)["report_to_volume_R5"] == 1.0
    assert os.path.getsize(tmp_path / "out" / "retrieval_sheet.png") > 1000


# ---------------------------------------------------------------- from a toy pre-training checkpoint
def _auroc(labels: list[int], scores: list[float]) -> float | None:
    """P(a positive outscores a negative), ties counting half; None when a class lacks positives or negatives."""
    positives = [s for y, s in zip(labels, scores) if y]
    negatives = [s for y, s in zip(labels, scores) if not y]
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def test_zero_shot_and_retrieval_from_a_toy_pretraining(tmp_path_factory):
    from conftest import run_bundle

    root = toy_pretraining(tmp_path_factory)
    zero_shot = run_bundle(
        "t3d_pretrain", ["train.json", "cpu_toy.json", "evaluate_zero_shot.json"], root, eval_bootstrap=200
    )
    retrieval = run_bundle("t3d_pretrain", ["train.json", "cpu_toy.json", "evaluate_retrieval.json"], root)
    z = zero_shot.parser.get_parsed_content("validate#evaluator").state.metrics
    r = retrieval.parser.get_parsed_content("validate#evaluator").state.metrics
    with open(os.path.join(root, "runs", "zero_shot_metrics.json")) as f:
        report = json.load(f)
    datalist = os.path.join(root, "data", "synthetic_pairs", "pairs_datalist.json")
    assert [e["class"] for e in report["per_class"]] == read_class_names(datalist)
    print(
        f"\n[toy pre-training, 2 steps] zero-shot macro AUROC {z['zero_shot_macro_auroc']:.3f} (chance 0.5, "
        f"95% CI {report['macro']['auroc_ci'][0]:.3f}-{report['macro']['auroc_ci'][1]:.3f}, "
        f"{report['macro']['classes_scored']} classes scored); "
        f"report->volume R@1 {r['retrieval_report_to_volume_R1']:.3f} "
        f"(chance {r['retrieval_chance_R1']:.3f}), R@5 {r['retrieval_report_to_volume_R5']:.3f} "
        f"(chance {r['retrieval_chance_R5']:.3f}), R@10 {r['retrieval_report_to_volume_R10']:.3f} "
        f"(chance {r['retrieval_chance_R10']:.3f}); volume->report R@5 {r['retrieval_volume_to_report_R5']:.3f}; "
        f"median rank {r['retrieval_report_to_volume_median_rank']:.1f} of {r['retrieval_gallery_size']:.0f}"
    )
    # Two steps teach nothing, so no level is asserted: the numbers must be the ones the scores and labels give,
    # which fails if the workflow scores other studies or some twice, or averages other classes.
    with open(datalist) as f:
        validation = json.load(f)["validation"]
    with open(os.path.join(root, "runs", "zero_shot_predictions.csv"), newline="") as f:
        written = sorted(os.path.normpath(row["image"]) for row in csv.DictReader(f))
    base = os.path.dirname(datalist)
    assert written == sorted(os.path.normpath(os.path.join(base, v["image"])) for v in validation)
    handler = next(
        h for h in zero_shot.parser.get_parsed_content("validate#handlers") if isinstance(h, ZeroShotClassification)
    )
    probabilities, labels, _ = handler.scored
    aurocs = [_auroc(labels[:, c].tolist(), probabilities[:, c].tolist()) for c in range(labels.shape[1])]
    scored = [a for a in aurocs if a is not None]
    assert report["macro"]["classes_scored"] == len(scored) > 0
    assert z["zero_shot_macro_auroc"] == pytest.approx(sum(scored) / len(scored), abs=1e-9)
    ci = report["macro"]["auroc_ci"]
    assert ci[0] <= z["zero_shot_macro_auroc"] <= ci[1]
    assert r["retrieval_gallery_size"] == len(validation)
    for k in (1, 5, 10):
        assert r[f"retrieval_chance_R{k}"] == pytest.approx(min(k, len(validation)) / len(validation))
    assert (
        r["retrieval_report_to_volume_R1"] <= r["retrieval_report_to_volume_R5"] <= r["retrieval_report_to_volume_R10"]
    )
    with open(os.path.join(root, "runs", "retrieval_metrics.json")) as f:
        written = json.load(f)
    assert all(written[key] == pytest.approx(r[f"retrieval_{key}"]) for key in ("report_to_volume_R1", "gallery_size"))
    for name in ("zero_shot_roc_curves.png", "retrieval_sheet.png", "retrieval_metrics.json"):
        assert os.path.isfile(os.path.join(root, "runs", name)), name
