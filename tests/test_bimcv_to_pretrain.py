"""Curated BIMCV-VLP pairs feed the pre-training bundle directly (issue 3's acceptance, across both tools)."""

from __future__ import annotations

import os

import numpy as np
from conftest import run_bundle

from t3d_tools.curation.bimcv.curate import curate
from t3d_tools.curation.bimcv.miniature import make_miniature


def test_curated_datalist_trains_t3d_pretrain_for_two_steps(tmp_path, offline_text_encoder):
    root = str(tmp_path / "bimcv" / "covid19_posi")
    make_miniature(root, seed=0)
    out = str(tmp_path / "bimcv_vlp")
    curate(
        root, out, translation="column:Report_en", min_positive=2, val_fraction=0.2, test_fraction=0.2, progress=False
    )
    datalist = os.path.join(out, "pairs_datalist.json")
    run_bundle(
        "t3d_pretrain",
        ["train.json", "cpu_toy.json"],
        str(tmp_path / "run"),
        dataset_dir=out,
        datalist=datalist,
        cache_dir=str(tmp_path / "cache"),
        text_encoder_name=offline_text_encoder,
        batch_size=2,
        max_epochs=1,
        epoch_length=2,
        val_interval=1,
    )
    history = __import__("json").load(open(tmp_path / "run" / "runs" / "loss_history.json", encoding="utf-8"))
    assert len(history["iteration"]) == 2 and np.isfinite(history["loss"]).all()
    assert os.path.isfile(tmp_path / "run" / "models" / "image_encoder.pt")
