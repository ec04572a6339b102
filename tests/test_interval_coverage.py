"""The table's intervals are checked by simulation (#27): under a null (no difference between rows) with the variances
measured in the committed v2 results, the protocol-3 interval (pre-training as the unit) covers 0 in at least 93 % of
simulated tables, and the protocol-2 interval (fine-tuning seed as the unit) does not.

Null model per column: y[r, p, k] = a[r, p] + f[k] + e[r, p, k], a ~ N(0, pre-training SD), f and e ~ N(0, fine-tuning
SD / sqrt 2) (so the spread within one pre-training is the measured fine-tuning SD; f is shared by every row, as the
fine-tuning seed fixes the labelled subset, init and crops). Both SDs are measured from ``results/toy`` below, never
typed in. Each design is simulated over R seeded tables through :func:`paired_differences` itself; with R = 2000 a
coverage of 0.95 has a binomial standard error of 0.005, so 0.93 is four of them away, and the checks below leave
that margin on both sides.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from t3d_tools import REPO_ROOT
from t3d_tools.experiments.results import collect_results
from t3d_tools.experiments.statistics import holm, paired_differences, pretraining_unit_interval, summarise

REPETITIONS = 2000
COLUMNS = ("Lung tumour Dice", "BraTS TC Dice", "BraTS WT Dice", "BraTS ET Dice", "Classification macro AUROC")


def measured_variances() -> dict[str, tuple[float, float]]:
    """Per column of the committed v2 table: (pre-training SD, fine-tuning SD), pooled over the pre-trained rows' cells.
    Pre-training SD: the SD between pre-training seeds of a cell's mean over its fine-tuning seeds; fine-tuning SD: the
    SD of the runs around their pre-training's mean."""
    plan, results = collect_results(os.path.join(REPO_ROOT, "results", "toy"))
    between, within = {}, {}
    for (row, _, _, column), values in summarise(plan, results).items():
        if row == "scratch" or column not in COLUMNS:
            continue
        table = np.asarray(
            [[values[(p, k)] for k in sorted({k for _, k in values})] for p in sorted({p for p, _ in values})]
        )
        between.setdefault(column, []).append(table.mean(axis=1).var(ddof=1))
        within.setdefault(column, []).append(table.var(axis=1, ddof=1).mean())
    return {c: (float(np.sqrt(np.mean(between[c]))), float(np.sqrt(np.mean(within[c])))) for c in COLUMNS}


def _plan(interval: str | None, b_row: str) -> dict:
    plan = {
        "bundles": [{"name": n} for n in ("t3d_msd_lung", "t3d_brats", "t3d_bimcv_cls")],
        "floors": {},
        "rows": [{"name": "t3d"}, {"name": b_row}],
        "pairs": [["t3d", b_row]],
        "modes": {"probe": [0.1]},
    }
    return {**plan, "interval": interval} if interval else plan


def coverage(
    interval: str | None, pretrain_seeds: int, seeds: int, b_row: str, seed: int, t3d_spread: float = 1.0
) -> dict[str, float]:
    """Per column: the fraction of R simulated null tables whose 95 % interval for t3d − ``b_row`` holds 0;
    ``t3d_spread`` scales T3D's pre-training SD (unequal variances)."""
    rng = np.random.default_rng(seed)
    sds = measured_variances()
    plan, covered = _plan(interval, b_row), dict.fromkeys(COLUMNS, 0)
    for _ in range(REPETITIONS):
        cells = {}
        for column, (pretrain_sd, finetune_sd) in sds.items():
            shared = rng.normal(0, finetune_sd / np.sqrt(2), seeds)
            for row in ("t3d", b_row):
                # one pre-training effect per pre-training seed, shared by its fine-tuning runs; scratch has none
                scale = pretrain_sd * (t3d_spread if row == "t3d" else 1.0)
                effects = {None: 0.0} if row == "scratch" else dict(enumerate(rng.normal(0, scale, pretrain_seeds)))
                noise = finetune_sd / np.sqrt(2)
                cells[(row, "probe", 0.1, column)] = {
                    (p, k): effects[p] + shared[k] + rng.normal(0, noise) for p in effects for k in range(seeds)
                }
        for d in paired_differences(plan, cells):
            covered[d["column"]] += d["low"] <= 0 <= d["high"]
    return {c: covered[c] / REPETITIONS for c in COLUMNS}


def test_measured_variances_are_those_of_the_committed_results():
    sds = measured_variances()
    assert set(sds) == set(COLUMNS) and all(0 < p < 1 and 0 < f < 1 for p, f in sds.values())
    assert sds["Lung tumour Dice"][0] > sds["Classification macro AUROC"][0]  # Dice spreads far more than AUROC


@pytest.mark.parametrize(
    "design",
    [(3, 3, "restoration_only", 1.0), (3, 3, "restoration_only", 2.0), (2, 3, "restoration_only", 1.0),
     (3, 3, "scratch", 1.0)],
)  # fmt: skip
def test_pretraining_unit_interval_covers_zero_under_the_null(design):
    """v3 design (3 x 3), T3D's pre-trainings twice as spread as the other row's, the v2 design (2 x 3), and T3D
    against scratch (whose units are its fine-tuning runs)."""
    pretrain_seeds, seeds, b_row, spread = design
    found = coverage("pretraining_unit", pretrain_seeds, seeds, b_row, seed=27, t3d_spread=spread)
    print(f"pre-training unit, {pretrain_seeds} x {seeds}, t3d − {b_row}, T3D spread x{spread:g}: " + ", ".join(
        f"{c} {v:.3f}" for c, v in found.items()))  # fmt: skip
    assert all(v >= 0.93 for v in found.values()), found


def test_fine_tuning_seed_interval_of_protocol_2_undercovers():
    """The v2 design (2 pre-trainings x 3 fine-tuning seeds): the old interval misses 0 too often on every column."""
    found = coverage(None, 2, 3, "restoration_only", seed=27)
    print("fine-tuning seed unit (protocol 2), 2 x 3: " + ", ".join(f"{c} {v:.3f}" for c, v in found.items()))
    assert all(v < 0.91 for v in found.values()), found


def test_interval_and_holm_on_known_cases():
    a = {(p, k): 1.0 + 0.1 * p + 0.01 * k for p in range(3) for k in range(3)}
    b = {(p, k): 0.0 + 0.1 * p + 0.01 * k for p in range(3) for k in range(3)}
    found = pretraining_unit_interval(a, b)
    assert found["mean"] == pytest.approx(1.0) and found["units"] == (3, 3) and found["low"] > 0.5
    single = pretraining_unit_interval({(0, 0): 1.0, (0, 1): 1.1}, b)  # one pre-training: no variance estimate
    assert single["low"] == -np.inf and single["high"] == np.inf
    assert [h["p_adjusted"] for h in holm([0.01, 0.04, 0.03])] == pytest.approx([0.03, 0.06, 0.06])
    assert [h["rejected"] for h in holm([0.01, 0.04, 0.03])] == [True, False, False]
