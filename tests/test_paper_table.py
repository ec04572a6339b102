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
from conftest import run_bundle, updated_parameters

from custom.networks.unet_backbone import CPU_TOY_NORM
from custom.weights.checkpoint import safe_load
from t3d_tools.experiments.dry_run import DryRunError
from t3d_tools.experiments.paper_table import main
from t3d_tools.experiments.protocol import COLUMNS, discover_rows
from t3d_tools.experiments.results import (
    README_BEGIN,
    README_END,
    IncompleteResultsError,
    build_report,
    collect_results,
    markdown_table,
    readme_section,
    result_path,
    write_result,
    write_timing,
)
from t3d_tools.experiments.runner import PaperTableRunner
from t3d_tools.experiments.statistics import floor_check, paired_differences, t_quantile_975, verdict_lines

FLOORS = {column.label: column.floor for column in COLUMNS}
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
    runner.pretrain(row, pretrain_seed=1)
    with open(os.path.join(runner.pretrain_dir(row, 1), "pretrain_done.json")) as f:
        done = json.load(f)
    assert done["steps"] == 2 and done["pretrain_seed"] == 1 and done["config"]["overrides"]["seed"] == 1
    # every row pre-trains in #8's regime: K = 8 sub-volume crops per volume, long reports
    assert "cpu_toy_subvolume.json" in done["config"]["files"]
    encoder = safe_load(done["weights"])
    with open(os.path.join(runner.pretrain_dir(row, 1), "models", "image_encoder.json")) as f:
        description = json.load(f)
    # same export format as T3D's: plain BasicUNet encoder names, same description
    assert description["backbone"] == "BasicUNetBackbone" and description["bottleneck_channels"] == 64
    assert encoder and all(k.startswith(tuple(description["encoder_prefixes"])) for k in encoder)
    assert all(torch.isfinite(v.float()).all() for v in encoder.values())
    if row != "t3d":
        t3d = toy_runner(rows=["t3d"])
        t3d.pretrain("t3d", pretrain_seed=1)
        assert set(safe_load(t3d.weights_of("t3d", 1))) == set(encoder)


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
    # learning signal: every part of the model received gradients (a term can be > 0 with its head detached)
    updated = updated_parameters(network, workflow.parser.get_parsed_content("optimizer"))
    heads = {"rotation_head", "contrastive_head"} if method == "ssl_swin" else set()
    prefixes = network.image_backbone.encoder_prefixes
    encoder = {n for n in updated if n.startswith("image_backbone.") and n.split(".", 1)[1].startswith(prefixes)}
    decoder = {n for n in updated if n.startswith("image_backbone.")} - encoder
    assert encoder and decoder and heads == {n.split(".")[0] for n in updated} - {"image_backbone"}, sorted(updated)
    # the toy pre-training's norm (shared by every CPU toy): a transfer that would drop its statistics is refused
    downstream = BasicUNet(
        spatial_dims=3, in_channels=4, out_channels=3, features=(8, 16, 32, 64, 64, 8), norm=CPU_TOY_NORM
    )
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


def test_one_fine_tune_is_selected_on_validation_and_scored_on_a_patient_disjoint_test_split(toy_runner):
    budget = {"finetune_iterations": 2, "validations": 2, "miniature_cases": 10}
    runner = toy_runner(rows=["t3d"], bundles=["t3d_brats"], fractions=[0.1, 1.0], budget=budget)
    assert [(r["mode"], r["fraction"], r["pretrain_seed"]) for r in runner.plan["runs"]] == [
        ("finetune", 0.1, 0), ("finetune", 0.1, 1), ("finetune", 1.0, 0), ("finetune", 1.0, 1), ("probe", 1.0, 0),
        ("probe", 1.0, 1),
    ]  # fmt: skip
    runner.prepare()
    with open(runner.split_datalist("t3d_brats")) as f:
        splits = {
            k: {r["patient_id"] for r in v} for k, v in json.load(f).items() if k in ("training", "validation", "test")
        }
    assert len(splits["test"]) == 2 and len(splits["validation"]) == 2 and len(splits["training"]) == 6
    assert not (splits["test"] & splits["training"] or splits["test"] & splits["validation"])
    runner.pretrain("t3d", pretrain_seed=1)
    run = runner.plan["runs"][1]
    runner.finetune(run)
    with open(result_path(runner.out_dir, run["run_id"])) as f:
        result = json.load(f)
    assert result["status"] == "complete" and result["iterations"] == 2 and result["method"] == "t3d"
    assert result["pretrain_seed"] == 1 and result["mode"] == "finetune" and result["split"] == "test"
    assert result["selected_checkpoint"]["epoch"] in (1, 2) and "--eval_split test" in result["test_command"]
    assert result["config"]["overrides"]["datalist"] == runner.split_datalist("t3d_brats")
    assert set(result["metrics"]) == {"mean_dice", "tc", "wt", "et"}
    # the probe freezes the transferred encoder; everything else is the fine-tune's configuration
    probe = runner.finetune_config(runner.plan["runs"][5], runner.weights_of("t3d", 1))[1]
    assert probe.pop("frozen_encoder") is True and probe["pretrained_weights"].endswith("seed1/models/image_encoder.pt")
    assert "monai.bundle run" in result["command"] and result["config"]["overrides"]["pretrained_weights"].endswith(
        "image_encoder.pt"
    )
    assert runner.finetune(run) == "exists"  # resumable: a finished run is not run again
    with pytest.raises(SystemExit, match="another scale or budget"):  # ... but never mixed with another budget
        toy_runner(rows=["t3d"], bundles=["t3d_brats"], budget={**budget, "finetune_iterations": 3}).prepare()


#: the fake rows and the level each one's scores sit at (t3d far above scratch, a little above ssl_swin)
FAKE_ROWS = {
    "scratch": ("Scratch (no pre-training)", 0.55),
    "ssl_swin": ("Image-only SSL", 0.70),
    "restoration_only": ("Restoration only", 0.62),
    "t3d": ("T3D", 0.72),
    "no_tcl": ("T3D w/o TCL", 0.66),
}
#: per column, a shift of every row's level: lung tumour scratch at 100 % lands below its floor, AUROC above its own
FAKE_SHIFT = {"Lung tumour Dice": -0.30, "Classification macro AUROC": 0.20}
FLOOR_NOTE = "BTCV cannot reach Dice 0.5 from scratch in 30 iterations (calibration)"


def _fake_plan(seeds: int) -> dict:
    """A protocol-2 plan by hand: the five fake rows, a bundle per column (BTCV floor-only), fine-tuning at 10 % and
    100 %, the probe at 100 %, two pre-training seeds (scratch: none) × ``seeds``."""
    modes = {"finetune": [0.1, 1.0], "probe": [1.0]}
    metrics = {c.bundle: [k.metric for k in COLUMNS if k.bundle == c.bundle] for c in COLUMNS}
    bundles = [
        {"name": b, "label": b, "metrics": m, "floor_only": b == "t3d_btcv_seg", "note": ""} for b, m in metrics.items()
    ]
    bundles[0]["note"] = FLOOR_NOTE
    runs = []
    for row in FAKE_ROWS:
        for bundle in bundles:
            for mode, fractions in modes.items():
                for fraction in fractions:
                    if bundle["floor_only"] and (row != "scratch" or mode != "finetune" or fraction != 1.0):
                        continue
                    for pretrain_seed in [None] if row == "scratch" else [0, 1]:
                        for seed in range(seeds):
                            run_id = f"{row}__{bundle['name']}__{mode}__pt{pretrain_seed}__frac{fraction * 100:g}"
                            runs.append(
                                {"row": row, "pretrain_seed": pretrain_seed, "bundle": bundle["name"], "mode": mode,
                                 "fraction": fraction, "seed": seed, "run_id": f"{run_id}__seed{seed}"}
                            )  # fmt: skip
    return {
        "protocol": 2, "scale": "toy", "seeds": seeds, "pretrain_seeds": 2, "fractions": [0.1, 1.0], "modes": modes,
        "rows": [{"name": n, "label": label, "pretrain": n != "scratch", "note": ""} for n, (label, _) in
                 FAKE_ROWS.items()],
        "bundles": bundles, "floors": FLOORS, "skipped_rows": {}, "skipped_bundles": {}, "runs": runs,
        "pairs": [["t3d", "ssl_swin"], ["t3d", "restoration_only"], ["t3d", "scratch"], ["ssl_swin", "scratch"],
                  ["t3d", "no_tcl"], ["t3d", "no_tir"]],
        "command": "python -m t3d_tools.experiments.paper_table --scale toy",
    }  # fmt: skip


def _fake_results(out_dir: str, seeds: int = 3, skip: int | None = None) -> dict:
    """Write the fake plan and a result for every run but ``skip``: row level + column shift, a little less at 10 %
    and for the probe, plus noise of std 0.01."""
    plan = _fake_plan(seeds)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "plan.json"), "w") as f:
        json.dump(plan, f)
    rng = np.random.default_rng(0)
    for index, run in enumerate(plan["runs"]):
        if index == skip:
            continue
        level = FAKE_ROWS[run["row"]][1] - 0.1 * (run["fraction"] < 1) - 0.05 * (run["mode"] == "probe")
        metrics = {
            c.metric: level + FAKE_SHIFT.get(c.label, 0.0) + rng.normal(0, 0.01)
            for c in COLUMNS
            if c.bundle == run["bundle"]
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
    assert result["pretrain_seed"] is None and result["mode"] == "finetune"  # scratch, from the run
    with open(path, "w") as f:  # ... but another run lost a metric
        json.dump({**result, "metrics": {**result["metrics"], "mean_dice": math.nan}}, f)
    with pytest.raises(IncompleteResultsError, match=f"run {plan['runs'][7]['run_id']} is partial"):
        collect_results(str(tmp_path))
    with open(path, "w") as f:  # ... or never finished
        json.dump({**result, "status": "running"}, f)
    with pytest.raises(IncompleteResultsError, match="status 'running'"):
        collect_results(str(tmp_path))
    with open(path, "w") as f:  # ... or is another mode's run
        json.dump({**result, "mode": "probe"}, f)
    with pytest.raises(IncompleteResultsError, match=r"does not match the plan \(mode 'probe'"):
        collect_results(str(tmp_path))
    with pytest.raises(IncompleteResultsError, match="plan.json not found"):
        collect_results(str(tmp_path / "elsewhere"))


def test_table_and_plots_have_the_paper_shape(tmp_path):
    _fake_results(str(tmp_path), seeds=3)
    table_path, plots = build_report(str(tmp_path))
    text = open(table_path).read()
    sections = text.split("### ")[1:]
    assert [s.split("\n")[0] for s in sections] == [
        "Fine-tuning, 10 % of the training labels",
        "Fine-tuning, 100 % of the training labels",
        "Frozen-encoder probe, 100 % of the training labels",
        "Floor check",
        "Paired differences (A − B, mean [95 % interval])",
    ]
    assert "2 pre-training seeds × 3 fine-tuning seeds per cell; scratch: 3 fine-tuning seeds" in text
    assert "test-split score of the checkpoint chosen on validation" in text and f"`t3d_btcv_seg`: {FLOOR_NOTE}" in text
    for index, section in enumerate(sections[:3]):
        lines = [line for line in section.splitlines() if line.startswith("| ")]
        header, body = lines[0], lines[1:]
        assert header.count("|") == len(COLUMNS) + 2
        assert "BTCV mean Dice (at floor)" in header and "Lung tumour Dice (at floor)" in header
        assert "BraTS WT Dice (at floor)" not in header
        assert [line.split(" | ")[0][2:] for line in body] == [label for label, _ in FAKE_ROWS.values()]
        scratch_btcv = index == 1  # the floor-only BTCV ran scratch, fine-tuning, 100 % only; its other cells are —
        assert body[0].count("(n=3)") == len(COLUMNS) - 1 + scratch_btcv and "(n=6)" not in body[0]
        assert all(line.count("(n=6)") == len(COLUMNS) - 1 and line.count("| — |") == 1 for line in body[1:])
    floor, differences = sections[3], sections[4]
    assert "| BTCV mean Dice | 0.5 | 0.5" in floor and f"| at floor | {FLOOR_NOTE} |" in floor
    assert "| Lung tumour Dice | 0.3 | 0.2" in floor and "< floor 0.3 at this budget" in floor
    assert "| BraTS WT Dice | 0.5 | 0.5" in floor and "| clears |" in floor
    header = differences.splitlines()[2]
    assert "Lung" not in header and "BTCV" not in header and header.count(" · ") == 4 * 3  # 4 columns × 3 sections
    assert "- t3d − scratch: beyond noise in 12 of 12 cells (better in 12, worse in 0), within noise in 0." in text
    assert "t3d − no_tir" not in text  # a pair whose row is not in the plan
    assert "seed-level paired t interval" in text and "includes pre-training variance" in text
    assert len(plots) == len(COLUMNS) + 1 and all(os.path.getsize(p) > 5000 for p in plots)
    assert os.path.basename(plots[-1]) == "paired_differences.png"


def _seeds(*per_seed: tuple[float, ...]) -> dict:
    """``{(pretrain seed, seed): value}`` from one tuple per fine-tuning seed of its values per pre-training seed (a
    single value: scratch, pre-training seed None)."""
    return {(p if len(v) > 1 else None, s): x for s, v in enumerate(per_seed) for p, x in enumerate(v)}


def test_floor_check_and_paired_differences_give_t_intervals_and_verdicts():
    assert t_quantile_975(2) == 4.303 and t_quantile_975(1) == 12.706 and t_quantile_975(40) == 2.042
    plan = {
        "protocol": 2, "fractions": [1.0], "modes": {"finetune": [1.0]}, "floors": FLOORS,
        "rows": [{"name": n, "pretrain": n != "scratch"} for n in ("scratch", "ssl_swin", "t3d")],
        "bundles": [{"name": "t3d_brats", "metrics": ["tc", "wt", "et"]}, {"name": "t3d_msd_lung", "metrics": []}],
        "pairs": [["t3d", "scratch"], ["t3d", "ssl_swin"], ["t3d", "no_tcl"]],
    }  # fmt: skip
    wt, lung, tc = "BraTS WT Dice", "Lung tumour Dice", "BraTS TC Dice"
    cells = {  # WT: t3d clearly above scratch, level with ssl_swin; lung: scratch below the floor 0.3; TC: one seed
        ("t3d", "finetune", 1.0, wt): _seeds((0.80, 0.82), (0.81, 0.83), (0.79, 0.81)),
        ("scratch", "finetune", 1.0, wt): _seeds((0.60,), (0.62,), (0.59,)),
        ("ssl_swin", "finetune", 1.0, wt): _seeds((0.84, 0.80), (0.78, 0.80), (0.84, 0.82)),
        ("t3d", "finetune", 1.0, lung): _seeds((0.9, 0.9), (0.9, 0.9)),
        ("scratch", "finetune", 1.0, lung): _seeds((0.1,), (0.2,)),
        ("t3d", "finetune", 1.0, tc): _seeds((0.9, 0.9)),
        ("scratch", "finetune", 1.0, tc): _seeds((0.6,)),
    }
    checks = {c["column"]: c for c in floor_check(plan, cells)}
    assert checks[lung]["status"] == "at floor" and "reaches 0.150 < floor 0.3" in checks[lung]["reason"]
    assert checks[wt]["status"] == "clears" and checks[wt]["n"] == 3
    assert checks[wt]["mean"] == pytest.approx((0.60 + 0.62 + 0.59) / 3)
    differences = {(d["pair"], d["column"]): d for d in paired_differences(plan, cells)}
    assert set(differences) == {(("t3d", "scratch"), wt), (("t3d", "scratch"), tc), (("t3d", "ssl_swin"), wt)}
    better = differences[("t3d", "scratch"), wt]
    d = np.array([0.81 - 0.60, 0.82 - 0.62, 0.80 - 0.59])  # per fine-tune seed: mean over the pre-training seeds
    half = 4.303 * d.std(ddof=1) / math.sqrt(3)
    assert better["n"] == 3 and better["mean"] == pytest.approx(d.mean())
    assert (better["low"], better["high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert better["low"] > 0 and better["verdict"] == "better"
    noise = differences[("t3d", "ssl_swin"), wt]
    assert noise["low"] < 0 < noise["high"] and noise["verdict"] == "within noise"
    single = differences[("t3d", "scratch"), tc]
    assert single["n"] == 1 and math.isinf(single["high"]) and single["verdict"] == "within noise"
    lines = verdict_lines(plan, list(differences.values()))
    assert lines[:2] == [
        "t3d − scratch: beyond noise in 1 of 2 cells (better in 1, worse in 0), within noise in 1.",
        "t3d − ssl_swin: beyond noise in 0 of 1 cells (better in 0, worse in 0), within noise in 1.",
    ]
    assert len(lines) == 3 and "paired t interval" in lines[2]


def test_results_of_another_protocol_are_refused_in_one_line(tmp_path):
    """A protocol-1 folder (last-iteration validation scores, one pre-training seed) is not mixed into a protocol-2
    table: the refusal names the file and what to do."""
    _fake_results(str(tmp_path))
    plan = json.loads((tmp_path / "plan.json").read_text())
    del plan["protocol"]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(
        IncompleteResultsError, match="written by paper-table protocol 1, this code reads protocols 2 and 3"
    ) as err:
        build_report(str(tmp_path))
    assert "\n" not in str(err.value) and str(tmp_path / "plan.json") in str(err.value)


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
    assert "#### Fine-tuning, 10 % of the training labels" in block and "#### Floor check" in block
    assert "(n=6)" in block and "Wall time: 12.0 min" in block and "](results/plots/paired_differences.png)" in block
    assert os.path.isfile(out / "plots" / "btcv_mean_dice.png")


def test_readme_results_match_the_committed_result_files():
    """The README's Results block is what the committed ``results/toy`` regenerates, byte for byte."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(repo, "README.md"), encoding="utf-8").read()
    block = README_BEGIN + text.split(README_BEGIN)[1].split(README_END)[0] + README_END
    assert block == readme_section(os.path.join(repo, "results", "toy"), "results/toy")


def test_committed_table_is_what_the_committed_result_files_generate():
    """``results/toy/paper_table.md`` is :func:`markdown_table` of the committed plan and run files (nothing edited by
    hand, no run missing)."""
    out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "toy")
    plan, results = collect_results(out)
    with open(os.path.join(out, "paper_table.md"), encoding="utf-8") as f:
        assert f.read() == f"# Paper table ({plan['scale']})\n\n" + markdown_table(plan, results, out)


def test_two_cell_smoke_of_the_whole_protocol(tmp_path, synthetic_pairs, offline_text_encoder):
    """The protocol end to end at the smallest size that still has everything: T3D (2 pre-training seeds) and scratch,
    one column group (BraTS), fine-tuning at 100 %, 2 fine-tuning seeds: pre-training, test splits, selection on
    validation, scoring on test, floor check, paired differences with intervals, table, plots."""
    os.makedirs(tmp_path / "work")
    os.symlink(offline_text_encoder, tmp_path / "work" / "text_encoder")
    budget = {**TINY, "finetune_iterations": 2, "validations": 2, "miniature_cases": 6}
    runner = PaperTableRunner(
        "toy", str(tmp_path), seeds=2, pretrain_seeds=2, rows=["scratch", "t3d"], bundles=["t3d_brats"],
        modes=["finetune"], fractions=[1.0], data_dirs={"t3d_pretrain": synthetic_pairs}, budget=budget,
    )  # fmt: skip
    assert len(runner.plan["runs"]) == 2 + 2 * 2 and runner.plan["pairs"] == [["t3d", "scratch"]]
    runner.prepare()
    runner.run_phase("pretrain")
    runner.run_phase("finetune")
    table_path, plots = build_report(str(tmp_path))
    text = open(table_path, encoding="utf-8").read()
    assert "### Fine-tuning, 100 % of the training labels" in text and "### Floor check" in text
    table = text.split("### Fine-tuning, 100 % of the training labels")[1].split("###")[0]
    assert table.count("(n=4)") == 3 and table.count("(n=2)") == 3  # TC / WT / ET; T3D: 2 x 2 runs a cell, scratch 2
    assert "seed-level paired t interval" in text
    # two steps of training leave BraTS at its floor: the verdict then has no cell, and says so
    assert "### Floor check" in text and "- t3d − scratch: beyond noise in 0 of 0 cells" in text
    assert len(plots) == 3 and all(os.path.getsize(p) > 5000 for p in plots)


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
