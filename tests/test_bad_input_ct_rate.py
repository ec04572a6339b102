"""Bad input of the CT-RATE and BIMCV-R curations (issue #28), under the bad-input corpus's contract
(``tests/test_bad_input_corpus.py``): a non-zero exit status, the last line printed is one line ``error: ...`` naming
the bad file (and line or column), and nothing is written (the output folder is not even created).

Kept in its own module (the corpus's fork server runs bundle entry points; these are two curation commands that
import no torch): each case copies a miniature, plants one defect, and runs the command-line entry the way a user
does (``python -m t3d_tools.curation.{ct_rate,bimcv_r} curate``) in this process, its ``sys.exit`` caught; one case
per command also runs as a true subprocess.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from t3d_tools.curation.bimcv_r.miniature import make_miniature as make_bimcv_r
from t3d_tools.curation.ct_rate.miniature import make_miniature as make_ct_rate

REPORTS = os.path.join("radiology_text_reports", "train_reports.csv")
LABELS = os.path.join("multi_abnormality_labels", "train_predicted_labels.csv")
METADATA = os.path.join("metadata", "train_metadata.csv")
VOLUME = os.path.join("train", "train_1", "train_1_a", "train_1_a_1.nii.gz")
BIMCV_R_VOLUME = os.path.join("ct", "sub-S1000_ses-E2000_run-1_bp-chest_ct.nii.gz")


def _edit_csv(path: str, edit) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    rows = edit(rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def _drop_column(name: str):
    def edit(rows):
        index = rows[0].index(name)
        return [r[:index] + r[index + 1 :] for r in rows]

    return edit


def _set_cell(column: str, value: str):
    def edit(rows):
        rows[1][rows[0].index(column)] = value
        return rows

    return edit


def _copy_file(source: str, target: str):
    def plant(root: str) -> None:
        os.makedirs(os.path.dirname(os.path.join(root, target)), exist_ok=True)
        shutil.copy(os.path.join(root, source), os.path.join(root, target))

    return plant


# kind -> (plant(root), what the error line must name)
CT_RATE_CASES = {
    "csv_missing_column": (lambda r: _edit_csv(os.path.join(r, REPORTS), _drop_column("Findings_EN")),
                           [REPORTS, "Findings_EN", "findings"]),
    "volume_listed_but_absent": (lambda r: os.remove(os.path.join(r, VOLUME)), [REPORTS, "train_1_a_1.nii.gz"]),
    "volume_present_but_unlisted": (_copy_file(VOLUME, os.path.join("train", "train_9", "train_9_a",
                                                                    "train_9_a_1.nii.gz")),
                                    [REPORTS, "train_9_a_1.nii.gz"]),
    "labels_for_unknown_volume": (lambda r: _edit_csv(os.path.join(r, LABELS), lambda rows: rows + [
        ["train_77_a_1.nii.gz"] + rows[1][1:]]), [LABELS, "train_77_a_1.nii.gz"]),
    "metadata_zero_spacing": (lambda r: _edit_csv(os.path.join(r, METADATA), _set_cell("ZSpacing", "0")),
                              [METADATA + ":2", "ZSpacing"]),
    "duplicate_volume_name_in_csv": (lambda r: _edit_csv(os.path.join(r, REPORTS), lambda rows: rows + [rows[1]]),
                                     [REPORTS, "train_1_a_1.nii.gz", "again"]),
    "duplicate_volume_file": (_copy_file(VOLUME, os.path.join("train", "train_2", "train_1_a_1.nii.gz")),
                              ["train_1_a_1.nii.gz", "once"]),
}  # fmt: skip
BIMCV_R_CASES = {
    "csv_missing_column": (lambda r: _edit_csv(os.path.join(r, "BIMCV-R.csv"), _drop_column("Report_en")),
                           ["BIMCV-R.csv", "Report_en"]),
    "volume_listed_but_absent": (lambda r: os.remove(os.path.join(r, BIMCV_R_VOLUME)),
                                 ["BIMCV-R.csv:2", "sub-S1000_ses-E2000"]),
    "duplicate_study_rows": (lambda r: _edit_csv(os.path.join(r, "BIMCV-R.csv"), lambda rows: rows + [rows[1]]),
                             ["BIMCV-R.csv", "sub-S1000_ses-E2000", "again"]),
    "duplicate_volume_file": (_copy_file(BIMCV_R_VOLUME, os.path.join("ct", "extra", os.path.basename(BIMCV_R_VOLUME))),
                              ["sub-S1000_ses-E2000_run-1_bp-chest_ct.nii.gz", "once"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("templates")
    ct_rate = str(base / "ct_rate" / "dataset")
    make_ct_rate(ct_rate, train_patients=3, valid_patients=1, many_scans=False, downsample=4)
    bimcv_r = str(base / "bimcv_r")
    make_bimcv_r(bimcv_r, patients=4)
    return {"ct_rate": ct_rate, "bimcv_r": bimcv_r}


def _run_in_process(module: str, argv: list[str], capfd) -> tuple[int, list[str]]:
    import runpy

    saved = sys.argv
    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = saved
    captured = capfd.readouterr()
    return code, [line for line in (captured.out + captured.err).splitlines() if line.strip()]


def _case(templates, tmp_path, dataset: str, plant) -> tuple[str, str]:
    root = str(tmp_path / "input")
    shutil.copytree(templates[dataset], root)
    plant(root)
    return root, str(tmp_path / "out")


def _check(code, lines, out, names):
    assert code == 1, lines
    last = lines[-1]
    assert last.startswith("error: ") and "expected" in last, lines
    for name in names:
        assert name in last, (name, last)
    assert not os.path.exists(out)  # nothing written, not even the folder


CASES = [("ct_rate", kind) for kind in sorted(CT_RATE_CASES)] + [("bimcv_r", kind) for kind in sorted(BIMCV_R_CASES)]


@pytest.mark.parametrize("dataset, kind", CASES, ids=[f"{d}-{k}" for d, k in CASES])
def test_bad_input_is_one_line_and_writes_nothing(dataset, kind, templates, tmp_path, capfd):
    plant, names = (CT_RATE_CASES if dataset == "ct_rate" else BIMCV_R_CASES)[kind]
    root, out = _case(templates, tmp_path, dataset, plant)
    code, lines = _run_in_process(
        f"t3d_tools.curation.{dataset}", ["curate", "--root", root, "--out", out, "--progress", "False"], capfd
    )
    _check(code, lines, out, names)


@pytest.mark.parametrize("dataset, kind", [("ct_rate", "metadata_zero_spacing"), ("bimcv_r", "duplicate_study_rows")])
def test_bad_input_end_to_end_in_a_subprocess(dataset, kind, templates, tmp_path):
    plant, names = (CT_RATE_CASES if dataset == "ct_rate" else BIMCV_R_CASES)[kind]
    root, out = _case(templates, tmp_path, dataset, plant)
    command = [sys.executable, "-m", f"t3d_tools.curation.{dataset}", "curate", "--root", root, "--out", out]
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    _check(done.returncode, lines, out, names)
