"""The three segmentation bundles end to end on CPU with their toy overlays (BasicUNet, synthetic miniatures).

Per bundle (metadata and network I/O: ``test_bundle_cards.py``, ``test_verify_net_in_out.py``): a toy fine-tune
from a pre-training-style checkpoint (built here from ``BasicUNetBackbone`` the way the pre-training bundle saves
``models/model.pt``) learns, i.e. its validation mean Dice clearly beats an untrained network's; a scratch run starts
from its own initialisation and trains; evaluate writes per-class Dice / HD95 and predictions in the input geometry;
inference writes one label map with ``channel_def`` values. BTCV additionally runs on the real CT in
``tests/data/real_ct`` and under ``torchrun`` with two gloo processes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from custom.data.seg_datasets.btcv import totalsegmentator_to_btcv
from custom.data.seg_datasets.common import load_split, write_nifti
from custom.networks.unet_backbone import CPU_TOY_NORM, BasicUNetBackbone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_CT = os.path.join(REPO, "tests", "data", "real_ct")
TOY_FEATURES = (8, 16, 32, 64, 64, 8)  # bundles/*/configs/cpu_toy.json


@dataclass(frozen=True)
class BundleSpec:
    name: str
    in_channels: int
    datalist_name: str
    label_map_values: tuple[int, ...]  # values the saved prediction may contain (channel_def of the label map)
    min_dice_gain: float  # trained minus untrained validation mean Dice, with margin below the measured gain


SPECS = {
    s.name: s
    for s in (
        # 13 organs on 2 cases: with the shared CPU-toy batch norm the toy fine-tune measured 0.000 -> 0.143 (instance
        # norm gave 0.010 -> 0.458); lung 0.000 -> 0.892 and BraTS 0.002 -> 0.599 keep the 0.2 bound
        BundleSpec("t3d_btcv_seg", 1, "dataset_0.json", tuple(range(14)), 0.1),
        BundleSpec("t3d_msd_lung", 1, "datalist.json", (0, 1), 0.2),
        BundleSpec("t3d_brats", 4, "datalist.json", (0, 1, 2, 4), 0.2),
    )
}


def _configs(bundle: str, *names: str) -> list[str]:
    return [os.path.join(REPO, "bundles", bundle, "configs", n) for n in names]


def run_workflow(bundle: str, config_names: list[str], **overrides) -> ConfigWorkflow:
    """Run a bundle in-process (``python -m monai.bundle run`` without paying ``import monai`` again)."""
    workflow = ConfigWorkflow(
        config_file=_configs(bundle, *config_names),
        meta_file=_configs(bundle, "metadata.json")[0],
        logging_file=_configs(bundle, "logging.conf")[0],
        workflow_type=None,
        bundle_root=os.path.join(REPO, "bundles", bundle),
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


_PRETRAIN: dict[str, str] = {}


def save_pretrain_checkpoint(path: str, tmp_path_factory) -> BasicUNetBackbone:
    """A real ``t3d_pretrain`` CPU-toy checkpoint (2 pre-training steps, run once per session) copied to ``path``;
    returns its image backbone. Its BasicUNet has the norm every CPU toy shares (batch), so the downstream toy
    network takes every encoder key, running statistics included (#27)."""
    from conftest import run_bundle

    if "model" not in _PRETRAIN:
        root = tmp_path_factory.mktemp("t3d_pretrain_toy")
        run_bundle(
            "t3d_pretrain", ["train.json", "cpu_toy.json"], str(root), max_epochs=1, epoch_length=2, batch_size=2
        )
        _PRETRAIN["model"] = str(root / "models" / "model.pt")
    shutil.copyfile(_PRETRAIN["model"], path)
    state = torch.load(path, weights_only=True)
    backbone = BasicUNetBackbone(in_channels=1, out_channels=1, features=TOY_FEATURES, norm=CPU_TOY_NORM)
    backbone.load_state_dict(
        {k[len("image_backbone.") :]: v for k, v in state.items() if k.startswith("image_backbone.")}
    )
    return backbone


def _summary_means(csv_path: str) -> dict[str, float]:
    """``class -> mean`` from a MetricsSaver ``*_summary.csv`` (class, mean, median, ...)."""
    with open(csv_path) as f:
        rows = list(csv.reader(f))
    return {row[0]: float(row[1]) for row in rows[1:]}


def _validation_rows(toy: dict) -> list[dict]:
    return load_split(os.path.join(toy["common"]["dataset_dir"], toy["spec"].datalist_name), "validation")


def _stem(row: dict) -> str:
    """SaveImaged names outputs after the (first) input file: ``<stem>_seg.nii.gz``."""
    image = row["image"][0] if isinstance(row["image"], list) else row["image"]
    return os.path.basename(image).split(".")[0]


_TOY_RUNS: dict[str, dict] = {}


@pytest.fixture(scope="module", params=list(SPECS))
def toy(request, tmp_path_factory):
    return toy_run(request.param, tmp_path_factory)


def toy_run(name: str, tmp_path_factory) -> dict:
    """Per bundle, once per session: the untrained baseline, a toy fine-tune from a T3D checkpoint, its evaluation."""
    if name in _TOY_RUNS:
        return _TOY_RUNS[name]
    spec = SPECS[name]
    root = tmp_path_factory.mktemp(spec.name)
    common = {"dataset_dir": str(root / "data"), "num_workers": 0}
    checkpoint = str(root / "t3d_model.pt")
    backbone = save_pretrain_checkpoint(checkpoint, tmp_path_factory)

    # untrained baseline: the toy network at its seeded random initialisation, evaluated like the trained one
    untrained_dir = root / "untrained"
    untrained_dir.mkdir()
    torch.manual_seed(0)
    init = ConfigWorkflow(config_file=_configs(spec.name, "train.json", "cpu_toy.json"), workflow_type=None, **common)
    init.initialize()
    torch.save(init.parser.get_parsed_content("network_def").state_dict(), str(untrained_dir / "model.pt"))
    baseline = run_workflow(
        spec.name,
        ["train.json", "evaluate.json", "cpu_toy.json"],
        ckpt_dir=str(untrained_dir),
        output_dir=str(root / "eval_untrained"),
        **common,
    )
    untrained_dice = float(baseline.parser.get_parsed_content("validate#evaluator").state.metrics["val_mean_dice"])

    run_workflow(
        spec.name,
        ["train.json", "cpu_toy.json"],
        pretrained_weights=checkpoint,
        ckpt_dir=str(root / "models"),
        output_dir=str(root / "runs"),
        **common,
    )
    evaluation = run_workflow(
        spec.name,
        ["train.json", "evaluate.json", "cpu_toy.json"],
        ckpt_dir=str(root / "models"),
        output_dir=str(root / "eval"),
        **common,
    )
    metrics = evaluation.parser.get_parsed_content("validate#evaluator").state.metrics
    print(
        f"\n[{spec.name}] validation mean Dice: untrained {untrained_dice:.3f}, toy fine-tuned from T3D checkpoint "
        f"{metrics['val_mean_dice']:.3f}; HD95 {metrics['val_hd95']:.2f} voxels"
    )
    _TOY_RUNS[name] = {
        "spec": spec,
        "root": root,
        "common": common,
        "backbone": backbone,
        "untrained_dice": untrained_dice,
        "trained_dice": float(metrics["val_mean_dice"]),
        "checkpoint": checkpoint,
    }
    return _TOY_RUNS[name]


def test_toy_fine_tune_learns(toy):
    trained, untrained = toy["trained_dice"], toy["untrained_dice"]
    assert trained > untrained + toy["spec"].min_dice_gain, (trained, untrained)


def test_fine_tune_started_from_the_checkpoint_encoder(toy, tmp_path):
    """The network the trainer received had the checkpoint's encoder (1->4 channels adapted for BraTS)."""
    spec = toy["spec"]
    workflow = ConfigWorkflow(
        config_file=_configs(spec.name, "train.json", "cpu_toy.json"),
        workflow_type=None,
        pretrained_weights=toy["checkpoint"],
        **toy["common"],
    )
    workflow.initialize()
    _assert_encoder_is_the_checkpoints(workflow.parser.get_parsed_content("network").state_dict(), toy["backbone"])


def _assert_encoder_is_the_checkpoints(loaded: dict, backbone: torch.nn.Module) -> None:
    compared = 0
    for key, value in backbone.state_dict().items():
        if key.startswith(BasicUNetBackbone.encoder_prefixes):  # every one: the toys share one norm, nothing dropped
            compared += 1
            adapted = loaded[key].shape != value.shape  # BraTS: 1 -> 4 input channels, sum / 4
            expected = value.sum(1, keepdim=True).expand_as(loaded[key]) / 4 if adapted else value
            torch.testing.assert_close(loaded[key], expected, rtol=0, atol=1e-7)
    # every conv weight and bias, norm affine parameter and running statistic of the five encoder blocks
    assert compared >= 50 and sum(k.endswith("running_mean") for k in loaded) >= 10


def test_frozen_encoder_probe_trains_with_the_checkpoint_encoder_unchanged(toy):
    """``--frozen_encoder true``: the saved model's encoder is still the checkpoint's after training."""
    root = toy["root"]
    run_workflow(
        toy["spec"].name,
        ["train.json", "cpu_toy.json"],
        pretrained_weights=toy["checkpoint"],
        frozen_encoder=True,
        max_epochs=1,
        val_interval=1,
        ckpt_dir=str(root / "probe"),
        output_dir=str(root / "probe_runs"),
        **toy["common"],
    )
    _assert_encoder_is_the_checkpoints(torch.load(root / "probe" / "model.pt", weights_only=True), toy["backbone"])


def test_scratch_training_starts_from_its_own_initialisation_and_trains(toy):
    """``pretrained_weights: null``: the network starts from the seeded initialisation, not the checkpoint's encoder,
    and training moves every weight that has a gradient (the saved model is finite and differs from its start)."""
    root, spec = toy["root"], toy["spec"]
    scratch = dict(pretrained_weights=None, max_epochs=1, val_interval=1, **toy["common"])
    start = ConfigWorkflow(config_file=_configs(spec.name, "train.json", "cpu_toy.json"), workflow_type=None, **scratch)
    start.initialize()  # seeded (set_determinism in initialize): the same initial network the run below gets
    initial = {k: v.clone() for k, v in start.parser.get_parsed_content("network").state_dict().items()}
    with pytest.raises(AssertionError):  # not the pre-trained encoder
        _assert_encoder_is_the_checkpoints(initial, toy["backbone"])
    run_workflow(
        spec.name,
        ["train.json", "cpu_toy.json"],
        ckpt_dir=str(root / "scratch"),
        output_dir=str(root / "scratch_runs"),
        **scratch,
    )
    trained = torch.load(root / "scratch" / "model.pt", weights_only=True)
    assert trained.keys() == initial.keys()
    weights = [k for k, v in initial.items() if v.is_floating_point() and k.endswith(("weight", "bias"))]
    unchanged = [k for k in weights if torch.equal(trained[k], initial[k])]
    assert all(torch.isfinite(trained[k]).all() for k in weights)
    assert weights and not unchanged, unchanged


def test_evaluate_writes_per_class_metrics_and_inverted_predictions(toy):
    root, spec = toy["root"], toy["spec"]
    dice = _summary_means(str(root / "eval" / "val_mean_dice_summary.csv"))
    scored_classes = {"t3d_btcv_seg": 13, "t3d_msd_lung": 1, "t3d_brats": 3}[spec.name]
    assert len([k for k in dice if k.startswith("class")]) == scored_classes
    assert os.path.isfile(root / "eval" / "val_hd95_summary.csv")
    for row in _validation_rows(toy):
        reference = nib.load(row["label"])
        saved = nib.load(str(root / "eval" / f"{_stem(row)}_seg.nii.gz"))
        assert saved.shape == reference.shape
        np.testing.assert_allclose(saved.affine, reference.affine, atol=1e-5)


def test_inference_writes_one_label_map_in_input_geometry(toy):
    root, spec = toy["root"], toy["spec"]
    rows = _validation_rows(toy)
    images = [r["image"] for r in rows]
    run_workflow(
        spec.name,
        ["inference.json", "cpu_toy.json"],
        images=images,
        ckpt_dir=str(root / "models"),
        output_dir=str(root / "infer"),
        **toy["common"],
    )
    for row in rows:
        reference = nib.load(row["label"])
        saved = nib.load(str(root / "infer" / f"{_stem(row)}_seg.nii.gz"))
        assert saved.shape == reference.shape  # one channel: a label map, not per-class maps
        np.testing.assert_allclose(saved.affine, reference.affine, atol=1e-5)
        assert set(np.unique(np.asarray(saved.dataobj)).tolist()) <= set(spec.label_map_values)


def test_brats2023_miniature_trains_and_infers_with_the_toy_config(tmp_path):
    """The BraTS 2023 layout (``BraTS-GLI-*``, t2f / t1n / t1c / t2w, labels 1 NCR / 2 SNFH / 3 ET) through the
    bundle: its datalist, 2 toy training iterations and a validation, then inference on its case folders (the images
    found from the layout) writing one BraTS label map per case in the input geometry."""
    from custom.data.seg_datasets import brats

    data = tmp_path / "BraTS2023"
    datalist = brats.write_miniature(str(data), num_cases=4, layout="2023")  # 32^3 at 6 mm: the toy's grid
    run_workflow(
        "t3d_brats",
        ["train.json", "cpu_toy.json"],
        dataset_dir=str(data),
        datalist=datalist,
        num_workers=0,
        max_epochs=1,
        val_interval=1,
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "runs"),
        **{"train#trainer#epoch_length": 2},
    )
    assert (tmp_path / "models" / "model.pt").is_file()
    run_workflow(
        "t3d_brats",
        ["inference.json", "cpu_toy.json"],
        dataset_dir=str(data),
        num_workers=0,
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "infer"),
    )
    cases = sorted(d for d in os.listdir(data) if os.path.isdir(data / d))
    assert cases == [f"BraTS-GLI-{i:05d}-000" for i in range(4)]
    for case in cases:
        reference = nib.load(str(data / case / f"{case}-seg.nii.gz"))
        saved = nib.load(str(tmp_path / "infer" / f"{case}-t2f_seg.nii.gz"))
        assert saved.shape == reference.shape
        np.testing.assert_allclose(saved.affine, reference.affine, atol=1e-5)
        assert set(np.unique(np.asarray(saved.dataobj)).tolist()) <= {0, 1, 2, 4}  # BraTS label map, any source


def test_btcv_on_the_real_ct(tmp_path_factory, tmp_path):
    """Real geometry (3 mm, 122 x 101 x 30, TotalSegmentator reference): inference and evaluate run, outputs align."""
    toy = toy_run("t3d_btcv_seg", tmp_path_factory)
    image = os.path.join(REAL_CT, "example_ct_sm.nii.gz")
    reference = nib.load(os.path.join(REAL_CT, "example_seg.nii.gz"))
    label = str(tmp_path / "example_ct_sm_btcv_label.nii.gz")
    write_nifti(totalsegmentator_to_btcv(np.asarray(reference.dataobj)), reference.affine, label)
    datalist = str(tmp_path / "real_ct.json")
    with open(datalist, "w") as f:
        json.dump({"training": [], "validation": [{"image": image, "label": label}]}, f)
    source = nib.load(image)
    common = {"ckpt_dir": str(toy["root"] / "models"), "num_workers": 0}

    run_workflow(
        "t3d_btcv_seg", ["inference.json", "cpu_toy.json"], images=[image], output_dir=str(tmp_path / "infer"), **common
    )
    saved = nib.load(str(tmp_path / "infer" / "example_ct_sm_seg.nii.gz"))
    assert saved.shape == source.shape
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-5)

    evaluation = run_workflow(
        "t3d_btcv_seg",
        ["train.json", "evaluate.json", "cpu_toy.json"],
        datalist=datalist,
        dataset_dir=str(tmp_path),
        output_dir=str(tmp_path / "eval"),
        **common,
    )
    assert nib.load(str(tmp_path / "eval" / "example_ct_sm_seg.nii.gz")).shape == source.shape
    with open(tmp_path / "eval" / "val_mean_dice_raw.csv") as f:
        header, values = list(csv.reader(f))[:2]
    per_organ = dict(zip(header[1:-1], (float(v) for v in values[1:-1])))  # drop the filename and mean columns
    present = set(np.unique(np.asarray(nib.load(label).dataobj)).tolist()) - {0}
    print(
        f"\n[real CT] BTCV organs in the mapped reference: {sorted(present)}; per-organ Dice of the toy model: "
        + ", ".join(f"{k} {v:.3f}" for k, v in per_organ.items())
    )
    assert len(per_organ) == 13  # one Dice per BTCV organ
    for organ in range(1, 14):  # classes absent from the reference are NaN (ignored), present ones are scored
        assert np.isfinite(per_organ[f"class{organ - 1}"]) == (organ in present)
    assert "val_mean_dice" in evaluation.parser.get_parsed_content("validate#evaluator").state.metrics


@pytest.mark.parametrize("name", list(SPECS))
def test_multi_gpu_overlay_with_two_gloo_processes(name, tmp_path, tmp_path_factory):
    toy = toy_run(name, tmp_path_factory)
    configs = "['configs/train.json','configs/cpu_toy.json','configs/multi_gpu_train.json']"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        configs,
        "--dataset_dir",
        str(tmp_path / "data"),
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "runs"),
        "--pretrained_weights",
        toy["checkpoint"],
        "--max_epochs",
        "2",
        "--val_interval",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=os.path.join(REPO, "bundles", name), env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("weight transfer from") == 2  # both ranks loaded the checkpoint
    assert "val_mean_dice" in result.stdout + result.stderr
    assert os.path.isfile(tmp_path / "models" / "model.pt")
