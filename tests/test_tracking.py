"""Experiment tracking: ``--tracking mlflow`` (MONAI's built-in bundle tracking) and TensorBoard event files after a
toy training of a segmentation bundle (command line, 2 iterations) and of the pre-training bundle (2 steps).

MONAI 1.6.1's default MLflow settings keep the run in a local SQLite store, ``<output_dir>/mlruns.db``, and the run's
artifacts (the executed config) in ``<output_dir>/mlruns/<experiment>/<run>/artifacts`` (MLflow >= 3.13 refuses the
old plain-file store), so both are checked, and params and metrics are read back with MLflow's own client.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
from conftest import BUNDLES, run_bundle

pytestmark = pytest.mark.slow

mlflow = pytest.importorskip("mlflow", reason="MLflow is the 'tracking' extra: pip install -e '.[tracking]'")


def _mlflow_run(output_dir: str):
    """The one run in ``output_dir``'s local MLflow store, and its artifacts folder."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir}/mlruns.db")
    experiment = client.get_experiment_by_name("monai_experiment")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    run_dir = os.path.join(output_dir, "mlruns", run.info.run_id)
    return client, run, run_dir


def _tensorboard_tags(output_dir: str) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = glob.glob(os.path.join(output_dir, "events.out.tfevents.*"))
    assert events, f"no TensorBoard event file in {output_dir}"
    tags = set()
    for event in events:
        accumulator = EventAccumulator(event)
        accumulator.Reload()
        tags.update(accumulator.Tags()["scalars"])
    return tags


def test_segmentation_training_with_tracking_mlflow_on_the_command_line(tmp_path):
    output_dir = tmp_path / "eval"  # the config's default, $@bundle_root + '/eval' (see the note below)
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "['configs/train.json','configs/cpu_toy.json']",
        "--tracking",
        "mlflow",
        "--bundle_root",
        str(tmp_path),
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--max_epochs",
        "1",
        "--val_interval",
        "1",
        "--train#trainer#epoch_length",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=os.path.join(BUNDLES, "t3d_btcv_seg"), env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    client, run, run_dir = _mlflow_run(str(output_dir))
    assert run.info.status == "FINISHED"
    assert run.data.params["max_epochs"] == "1" and run.data.params["epoch_length"] == "2"
    assert {"train_loss", "val_mean_dice"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2  # one per iteration
    # the executed config is logged as the run's artifact. MONAI 1.6.1 builds that path as the expression
    # `output_dir + " + '/config_<time>.json'"`, so it is only found when output_dir is an expression (the default);
    # a literal `--output_dir /path` still tracks params and metrics but logs no artifact.
    artifacts = os.listdir(os.path.join(run_dir, "artifacts"))
    assert any(name.endswith(".json") for name in artifacts), artifacts
    assert {"train_loss", "val_mean_dice"} <= _tensorboard_tags(str(output_dir))


def test_pretraining_with_tracking_mlflow(tmp_path):
    output_dir = tmp_path / "runs"
    run_bundle(
        "t3d_pretrain",
        ["train.json", "cpu_toy.json"],
        str(tmp_path),
        tracking="mlflow",
        output_dir=str(output_dir),
        max_epochs=1,
        epoch_length=2,
        batch_size=2,
    )
    client, run, _ = _mlflow_run(str(output_dir))
    assert run.data.params["epoch_length"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    assert {"loss", "tcl", "tir"} <= _tensorboard_tags(str(output_dir))
