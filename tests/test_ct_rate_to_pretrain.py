"""Issue #28's acceptance, on both miniatures: curate -> integrity check -> 2 pre-training steps -> CT-CLIP's
zero-shot and retrieval metrics files with CT-CLIP's columns (``configs/ct_clip_zero_shot.json``,
``configs/ct_clip_retrieval.json``)."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from conftest import run_bundle

from custom.data.integrity import verify_datalist
from t3d_tools.curation.bimcv_r.curate import curate as curate_bimcv_r
from t3d_tools.curation.bimcv_r.miniature import make_miniature as make_bimcv_r
from t3d_tools.curation.ct_rate.curate import curate as curate_ct_rate
from t3d_tools.curation.ct_rate.layout import CT_RATE_LABELS
from t3d_tools.curation.ct_rate.miniature import make_miniature as make_ct_rate

pytestmark = pytest.mark.slow

CT_CLIP_COLUMNS = ["auroc", "f1", "accuracy", "precision"]


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory) -> str:
    """A small offline BERT with 5 masked-LM steps: these tests check the plumbing to CT-CLIP's files, not what the
    encoder learnt, so they skip the session encoder's 300 steps."""
    from custom.weights.offline_text_encoder import build_offline_text_encoder

    return build_offline_text_encoder(str(tmp_path_factory.mktemp("text") / "encoder"), mlm_steps=5)


def _curated(dataset: str, tmp_path) -> str:
    out = str(tmp_path / f"{dataset}_vlp")
    if dataset == "ct_rate":
        root = str(tmp_path / "ct_rate" / "dataset")
        make_ct_rate(root, train_patients=6, valid_patients=4, seed=0)
        curate_ct_rate(root, out, workers=2, progress=False)
    else:
        root = str(tmp_path / "bimcv_r")
        make_bimcv_r(root, patients=12, seed=0)
        curate_bimcv_r(root, out, min_positive=2, val_fraction=0.25, test_fraction=0.1, progress=False)
    return out


@pytest.mark.parametrize("dataset", ["ct_rate", "bimcv_r"])
def test_curated_set_trains_and_scores_with_ct_clip_columns(dataset, tmp_path, text_encoder):
    out = _curated(dataset, tmp_path)
    datalist = os.path.join(out, "pairs_datalist.json")
    assert verify_datalist(datalist) == []
    common = {
        "dataset_dir": out,
        "datalist": datalist,
        "cache_dir": str(tmp_path / "cache"),
        "text_encoder_name": text_encoder,
        "offline_text_encoder_dir": text_encoder,
        "batch_size": 2,
    }
    root = str(tmp_path / "run")
    toy = ["train.json", "cpu_toy.json"]
    run_bundle("t3d_pretrain", toy, root, max_epochs=1, epoch_length=2, val_interval=1, **common)
    with open(os.path.join(root, "runs", "loss_history.json"), encoding="utf-8") as f:
        history = json.load(f)
    assert len(history["iteration"]) == 2 and np.isfinite(history["loss"]).all()

    run_bundle("t3d_pretrain", toy + ["evaluate_zero_shot.json", "ct_clip_zero_shot.json"], root, eval_bootstrap=20,
               **common)  # fmt: skip
    with open(os.path.join(root, "runs", "ct_clip_zero_shot_metrics.json"), encoding="utf-8") as f:
        zero_shot = json.load(f)
    with open(os.path.join(root, "runs", "ct_clip_zero_shot_per_class.csv"), encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert zero_shot["prompt_file"].endswith("ct_clip_v1.json") and zero_shot["bootstrap"]["unit"] == "patient"
    assert set(CT_CLIP_COLUMNS) <= set(table[0]) and table[-1]["class"] == "macro"
    names = json.load(open(datalist, encoding="utf-8"))["finding_names"]
    assert [r["class"] for r in table[:-1]] == names
    if dataset == "ct_rate":
        assert names == list(CT_RATE_LABELS)
    assert zero_shot["macro"]["classes_scored"] >= 1
    for metric in CT_CLIP_COLUMNS:
        assert 0.0 <= zero_shot["macro"][metric] <= 1.0

    run_bundle("t3d_pretrain", toy + ["evaluate_retrieval.json", "ct_clip_retrieval.json"], root, **common)
    with open(os.path.join(root, "runs", "ct_clip_retrieval_metrics.json"), encoding="utf-8") as f:
        retrieval = json.load(f)
    for k in (5, 10, 50, 100):
        assert 0.0 <= retrieval[f"report_to_volume_recall@{k}"] <= 1.0
    for k in (1, 5, 10, 50):
        assert 0.0 <= retrieval[f"volume_to_volume_map@{k}"] <= 1.0
    assert os.path.isfile(os.path.join(root, "runs", "retrieval_metrics.json"))  # the project's own report too
