"""Statistics of the paper table: each cell's values over seeds, the floor check, and paired differences between rows
with 95 % t intervals.

The pairing unit is the fine-tuning seed: it fixes the labelled subset and the initialisation of the new layers for
every row, so the difference of two rows at one seed cancels that shared variation. A row's value at a seed is the
mean over its pre-training seeds (scratch has none: its single value), so the spread of the differences over seeds
also carries the pre-training variance. A column whose scratch baseline does not clear its floor at full labels says
nothing about pre-training at this budget; it is left out of the differences and the verdicts.
"""

from __future__ import annotations

import math

import numpy as np

from t3d_tools.experiments.protocol import COLUMNS

__all__ = ["summarise", "t_quantile_975", "floor_check", "paired_differences", "verdict_lines"]

#: Student's t 0.975 quantiles for df = 1..30 (two-sided 95 %); no scipy at run time
T_975: tuple[float, ...] = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
INTERVAL_METHOD = (
    "Intervals: seed-level paired t interval (95 %, df = n − 1), n = fine-tuning seeds; a row's value at a seed is the "
    "mean over its pre-training seeds, so the interval includes pre-training variance. With n < 2 the interval is "
    "infinite (within noise)."
)


def summarise(plan: dict, results: list[dict]) -> dict[tuple, dict[tuple, float]]:
    """``{(row, mode, fraction, column label): {(pretrain seed, seed): value}}`` for every column whose bundle is in
    the plan."""
    bundles = {b["name"] for b in plan["bundles"]}
    cells: dict[tuple, dict[tuple, float]] = {}
    for result in results:
        if result["bundle"] not in bundles:
            continue
        for column in COLUMNS:
            if column.bundle == result["bundle"]:
                key = (result["row"], result["mode"], float(result["fraction"]), column.label)
                cells.setdefault(key, {})[(result["pretrain_seed"], result["seed"])] = float(
                    result["metrics"][column.metric]
                )
    return cells


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (beyond 30: the df = 30 value, slightly
    wide)."""
    if df < 1:
        raise ValueError(f"df: expected >= 1, found {df}")
    return T_975[min(df, len(T_975)) - 1]


def floor_check(plan: dict, cells: dict) -> list[dict]:
    """Per column of the plan: ``column``, ``floor``, scratch's fine-tune ``mean`` at 100 % of the labels and its
    ``n``, ``status`` (``clears``, ``at floor``, or ``not checked`` without a floor or a scratch run) and ``reason``.
    A ``floor_only`` bundle is at floor whatever its scratch run reached (calibration found it could not clear)."""
    bundles = {b["name"]: b for b in plan["bundles"]}
    checks = []
    for column in (c for c in COLUMNS if c.bundle in bundles):
        bundle = bundles[column.bundle]
        floor = plan["floors"].get(column.label)
        values = list(cells.get(("scratch", "finetune", 1.0, column.label), {}).values())
        mean = float(np.mean(values)) if values else None
        below = floor is not None and mean is not None and mean < floor
        if below or bundle.get("floor_only"):
            status = "at floor"
            measured = f"scratch at 100 % reaches {mean:.3f} < floor {floor:g} at this budget" if below else ""
            reason = bundle.get("note") or measured or "run at the floor only (could not clear it in calibration)"
        elif mean is not None and floor is not None:
            status, reason = "clears", ""
        else:
            status, reason = "not checked", "no floor set" if floor is None else "no scratch fine-tune at 100 %"
        checks.append(
            {"column": column.label, "floor": floor, "mean": mean, "n": len(values), "status": status, "reason": reason}
        )
    return checks


def _pairs(plan: dict) -> list[tuple[str, str]]:
    """The plan's pairs whose two rows are both in the plan."""
    rows = {r["name"] for r in plan["rows"]}
    return [(a, b) for a, b in plan["pairs"] if a in rows and b in rows]


def _by_seed(values: dict[tuple, float]) -> dict[int, float]:
    """A row's value per fine-tuning seed: the mean over its pre-training seeds."""
    grouped: dict[int, list[float]] = {}
    for (_, seed), value in values.items():
        grouped.setdefault(seed, []).append(value)
    return {seed: float(np.mean(v)) for seed, v in grouped.items()}


def paired_differences(plan: dict, cells: dict) -> list[dict]:
    """Per pair (A, B) of the plan, per (mode, fraction) in plan order and per column not at floor where both rows
    ran: ``pair``, ``mode``, ``fraction``, ``column``, ``n`` (common fine-tuning seeds), ``mean`` of d = A − B,
    its 95 % t interval ``low`` / ``high`` and the ``verdict`` (``better`` if low > 0, ``worse`` if high < 0, else
    ``within noise``)."""
    kept = [c["column"] for c in floor_check(plan, cells) if c["status"] != "at floor"]
    differences = []
    for a, b in _pairs(plan):
        for mode, fractions in plan["modes"].items():
            for fraction in (float(f) for f in fractions):
                for label in kept:
                    units_a = _by_seed(cells.get((a, mode, fraction, label), {}))
                    units_b = _by_seed(cells.get((b, mode, fraction, label), {}))
                    seeds = sorted(units_a.keys() & units_b.keys())
                    if not seeds:
                        continue
                    d = np.asarray([units_a[s] - units_b[s] for s in seeds])
                    mean = float(d.mean())
                    half = (
                        t_quantile_975(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))
                        if len(d) > 1
                        else math.inf
                    )
                    low, high = mean - half, mean + half
                    verdict = "better" if low > 0 else "worse" if high < 0 else "within noise"
                    differences.append(
                        {
                            "pair": (a, b),
                            "mode": mode,
                            "fraction": fraction,
                            "column": label,
                            "n": len(d),
                            "mean": mean,
                            "low": low,
                            "high": high,
                            "verdict": verdict,
                        }
                    )
    return differences


def verdict_lines(plan: dict, differences: list[dict]) -> list[str]:
    """One line per pair of the plan counting its cells beyond noise (better / worse) and within noise, then the
    sentence stating how the intervals were made."""
    lines = []
    for pair in _pairs(plan):
        verdicts = [d["verdict"] for d in differences if d["pair"] == pair]
        better, worse = verdicts.count("better"), verdicts.count("worse")
        lines.append(
            f"{pair[0]} − {pair[1]}: beyond noise in {better + worse} of {len(verdicts)} cells (better in {better}, "
            f"worse in {worse}), within noise in {len(verdicts) - better - worse}."
        )
    return [*lines, INTERVAL_METHOD]
