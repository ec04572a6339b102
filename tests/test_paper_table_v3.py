"""The registered paper-table protocol (#27): the committed protocol file states one primary contrast, a Holm family,
both controls and the rules; plans and the protocol are never changed after a run; the control rows replace the
reports and pre-train through the runner, recording held-out R@1 with its binomial p; the table gives the reading
the registered rules give; ``scripts/paper_table_gpu.sh`` resolves on a CPU dry run."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from custom.data.checks import DataError
from custom.data.report_controls import oracle_text, with_oracle_reports, with_shuffled_reports
from t3d_tools import REPO_ROOT
from t3d_tools.experiments.bundle_runs import bundle_parser
from t3d_tools.experiments.protocol import (
    PRETRAIN_BUNDLE,
    PROTOCOL_V3,
    build_registered_plan,
    discover_rows,
    load_protocol,
    plan_sha256,
)
from t3d_tools.experiments.results import IncompleteResultsError, build_report, write_result
from t3d_tools.experiments.runner import PaperTableRunner

V1_WORLD = "custom.data.make_synthetic_pairs.ensure_synthetic_pairs"  # today's world, until #26's is merged


def test_registered_protocol_states_one_primary_contrast_controls_and_rules():
    protocol, digest = load_protocol()
    primary = protocol["primary"]
    assert (primary["a"], primary["b"], primary["mode"], primary["metric"]) == (
        "t3d", "restoration_only", "probe", "macro_auroc_subtle",
    )  # fmt: skip
    assert primary["fraction"] <= 0.1 and protocol["t3d"]["report_affinity"] == "text"
    assert protocol["secondary"]["adjustment"] == "holm" and primary not in protocol["secondary"]["contrasts"]
    rows = {r.name for r in discover_rows("toy")[0]}
    assert {protocol["controls"]["positive"]["row"], protocol["controls"]["negative"]["row"]} <= rows
    assert protocol["pretrain_seeds"] >= 3 and protocol["test"]["min_studies"] >= 256
    assert protocol["budgets"]["calibrated_on"] == "validation" and protocol["interval"] == "pretraining_unit"
    assert {"report_to_volume_R1", "binomial_p"} <= set(protocol["retrieval"]["record"])
    plan = build_registered_plan("toy")
    assert plan["registered"]["sha256"] == digest and plan["interval"] == "pretraining_unit"
    cell = [r for r in plan["runs"] if (r["bundle"], r["mode"], r["fraction"]) == ("t3d_bimcv_cls", "probe", 0.1)]
    for row in protocol["rows"]:  # every row runs the primary cell: 3 pre-trainings x 3 fine-tuning seeds
        runs = [r for r in cell if r["row"] == row]
        expected = protocol["seeds"] * (1 if row == "scratch" else protocol["pretrain_seeds"])
        assert len(runs) == expected, row
    classifier = next(b for b in plan["bundles"] if b["name"] == "t3d_bimcv_cls")
    assert "macro_auroc_subtle" in classifier["metrics"]  # a run without the primary metric is partial


def test_a_plan_changed_after_a_run_is_refused(tmp_path):
    protocol_copy = tmp_path / "protocol.json"
    shutil.copy(PROTOCOL_V3, protocol_copy)
    out = tmp_path / "out"
    first = PaperTableRunner("toy", str(out), protocol=str(protocol_copy), world=V1_WORLD)
    again = PaperTableRunner("toy", str(out), protocol=str(protocol_copy), world=V1_WORLD)
    first.plan["command"], again.plan["command"] = "first command", "resumed with another command line"
    assert first.plan_sha256 == again.plan_sha256  # the same plan, whatever the command line
    _, overrides = first.pretrain_config(first.row("oracle_text"), 2)
    assert overrides["report_affinity"] == "text" and overrides["seed"] == 2  # the registered T3D, every T3D row
    assert overrides["prepare_data#synthetic_pairs"]["_target_"] == V1_WORLD  # --world replaces the generator
    assert overrides["oracle_labels_datalist"].endswith("classification_datalist.json")
    os.makedirs(out)
    (out / "plan.json").write_text(json.dumps(first.plan))  # as ``prepare`` writes it before the first run
    content = json.loads(protocol_copy.read_text())
    content["pretrain_seeds"] = 4  # "one more pre-training" after seeing results
    protocol_copy.write_text(json.dumps(content))
    edited = PaperTableRunner("toy", str(out), protocol=str(protocol_copy), world=V1_WORLD)
    with pytest.raises(SystemExit, match="plans are never edited after a run") as caught:
        edited.prepare()
    assert "\n" not in str(caught.value)
    with pytest.raises(SystemExit, match="registered protocol fixes rows"):
        PaperTableRunner("toy", str(out), seeds=5, protocol=str(protocol_copy))


def _registered_results(out_dir: str, protocol_path: str, oracle_gain: float) -> dict:
    """A complete fake protocol-3 result set: every row at the same level except ``oracle_text`` (+``oracle_gain``),
    pre-training effects of SD 0.02 and run noise of SD 0.01."""
    plan = build_registered_plan("toy", protocol_path)
    plan["budget"] = {}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "plan.json"), "w") as f:
        json.dump(plan, f)
    rng = np.random.default_rng(7)
    effects = {(r["name"], p): rng.normal(0, 0.02) for r in plan["rows"] for p in range(plan["pretrain_seeds"])}
    for run in plan["runs"]:
        level = 0.7 + (oracle_gain if run["row"] == "oracle_text" else 0.0)
        level += effects.get((run["row"], run["pretrain_seed"]), 0.0)
        bundle = next(b for b in plan["bundles"] if b["name"] == run["bundle"])
        metrics = {m: level + rng.normal(0, 0.01) for m in bundle["metrics"]}
        if run["bundle"] == "t3d_bimcv_cls":
            metrics["test_studies"] = 256.0
        pretrain = None
        if run["pretrain_seed"] is not None:
            retrieval = None
            if run["row"] not in ("ssl_swin", "restoration_only"):
                retrieval = {"report_to_volume_R1": 0.25, "chance_R1": 1 / 64, "validation_studies": 64, "hits": 16,
                             "binomial_p": 1e-9}  # fmt: skip
            pretrain = {"row": run["row"], "pretrain_seed": run["pretrain_seed"], "steps": 500, "retrieval": retrieval}
        write_result(out_dir, run, metrics, "cmd", {"files": []}, pretrain=pretrain, plan_sha256=plan_sha256(plan))
    return plan


def test_registered_table_reads_as_the_rules_say_and_refuses_edits(tmp_path):
    protocol_copy = tmp_path / "protocol.json"
    shutil.copy(PROTOCOL_V3, protocol_copy)
    out = str(tmp_path / "seen")
    _registered_results(out, str(protocol_copy), oracle_gain=0.15)
    table = open(build_report(out)[0], encoding="utf-8").read()
    assert "**Primary:** t3d − restoration_only, probe 10 % · Subtle-finding macro AUROC" in table
    assert "positive control, oracle_text − restoration_only" in table and "rule holds" in table
    assert "cannot be told from restoration_only" in table and "p (Holm)" in table
    assert "| t3d | 0 | 500 | 0.250 | 0.016 | 64 | 1e-09 |" in table and "(registered minimum 256)" in table
    assert "Paired differences" not in table  # only the registered contrasts are tested

    blind = str(tmp_path / "blind")  # the positive control shows nothing: no conclusion from the primary contrast
    _registered_results(blind, str(protocol_copy), oracle_gain=0.0)
    assert "draws no conclusion from the primary contrast" in open(build_report(blind)[0], encoding="utf-8").read()

    plan_path = os.path.join(out, "plan.json")
    plan = json.load(open(plan_path, encoding="utf-8"))
    plan["floors"]["Lung tumour Dice"] = 0.1  # edited after its runs
    with open(plan_path, "w") as f:
        json.dump(plan, f)
    with pytest.raises(IncompleteResultsError, match="plan.json was edited after its runs") as caught:
        build_report(out)
    assert "\n" not in str(caught.value)
    content = json.loads(protocol_copy.read_text())
    content["primary"]["fraction"] = 1.0  # a registered contrast moved after the run
    protocol_copy.write_text(json.dumps(content))
    with pytest.raises(IncompleteResultsError, match="never edited after a run"):
        build_report(blind)


def test_control_report_rewrites(tmp_path):
    rows = [{"image": f"i{i}", "study_id": f"s{i}", "report": f"report {i}"} for i in range(6)]
    shuffled = with_shuffled_reports(rows, seed=3)
    assert sorted(r["report"] for r in shuffled) == sorted(r["report"] for r in rows)
    assert all(a["report"] != b["report"] for a, b in zip(rows, shuffled))  # no study keeps its own report
    assert shuffled == with_shuffled_reports(rows, seed=3) and shuffled != with_shuffled_reports(rows, seed=4)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({
        "class_names": ["nodule", "effusion"],
        "training": [{"image": f"i{i}", "study_id": f"s{i}", "label_vector": [i % 2, i % 3 == 0]} for i in range(5)],
    }))  # fmt: skip
    oracle = with_oracle_reports(rows[:5], str(labels))
    assert [r["report"] for r in oracle[:4]] == [
        oracle_text(["effusion"]), oracle_text(["nodule"]), oracle_text([]), oracle_text(["nodule", "effusion"])
    ]  # fmt: skip
    with pytest.raises(DataError, match="found none for 's5'") as caught:
        with_oracle_reports(rows, str(labels))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("row", ["oracle_text", "shuffled_reports"])
def test_control_rows_pretrain_two_steps_with_their_reports(tmp_path, synthetic_pairs, offline_text_encoder, row):
    """Through the runner at toy size: the rows T3D trains on carry the control's reports, and the pre-training
    record holds held-out R@1 with its binomial p."""
    os.makedirs(tmp_path / "work")
    os.symlink(offline_text_encoder, tmp_path / "work" / "text_encoder")
    budget = {"pretrain_overrides": {"max_epochs": 1, "val_interval": 1, "batch_size": 2}, "pretrain_epoch_length": 2}
    runner = PaperTableRunner("toy", str(tmp_path), seeds=1, rows=[row], data_dirs={PRETRAIN_BUNDLE: synthetic_pairs},
                              budget=budget)  # fmt: skip
    configs, overrides = runner.pretrain_config(runner.row(row), 1)
    parser = bundle_parser(PRETRAIN_BUNDLE, configs, overrides)
    trained = parser.get_parsed_content("train#rows")
    datalist = json.load(open(os.path.join(synthetic_pairs, "pairs_datalist.json"), encoding="utf-8"))
    if row == "oracle_text":
        assert [r["report"] for r in trained] == [oracle_text(r["labels"]) for r in datalist["training"]]
    else:
        original = parser.get_parsed_content("train#rows#rows")
        assert sorted(r["report"] for r in trained) == sorted(r["report"] for r in original)
        assert not any(a["report"] == b["report"] for a, b in zip(trained, original))
    runner.pretrain(row, pretrain_seed=1)
    done = json.load(open(os.path.join(runner.pretrain_dir(row, 1), "pretrain_done.json"), encoding="utf-8"))
    retrieval = done["retrieval"]
    assert done["steps"] == 2 and retrieval["validation_studies"] == len(datalist["validation"])
    assert 0 < retrieval["binomial_p"] <= 1 and retrieval["chance_R1"] == pytest.approx(1 / len(datalist["validation"]))
    assert done["plan_sha256"] == runner.plan_sha256


def test_gpu_script_resolves_on_a_cpu_dry_run(tmp_path):
    """``scripts/paper_table_gpu.sh --dry_run``: every config of the registered plan at GPU size resolves (nothing is
    built or trained); the registered world is named in one line while its module is not in this tree."""
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "gpu"), "PYTHONPATH": REPO_ROOT}
    script = os.path.join(REPO_ROOT, "scripts", "paper_table_gpu.sh")
    done = subprocess.run(["bash", script, "--dry_run", "--world", V1_WORLD], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("dry run (gpu):") and "t3d_pretrain[oracle_text]" in done.stdout
    registered = subprocess.run(["bash", script, "--dry_run"], env=env, capture_output=True, text=True)
    if importlib.util.find_spec("custom.data.synthetic_world") is None:
        assert registered.returncode == 2 and "custom.data.synthetic_world.ensure_world" in registered.stderr
        assert len(registered.stderr.strip().splitlines()) == 1
    else:
        assert registered.returncode == 0, registered.stderr[-2000:]
