"""The paper-table protocol: the image-only methods train and export like T3D, every row of the toy plan pre-trains
two steps through the runner, a fine-tune writes a complete result, the results writer refuses missing or partial
runs, the table and plots have the paper's shape, and the full-scale dry run resolves configs and names missing data.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from conftest import run_bundle

from custom.weights.checkpoint import safe_load
from t3d_tools.experiments.dry_run import DryRunError
from t3d_tools.experiments.paper_table import main
from t3d_tools.experiments.protocol import COLUMNS, build_plan, discover_rows
from t3d_tools.experiments.results import (
    README_BEGIN,
    README_END,
    IncompleteResultsError,
    build_report,
    collect_results,
    ordering_check,
    readme_section,
    result_path,
    write_result,
    write_timing,
)
from t3d_tools.experiments.runner import PaperTableRunner

TOY_ROWS = [r.name for r in discover_rows("toy")[0] if r.pretrain]
TINY = {
    "pretrain_overrides": {"max_epochs": 1, "val_interval": 1, "seed": 0, "batch_size": 2},
    "pretrain_epoch_length": 2,
}


@pytest.fixture(scope="module")
def toy_runner(tmp_path_factory, synthetic_pairs, offline_text_encoder):
    """A toy runner on the small test pairs set, its shared text encoder already in place (no rebuild)."""
    out = tmp_path_factory.mktemp("paper_table")
    os.makedirs(out / "work")
    os.symlink(offline_text_encoder, out / "work" / "text_encoder")

    def make(**kw) -> PaperTableRunner:
        budget = {**TINY, **kw.pop("budget", {})}
        return PaperTableRunner(
            "toy", str(out), seeds=1, data_dirs={"t3d_pretrain": synthetic_pairs}, budget=budget, **kw
        )

    return make


@pytest.mark.parametrize("row", TOY_ROWS)
def test_every_method_and_ablation_pretrains_two_steps_and_exports_like_t3d(toy_runner, row):
    runner = toy_runner(rows=[row])
    runner.pretrain(row)
    with open(os.path.join(runner.pretrain_dir(row), "pretrain_done.json")) as f:
        done = json.load(f)
    assert done["steps"] == 2
    encoder = safe_load(done["weights"])
    with open(os.path.join(runner.pretrain_dir(row), "models", "image_encoder.json")) as f:
        description = json.load(f)
    # same export format as T3D's: plain BasicUNet encoder names, same description
    assert description["backbone"] == "BasicUNetBackbone" and description["bottleneck_channels"] == 64
    assert encoder and all(k.startswith(tuple(description["encoder_prefixes"])) for k in encoder)
    assert all(torch.isfinite(v.float()).all() for v in encoder.values())
    if row != "t3d":
        t3d = toy_runner(rows=["t3d"])
        t3d.pretrain("t3d")
        assert set(safe_load(t3d.weights_of("t3d"))) == set(encoder)


@pytest.mark.parametrize("method", ["ssl_swin", "restoration_only"])
def test_image_only_method_overlays_train_and_transfer(tmp_path, synthetic_pairs, offline_text_encoder, method):
    """``method_*.json`` on ``train.json + cpu_toy.json``: two steps, every loss term finite and learning signal
    present, no text encoder or interactor in the model, and the export loads into a downstream BasicUNet."""
    from monai.networks.nets import BasicUNet

    from custom.weights.transfer import transfer_weights

    workflow = run_bundle(
        "t3d_pretrain", ["train.json", "cpu_toy.json", f"method_{method}.json"], str(tmp_path),
        dataset_dir=synthetic_pairs, offline_text_encoder_dir=offline_text_encoder, batch_size=2, max_epochs=1,
        epoch_length=2,
    )  # fmt: skip
    with open(tmp_path / "runs" / "loss_history.json") as f:
        history = json.load(f)
    keys = {
        "ssl_swin": ["loss", "rotation", "contrast", "reconstruction"],
        "restoration_only": ["loss", "restoration"],
    }[method]
    assert history["iteration"] == [1, 2]
    assert all(np.isfinite(history[k]).all() and (np.asarray(history[k]) > 0).all() for k in keys)
    network = workflow.parser.get_parsed_content("network")
    assert not hasattr(network, "text_encoder") and not hasattr(network, "interactor")
    assert (network.rotation_head is not None) == (method == "ssl_swin")
    downstream = BasicUNet(spatial_dims=3, in_channels=4, out_channels=3, features=(8, 16, 32, 64, 64, 8))
    report = transfer_weights(downstream, str(tmp_path / "models" / "model.pt"))
    assert not report.missing and report.adapted == ["conv_0.conv_0.conv.weight"]
    assert (report.ignored_non_image > 0) == (method == "ssl_swin")  # SSL heads stay behind, like T3D's text side


def test_ssl_losses_and_views():
    from custom.losses.ssl_losses import SwinSSLLoss, ViewContrastiveLoss
    from custom.transforms.ssl_views import RandomCutout, random_rotation

    torch.manual_seed(0)
    crops = torch.rand(4, 1, 8, 8, 8)
    rotated, k = random_rotation(crops)
    for crop, turned, turns in zip(crops, rotated, k):
        assert torch.equal(torch.rot90(crop, int(turns), dims=(-2, -1)), turned)
    cut, mask = RandomCutout()(crops)
    assert torch.equal(cut[~mask.expand_as(cut)], crops[~mask.expand_as(crops)]) and mask.any()
    views = torch.randn(6, 16)
    contrast = ViewContrastiveLoss(temperature=0.5)
    assert contrast(views, views) < contrast(views, torch.randn(6, 16))  # identical views are the easy positives
    both = crops.repeat(2, 1, 1, 1, 1)
    terms = SwinSSLLoss()(torch.randn(8, 4), torch.randint(0, 4, (8,)), views[:4], views[:4], both, both)
    assert terms["reconstruction"] == 0 and torch.isclose(terms["loss"], terms["rotation"] + terms["contrast"])


def test_one_fine_tune_writes_a_complete_result(toy_runner):
    budget = {"finetune_iterations": 2, "miniature_cases": 5}
    runner = toy_runner(rows=["t3d"], bundles=["t3d_brats"], fractions=[0.1], budget=budget)
    runner.prepare()
    runner.pretrain("t3d")
    run = runner.plan["runs"][0]
    runner.finetune(run)
    with open(result_path(runner.out_dir, run["run_id"])) as f:
        result = json.load(f)
    assert result["status"] == "complete" and result["iterations"] == 2 and result["method"] == "t3d"
    assert set(result["metrics"]) == {"mean_dice", "tc", "wt", "et"}
    assert "monai.bundle run" in result["command"] and result["config"]["overrides"]["pretrained_weights"].endswith(
        "image_encoder.pt"
    )
    assert runner.finetune(run) == "exists"  # resumable: a finished run is not run again
    with pytest.raises(SystemExit, match="another scale or budget"):  # ... but never mixed with another budget
        toy_runner(rows=["t3d"], bundles=["t3d_brats"], budget={**budget, "finetune_iterations": 3}).prepare()


def _fake_results(out_dir: str, seeds: int = 3, skip: int | None = None) -> dict:
    plan = build_plan("toy", seeds=seeds)
    metrics = {c.bundle: sorted({k.metric for k in COLUMNS if k.bundle == c.bundle}) for c in COLUMNS}
    plan["bundles"] = [
        {"name": b, "label": b, "metrics": m} for b, m in metrics.items()
    ]  # every column, classifier too
    plan["runs"] = [
        {**r, "bundle": b["name"], "run_id": r["run_id"].replace(r["bundle"], b["name"])}
        for b in plan["bundles"] for r in plan["runs"] if r["bundle"] == "t3d_btcv_seg"
    ]  # fmt: skip
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "plan.json"), "w") as f:
        json.dump(plan, f)
    rng = np.random.default_rng(0)
    for index, run in enumerate(plan["runs"]):
        if index != skip:
            metrics = {
                m: float(rng.uniform(0.2, 0.9))
                for b in plan["bundles"]
                if b["name"] == run["bundle"]
                for m in b["metrics"]
            }
            write_result(out_dir, run, metrics, "python -m monai.bundle run ...", {"files": []})
    return plan


def test_results_writer_refuses_missing_and_partial_runs(tmp_path):
    plan = _fake_results(str(tmp_path), skip=5)
    missing = plan["runs"][5]["run_id"]
    with pytest.raises(IncompleteResultsError, match=f"run {missing} is missing") as err:
        build_report(str(tmp_path))
    assert "\n" not in str(err.value) and not os.path.exists(tmp_path / "paper_table.md")
    assert main(["--out", str(tmp_path), "--table_only"]) == 2

    write_result(str(tmp_path), plan["runs"][5], {"mean_dice": 0.5}, "cmd", {})  # now present ...
    path = result_path(str(tmp_path), plan["runs"][7]["run_id"])
    with open(path) as f:
        result = json.load(f)
    with open(path, "w") as f:  # ... but another run lost a metric
        json.dump({**result, "metrics": {**result["metrics"], "mean_dice": math.nan}}, f)
    with pytest.raises(IncompleteResultsError, match=f"run {plan['runs'][7]['run_id']} is partial"):
        collect_results(str(tmp_path))
    with open(path, "w") as f:  # ... or never finished
        json.dump({**result, "status": "running"}, f)
    with pytest.raises(IncompleteResultsError, match="status 'running'"):
        collect_results(str(tmp_path))
    with pytest.raises(IncompleteResultsError, match="plan.json not found"):
        collect_results(str(tmp_path / "elsewhere"))


def test_table_and_plots_have_the_paper_shape(tmp_path):
    plan = _fake_results(str(tmp_path), seeds=3)
    table_path, plots = build_report(str(tmp_path))
    text = open(table_path).read()
    sections = text.split("### ")[1:]
    assert [s.split("\n")[0] for s in sections] == [f"{p} % of the training labels" for p in (1, 10, 100)]
    for section in sections:
        lines = [line for line in section.splitlines() if line.startswith("| ")]
        header, body = lines[0], lines[1:]
        assert header.count("|") == len(COLUMNS) + 2
        assert [line.split(" | ")[0][2:] for line in body] == [r["label"] for r in plan["rows"]]
        assert all(line.count("± ") == len(COLUMNS) and line.count("(n=3)") == len(COLUMNS) for line in body)
    assert "Scratch" in sections[0] and "Image-only SSL" in sections[0] and "T3D w/o TCL" in sections[0]
    assert len(plots) == len(COLUMNS) and all(os.path.getsize(p) > 5000 for p in plots)


def test_ordering_check_counts_cells_and_gaps_beyond_two_standard_errors():
    plan = {"rows": [{"name": n} for n in ("scratch", "ssl_swin", "t3d")]}
    cells = {  # cell A: the claimed order with clear gaps; cell B: reversed, within noise
        ("t3d", "A", 0.1): [0.90, 0.91, 0.92],
        ("ssl_swin", "A", 0.1): [0.70, 0.71, 0.72],
        ("scratch", "A", 0.1): [0.50, 0.51, 0.52],
        ("t3d", "B", 0.1): [0.50, 0.60, 0.40],
        ("ssl_swin", "B", 0.1): [0.55, 0.45, 0.65],
        ("scratch", "B", 0.1): [0.60, 0.40, 0.70],
    }
    text = " ".join(ordering_check(plan, cells))
    assert "holds in 1 of 2 column × fraction cells" in text
    assert (
        "t3d vs ssl_swin: 1 better, 0 worse; t3d vs scratch: 1 better, 0 worse; ssl_swin vs scratch: 1 better, 0 worse"
        in text
    )
    assert ordering_check({"rows": [{"name": "t3d"}]}, cells) == []  # nothing to compare against


def test_readme_block_is_replaced_only_from_complete_results(tmp_path):
    out = tmp_path / "results"
    _fake_results(str(out), seeds=3, skip=2)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n## Results\n{README_BEGIN}\nold\n{README_END}\n\n## After\ntext\n")
    assert main(["--out", str(out), "--table_only", "--readme", str(readme)]) == 2  # incomplete: README untouched
    assert "\nold\n" in readme.read_text()
    plan = json.load(open(out / "plan.json"))
    write_result(str(out), plan["runs"][2], {"mean_dice": 0.5}, "cmd", {})
    write_timing(str(out), 120.0, 600.0, jobs=2)
    assert main(["--out", str(out), "--table_only", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert (
        text.startswith("# Title\n\n## Results\n") and text.endswith("\n\n## After\ntext\n") and "\nold\n" not in text
    )
    block = text.split(README_BEGIN)[1].split(README_END)[0]
    assert "#### 1 % of the training labels" in block and "(n=3)" in block and "Wall time: 12.0 min" in block
    assert "](results/plots/" in block and os.path.isfile(out / "plots" / "btcv_mean_dice.png")


def test_readme_results_match_the_committed_result_files():
    """The README's Results block is what the committed ``results/toy`` regenerates, byte for byte."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(repo, "README.md"), encoding="utf-8").read()
    block = README_BEGIN + text.split(README_BEGIN)[1].split(README_END)[0] + README_END
    assert block == readme_section(os.path.join(repo, "results", "toy"), "results/toy")


def test_full_dry_run_names_every_missing_datalist_in_one_line(tmp_path, capsys):
    args = ["--scale", "full", "--dry_run", "--out", str(tmp_path / "out"), "--rows", "scratch,ssl_swin,t3d"]
    code = main(args + ["--data_dir", f"t3d_btcv_seg={tmp_path / 'nowhere'}"])
    message = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in message
    assert f"t3d_btcv_seg datalist not found: {tmp_path / 'nowhere'}/dataset_0.json" in message
    for bundle in ("t3d_pretrain", "t3d_msd_lung", "t3d_brats"):
        assert f"{bundle} datalist not found" in message and f"--data_dir {bundle}=DIR" in message
    assert "text encoder 'zzxslp/RadBERT-RoBERTa-4m'" in message and "config does not resolve" not in message


def test_full_dry_run_passes_when_data_and_text_encoders_are_there(tmp_path, offline_text_encoder, capsys):
    names = {
        "t3d_pretrain": "pairs_datalist.json", "t3d_btcv_seg": "dataset_0.json", "t3d_msd_lung": "datalist.json",
        "t3d_brats": "datalist.json",
    }  # fmt: skip
    args = ["--scale", "full", "--dry_run", "--out", str(tmp_path / "out"), "--rows", "t3d,clinicalbert"]
    args += ["--bundles", ",".join(list(names)[1:])]
    for bundle, name in names.items():
        os.makedirs(tmp_path / bundle)
        (tmp_path / bundle / name).write_text("{}")
        args += ["--data_dir", f"{bundle}={tmp_path / bundle}"]
    args += ["--pretrain_override", f"text_encoder_name={offline_text_encoder}"]
    assert main(args) == 2  # the ClinicalBERT ablation keeps its own encoder unless given one
    assert "t3d_pretrain[clinicalbert]: text encoder 'medicalai/ClinicalBERT'" in capsys.readouterr().err
    assert main(args + ["--pretrain_override", f"clinicalbert:text_encoder_name={offline_text_encoder}"]) == 0
    assert "configs resolve" in capsys.readouterr().out


def test_dry_run_reports_a_config_that_does_not_resolve(tmp_path):
    broken = {"ssl_swin:ssl_loss#_target_": "custom.losses.nowhere.Loss"}
    runner = PaperTableRunner(
        "full", str(tmp_path), rows=["ssl_swin"], bundles=["t3d_btcv_seg"], pretrain_overrides=broken
    )
    with pytest.raises(
        DryRunError, match=r"ssl_swin\]: component ssl_loss target 'custom.losses.nowhere.Loss' not importable"
    ):
        runner.dry_run()
