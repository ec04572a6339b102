"""The t3d_pretrain bundle end to end at toy size: every overlay trains, resume, evaluate, inference (metadata and
network I/O conformance: ``test_bundle_cards.py``, ``test_verify_net_in_out.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import BUNDLES, run_bundle, updated_parameters

from custom.weights.checkpoint import safe_load

BUNDLE = "t3d_pretrain"
TOY = ["train.json", "cpu_toy.json"]


def _toy_overrides(synthetic_pairs: str, offline_text_encoder: str, **extra) -> dict:
    return {
        "dataset_dir": synthetic_pairs,
        "text_encoder_name": offline_text_encoder,
        "batch_size": 2,
        "max_epochs": 1,
        "epoch_length": 2,
        "val_interval": 1,
        **extra,
    }


def _history(bundle_root) -> dict:
    with open(os.path.join(bundle_root, "runs", "loss_history.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize(
    "overlays",
    [
        [],
        ["ablation_no_tcl.json"],
        ["ablation_no_tir.json"],
        ["ablation_no_interactor.json"],
        ["ablation_unet_backbone.json"],
        ["ablation_clinicalbert.json"],
        ["cpu_toy_swin.json"],
        ["cpu_toy_subvolume.json"],
    ],
    ids=lambda o: "+".join(o) or "toy",
)
def test_every_overlay_trains_two_steps(tmp_path, synthetic_pairs, offline_text_encoder, overlays):
    overrides = _toy_overrides(synthetic_pairs, offline_text_encoder)
    if overlays == ["ablation_clinicalbert.json"]:
        # the overlay names a hub id; offline it must fail with one clear line, and with a local model it trains
        with pytest.raises(Exception) as raised:
            run_bundle(
                BUNDLE,
                TOY + overlays,
                str(tmp_path / "hub"),
                **{**overrides, "text_encoder_name": "medicalai/ClinicalBERT"},
            )
        chain, error = [], raised.value
        while error is not None:  # MONAI wraps the constructor's error; ours is in the chain
            chain.append(str(error))
            error = error.__cause__ or error.__context__
        assert any("text_encoder_name 'medicalai/ClinicalBERT'" in m and "never downloads" in m for m in chain), chain
        from custom.weights.offline_text_encoder import build_offline_text_encoder

        overrides["text_encoder_name"] = build_offline_text_encoder(
            str(tmp_path / "other_text"), hidden_size=32, num_layers=3, mlm_steps=20
        )
        overrides["text_frozen_layers"] = 1
    workflow = run_bundle(BUNDLE, TOY + overlays, str(tmp_path), **overrides)
    history = _history(tmp_path)
    assert len(history["iteration"]) == 2
    assert all(np.isfinite(history["loss"]))
    tcl, tir = np.asarray(history["tcl"]), np.asarray(history["tir"])
    assert (tcl == 0).all() if overlays == ["ablation_no_tcl.json"] else (tcl > 0).all()
    assert (tir == 0).all() if overlays == ["ablation_no_tir.json"] else (tir > 0).all()
    network = workflow.parser.get_parsed_content("network")
    assert (network.interactor is None) == (overlays == ["ablation_no_interactor.json"])
    # Learning signal, per overlay: which parts received gradients. A loss term can be > 0 while nothing it should
    # train moves (a detached branch, a zero weight still computed); an ablation must leave its branch untouched.
    updated = updated_parameters(network, workflow.parser.get_parsed_content("optimizer"))
    prefixes = network.image_backbone.encoder_prefixes

    def part(name: str) -> str:
        top, _, rest = name.partition(".")
        if top == "image_backbone":
            return "encoder" if rest.startswith(prefixes) else "decoder"
        return top

    tcl_parts, tir_parts = {"image_head", "text_projection", "logit_scale"}, {"decoder"}
    if network.interactor is not None:
        tir_parts.add("interactor")
    trained = {part(name) for name in updated}
    assert "encoder" in trained, sorted(trained)
    assert tcl_parts <= trained if overlays != ["ablation_no_tcl.json"] else not tcl_parts & trained, sorted(trained)
    assert tir_parts <= trained if overlays != ["ablation_no_tir.json"] else not tir_parts & trained, sorted(trained)
    for name in ("checkpoint_last.pt", "model.pt", "image_encoder.pt", "image_encoder.json"):
        assert os.path.isfile(tmp_path / "models" / name)
    assert os.path.isfile(tmp_path / "runs" / "loss_curves.png")
    assert "report_to_volume_R1" in workflow.parser.get_parsed_content("validate#evaluator").state.metrics


def test_subvolume_regime_ci_size_loss_falls(tmp_path, offline_text_encoder):
    """The sub-volume regime of ``configs/cpu_toy_subvolume.json`` at CI size (48 studies, 24 steps): K = 8 crops per
    volume on a lattice over the body, each half the volume along every axis, long reports, label affinity. The loss
    must fall and every mechanism must be the one the regime claims (its full run and what it measured: the model
    card, "Sub-volume TCL on the CPU")."""
    overrides = {
        "offline_text_encoder_dir": offline_text_encoder,
        "prepare_data#synthetic_pairs#num_train": 48,
        "prepare_data#synthetic_pairs#num_val": 8,
        "epoch_length": 6,
        "max_epochs": 4,
        "val_interval": 4,
        "text_whitening": 32,
    }
    workflow = run_bundle(BUNDLE, TOY + ["cpu_toy_subvolume.json"], str(tmp_path), **overrides)
    dataset = workflow.parser.get_parsed_content("train#dataset")
    assert (dataset.sampling, dataset.crop_jitter) == ("stratified", 2)
    item = dataset[0]
    assert item["image"].shape == (8, 1, 16, 16, 16)
    volume = dataset.cache.load(dataset.rows[0]["image"])
    assert all(2 * c <= s for c, s in zip(dataset.crop_size, volume.array.shape))
    torch.manual_seed(0)
    origins = dataset.crop_origins(volume)
    assert len({tuple(o >= 8) for o in origins}) == 8  # one crop in each octant of the body
    assert min(len(row["report"].split()) for row in dataset.rows) >= 80  # long reports
    assert workflow.parser.get_parsed_content("tcl_loss").affinity.source == "labels"
    history = _history(tmp_path)
    epochs = np.asarray(history["epoch"])
    for key in ("loss", "tcl", "tir"):
        values = np.asarray(history[key])
        first, last = values[epochs == 1], values[epochs == epochs.max()]
        # the fall must exceed twice its standard error over the 6 steps of each epoch: with no learning (steps as
        # independent draws around one mean) a fall that large happens about 3 % of the time (one-sided t, 10
        # degrees of freedom); the run is seeded (seed 0), so a pass is repeatable
        margin = 2 * np.sqrt(first.var(ddof=1) / first.size + last.var(ddof=1) / last.size)
        print(
            f"\nsub-volume CI size: {key} first-epoch mean {first.mean():.4f} -> last-epoch mean {last.mean():.4f} "
            f"(fall {first.mean() - last.mean():.4f}, 2 standard errors {margin:.4f})"
        )
        assert first.mean() - last.mean() > margin, (key, first, last)
    positives = np.asarray(history["positives"])
    assert ((positives >= 0) & (positives <= 1)).all() and positives.mean() < 0.3


def test_training_resumes_from_the_last_checkpoint(tmp_path, synthetic_pairs, offline_text_encoder):
    overrides = _toy_overrides(synthetic_pairs, offline_text_encoder)
    run_bundle(BUNDLE, TOY, str(tmp_path), **overrides)
    first = safe_load(str(tmp_path / "models" / "checkpoint_last.pt"))
    assert (first["epoch"], first["iteration"]) == (1, 2)
    workflow = run_bundle(BUNDLE, TOY, str(tmp_path), **{**overrides, "max_epochs": 2})
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert (trainer.state.epoch, trainer.state.iteration) == (2, 4)  # one more epoch, not two
    second = safe_load(str(tmp_path / "models" / "checkpoint_last.pt"))
    assert (second["epoch"], second["iteration"]) == (2, 4)
    # saved after the scheduler's step of the same iteration: a resumed schedule does not lag one step behind
    assert second["lr_scheduler"]["last_epoch"] == second["iteration"]
    assert _history(tmp_path)["iteration"] == [1, 2, 3, 4]
    assert not [f for f in os.listdir(tmp_path / "models") if ".tmp" in f]  # atomic writes leave no partial files


def test_evaluate_and_inference_use_the_trained_weights(tmp_path, synthetic_pairs, offline_text_encoder):
    overrides = _toy_overrides(synthetic_pairs, offline_text_encoder)
    train = run_bundle(BUNDLE, TOY, str(tmp_path), **overrides)
    trained_metric = train.parser.get_parsed_content("validate#evaluator").state.metrics["report_to_volume_R1"]
    evaluate = run_bundle(BUNDLE, TOY + ["evaluate.json"], str(tmp_path), **overrides)
    metrics = evaluate.parser.get_parsed_content("validate#evaluator").state.metrics
    assert metrics["report_to_volume_R1"] == pytest.approx(trained_metric)
    assert metrics["chance_R1"] == pytest.approx(1 / 4)
    assert os.path.isfile(tmp_path / "runs" / "metrics.csv")

    infer = run_bundle(BUNDLE, ["inference.json", "cpu_toy.json"], str(tmp_path), dataset_dir=synthetic_pairs)
    result = np.load(tmp_path / "eval" / "embeddings.npz")
    assert result["embeddings"].shape == (12, 64)
    assert np.allclose(np.linalg.norm(result["embeddings"], axis=1), 1.0, atol=1e-4)
    # the inference network carries the trained image weights
    model_state = safe_load(str(tmp_path / "models" / "model.pt"))
    embedder = infer.parser.get_parsed_content("network")
    assert torch.equal(embedder.image_head.key.weight, model_state["image_head.key.weight"])


def test_multi_gpu_overlay_runs_with_two_gloo_processes(tmp_path, synthetic_pairs, offline_text_encoder):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        "-m", "monai.bundle", "run",
        "--config_file", "['configs/train.json','configs/cpu_toy.json','configs/multi_gpu_train.json']",
        "--bundle_root", str(tmp_path), "--dataset_dir", synthetic_pairs, "--text_encoder_name", offline_text_encoder,
        "--batch_size", "2", "--max_epochs", "1", "--val_interval", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=os.path.join(BUNDLES, BUNDLE), env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    checkpoint = safe_load(str(tmp_path / "models" / "checkpoint_last.pt"))
    # 8 training studies, 2 ranks x batch 2: each rank sees 4 studies -> 2 iterations in the epoch
    assert checkpoint["iteration"] == 2
    assert os.path.isfile(tmp_path / "models" / "image_encoder.pt")


def test_method_key_without_its_overlay_is_refused():
    """`--method ssl_swin` on train.json alone would train T3D under the wrong name: the trainer refuses."""
    from custom.engines.t3d_trainer import T3DTrainer

    with pytest.raises(ValueError, match=r"method: T3DTrainer trains 't3d', found 'ssl_swin'.*method_ssl_swin\.json"):
        T3DTrainer(device="cpu", max_epochs=1, train_data_loader=[], network=None, optimizer=None, tcl_loss=None,
                   tir_loss=None, corruption=None, method="ssl_swin")  # fmt: skip
