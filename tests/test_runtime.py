"""What every bundle run does first (custom.runtime): unknown overrides refused, one-line errors printed last."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from custom.engines.finite_loss import NonFiniteLossError, batch_sources, check_finite_loss
from custom.errors import DataError
from custom.handlers.finite_loss import StopOnNonFiniteLoss
from custom.runtime.errors import one_line_message
from custom.runtime.overrides import UnknownOverrideError, check_overrides, command_line_overrides

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def configs(tmp_path):
    base = tmp_path / "train.json"
    base.write_text(
        json.dumps(
            {"max_epochs": 2, "pretrained_weights": None, "net": {"_target_": "torch.nn.Identity"}, "steps": [1, 2]}
        )
    )
    overlay = tmp_path / "toy.json"
    overlay.write_text(json.dumps({"batch_size": 4}))
    return [str(base), str(overlay)]


def test_command_line_overrides_are_read_from_a_monai_bundle_run_line(configs):
    argv = [
        "__main__.py",
        "run",
        "--config_file",
        str(configs),
        "--max_epochs",
        "1",
        "--net#kw=3",
        "--meta_file",
        "m.json",
    ]
    files, ids = command_line_overrides(argv)
    assert files == configs and ids == ["max_epochs", "net#kw"]
    assert command_line_overrides(["pytest", "-q"]) == ([], [])


def test_existing_ids_new_component_keywords_and_list_items_are_accepted(configs):
    line = ["m", "run", "--config_file", ",".join(configs)]
    assert check_overrides(line + ["--max_epochs", "1", "--batch_size", "2", "--net#kw", "1", "--steps#1", "3"])


@pytest.mark.parametrize(
    "override, closest",
    [("max_epoch", "max_epochs"), ("pretrained_weight", "pretrained_weights"), ("batchsize", "batch_size")],
)
def test_typoed_override_is_refused_naming_the_closest_id(configs, override, closest):
    with pytest.raises(UnknownOverrideError) as excinfo:
        check_overrides(["m", "run", "--config_file", str(configs), f"--{override}", "1"])
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith(f"--{override}: expected a config id defined in ")
    assert message.endswith(f"did you mean '{closest}'?")


def test_one_line_message_is_found_through_monai_wrappers_and_dataloader_reraise():
    try:
        try:
            raise DataError("a.nii.gz: expected finite intensities, found 3 NaN/inf voxels")
        except DataError as err:
            raise RuntimeError("Failed to evaluate ConfigExpression: ...") from err
    except RuntimeError as wrapped:
        assert one_line_message(wrapped) == "a.nii.gz: expected finite intensities, found 3 NaN/inf voxels"
    worker = DataError(
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n  File x\n"
        "custom.errors.DataError: b.nii.gz: expected a 3D volume, found shape (4, 4)"
    )
    assert one_line_message(worker) == "b.nii.gz: expected a 3D volume, found shape (4, 4)"
    assert one_line_message(RuntimeError("other")) is None


def test_non_finite_loss_names_the_iteration_and_the_batch_files():
    check_finite_loss(torch.tensor(0.5), 3, "x")
    with pytest.raises(NonFiniteLossError) as excinfo:
        check_finite_loss(torch.tensor(float("nan")), 7, "a.nii.gz, b.nii.gz")
    assert str(excinfo.value).startswith(
        "iteration 7: expected a finite training loss, found nan from a.nii.gz, b.nii.gz"
    )

    class Rows:
        rows = [{"image": "v0.nii.gz"}, {"image": "v1.nii.gz"}, {"image": "v2.nii.gz"}]

    assert batch_sources({"index": torch.tensor([2, 0])}, Rows()) == "v2.nii.gz, v0.nii.gz"
    assert batch_sources({"image": torch.zeros(1)}) == "unknown files"


def test_supervised_trainer_stops_before_the_step_and_saves_nothing(tmp_path):
    from monai.data import MetaTensor
    from monai.engines import SupervisedTrainer
    from monai.handlers import CheckpointSaver

    torch.manual_seed(0)
    network = torch.nn.Linear(4, 1)
    before = network.weight.detach().clone()
    image = MetaTensor(torch.randn(2, 4), meta={"filename_or_obj": ["good.nii.gz", "nan.nii.gz"]})
    image[1, 2] = float("nan")
    saver = CheckpointSaver(str(tmp_path), {"net": network}, save_interval=1, epoch_level=False, save_final=False)
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[{"image": image, "label": torch.zeros(2, 1)}],
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
        train_handlers=[StopOnNonFiniteLoss(), saver],
    )
    with pytest.raises(NonFiniteLossError, match="iteration 1: .* from good.nii.gz, nan.nii.gz"):
        trainer.run()
    assert torch.equal(network.weight, before)  # no optimizer step with a NaN gradient
    assert os.listdir(tmp_path) == []


def test_bundle_run_with_a_typoed_override_exits_with_one_line(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "configs/train.json",
            "--max_epoch",
            "1",
            "--ckpt_dir",
            str(tmp_path / "models"),
        ],
        cwd=os.path.join(REPO, "bundles", "t3d_btcv_seg"),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "error: --max_epoch: expected a config id defined in configs/train.json, found none; did you mean 'max_epochs'?"
    )
    assert not (tmp_path / "models").exists()


def test_patient_leakage_is_one_definition_and_refused():
    from custom.data.checks import patient_split_problems, refuse_patient_leakage

    clean = {"training": [{"patient_id": "a"}, {"patient_id": "b"}], "validation": [{"patient_id": "c"}]}
    assert patient_split_problems(clean) == [] and refuse_patient_leakage(clean, "d.json")
    leaked = {
        "training": [{"patient_id": "a"}, {"patient_id": "b"}],
        "validation": [{"patient_id": "b"}, {"patient_id": "a"}],
    }
    assert patient_split_problems(leaked) == [
        "patient_id a: expected in one split, found in ['training', 'validation']",
        "patient_id b: expected in one split, found in ['training', 'validation']",
    ]
    with pytest.raises(DataError) as excinfo:
        refuse_patient_leakage(leaked, "d.json")
    assert str(excinfo.value) == (
        "d.json: patient_id a: expected in one split, found in ['training', 'validation'] (and 1 more patients); "
        "a patient's studies must all be in one split"
    )


def test_segmentation_training_refuses_a_leaked_patient_before_training(tmp_path):
    from custom.data.seg_datasets import btcv

    datalist = btcv.write_miniature(str(tmp_path / "btcv"), num_cases=3, shape=(16, 16, 16))
    rows = json.loads(open(datalist).read())
    rows["validation"][0]["patient_id"] = rows["training"][0].get("patient_id") or "leaked"
    rows["training"][0]["patient_id"] = rows["validation"][0]["patient_id"]
    with open(datalist, "w") as f:
        json.dump(rows, f)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "configs/train.json",
            "--dataset_dir",
            str(tmp_path / "btcv"),
            "--datalist",
            datalist,
            "--ckpt_dir",
            str(tmp_path / "models"),
        ],
        cwd=os.path.join(REPO, "bundles", "t3d_btcv_seg"),
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {datalist}: patient_id ") and "expected in one split" in last, last
    assert not (tmp_path / "models" / "model.pt").exists()


@pytest.mark.parametrize(
    "script", ["t3d-pack", "t3d-download", "t3d-integrity", "t3d-serving-prepare", "t3d-paper-table"]
)
def test_console_scripts_are_installed_and_answer_help(script):
    """One entry point per tool (pyproject.toml [project.scripts]), installed by scripts/setup.sh."""
    path = os.path.join(os.path.dirname(sys.executable), script)
    assert os.path.isfile(path), f"{path}: not installed; rerun scripts/setup.sh"
    result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage" in result.stdout.lower(), result.stdout + result.stderr
