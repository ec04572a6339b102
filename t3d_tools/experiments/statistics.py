"""Statistics of the paper table: each cell's values over seeds, the floor check, and differences between rows with
95 % t intervals.

Protocol 3 (``plan["interval"] == "pretraining_unit"``): the *pre-training* is the unit. A cell of row r holds
y[p, k] for pre-training seed p and fine-tuning seed k; the model is y = mu_r + a[r, p] + f[k] + e[r, p, k], with a
pre-training effect a, a fine-tuning-seed effect f shared by every row (same labelled subset, new-layer init and crops)
and run noise e. A pre-trained row's units are its pre-trainings, each summarised by M[p] = mean over the fine-tuning
seeds every unit of both rows ran; M's spread over p is Var(a) + Var(e) / K, and f's mean is the same in every unit
of both rows, so it cancels in the difference. A row without pre-training (scratch) has its fine-tuning runs as
units (their spread also carries f: conservative). The difference of the rows' unit means gets a t interval with the
unpooled standard error and, with as many units on both sides, df = 2n − 2 (robust to unequal variances at equal n),
otherwise Satterthwaite's df rounded down (conservative); a row with a single pre-training has no estimate of the
pre-training variance, and its interval is infinite. :func:`holm` adjusts the p-values of a family of secondary
contrasts.

Protocol 2 (the committed v2 table, rendered as it was published): the unit is the fine-tuning seed, a row's value at
a seed is the mean over its pre-training seeds. The pre-training effects then enter every paired difference as one
constant shift, so that interval leaves out the pre-training variance (issue #27: under a null with the measured
variances it excludes 0 far more often than 5 %; ``tests/test_interval_coverage.py``).

A column whose scratch baseline does not clear its floor at full labels says nothing about pre-training at this
budget; it is left out of the differences and the verdicts.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from t3d_tools.experiments.protocol import COLUMNS

__all__ = [
    "summarise",
    "t_quantile_975",
    "t_cdf",
    "t_quantile",
    "pretraining_unit_interval",
    "holm",
    "binomial_tail",
    "floor_check",
    "paired_differences",
    "verdict_lines",
    "registered_contrasts",
]

#: Student's t 0.975 quantiles for df = 1..30 (two-sided 95 %); no scipy at run time
T_975: tuple[float, ...] = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
#: the sentence each table prints about its intervals, per ``plan["interval"]`` (absent: protocol 2's)
INTERVAL_METHODS = {
    "fine_tuning_seed": (
        "Intervals: seed-level paired t interval (95 %, df = n − 1), n = fine-tuning seeds; a row's value at a seed is "
        "the mean over its pre-training seeds, so the interval includes pre-training variance. With n < 2 the "
        "interval is infinite (within noise)."
    ),
    "pretraining_unit": (
        "Intervals: the pre-training is the unit (95 % two-sample t interval over pre-trainings, each the mean of its "
        "fine-tuning seeds; scratch's units are its fine-tuning runs; df = 2n − 2, or Satterthwaite's rounded down for "
        "unequal unit counts), so they include "
        "the variance between pre-trainings; checked by simulation (coverage ≥ 0.93 under a null with the measured "
        "variances). A row with one pre-training gets an infinite interval."
    ),
}


def summarise(plan: dict, results: list[dict]) -> dict[tuple, dict[tuple, float]]:
    """``{(row, mode, fraction, column label): {(pretrain seed, seed): value}}`` for every column whose bundle is in
    the plan."""
    bundles = {b["name"] for b in plan["bundles"]}
    cells: dict[tuple, dict[tuple, float]] = {}
    for result in results:
        if result["bundle"] not in bundles:
            continue
        for column in COLUMNS:
            if column.bundle == result["bundle"] and column.metric in result["metrics"]:
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


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom: Simpson's rule on the density from 0 (absolute
    error below 1e-6 for df >= 1 and |t| <= 100, checked against the table; no scipy at run time)."""
    if df <= 0:
        raise ValueError(f"df: expected > 0, found {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    x = np.linspace(0.0, abs(t), 4001)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))
    h = x[1] - x[0]
    half = h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())
    return 0.5 + math.copysign(half, t)


@functools.lru_cache(maxsize=256)
def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile (0 < q < 1) of Student's t with ``df`` > 0 degrees of freedom (bisection on
    :func:`t_cdf`)."""
    if not 0 < q < 1:
        raise ValueError(f"q: expected in (0, 1), found {q}")
    if q < 0.5:
        return -t_quantile(1 - q, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < q:
        low, high = high, high * 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df) < q else (low, mid)
    return (low + high) / 2


def _units(values: dict[tuple, float], seeds: list[int]) -> np.ndarray:
    """A cell's units: per pre-training seed the mean over ``seeds`` (fine-tuning), or, without pre-training, the
    fine-tuning runs themselves."""
    if all(p is None for p, _ in values):
        return np.asarray([values[(None, k)] for k in seeds])
    pretrainings = sorted({p for p, _ in values})
    return np.asarray([np.mean([values[(p, k)] for k in seeds]) for p in pretrainings])


def pretraining_unit_interval(a: dict[tuple, float], b: dict[tuple, float], level: float = 0.95) -> dict | None:
    """A − B for two cells ``{(pretrain seed or None, fine-tuning seed): value}`` with the pre-training as the unit
    (module docstring): ``mean``, ``low``, ``high`` (``level`` Welch t interval), ``p`` (two-sided, for d = 0),
    ``df``, ``units`` (A's, B's) and ``seeds`` (the fine-tuning seeds every unit ran). None without common seeds."""

    def complete(values: dict[tuple, float]) -> set[int]:
        pretrainings = {p for p, _ in values}
        return set.intersection(*({k for q, k in values if q == p} for p in pretrainings)) if values else set()

    seeds = sorted(complete(a) & complete(b))
    if not seeds:
        return None
    units_a, units_b = _units(a, seeds), _units(b, seeds)
    mean = float(units_a.mean() - units_b.mean())
    if len(units_a) < 2 or len(units_b) < 2:
        return {"mean": mean, "low": -math.inf, "high": math.inf, "p": 1.0, "df": 0.0,
                "units": (len(units_a), len(units_b)), "seeds": seeds}  # fmt: skip
    var_a, var_b = units_a.var(ddof=1) / len(units_a), units_b.var(ddof=1) / len(units_b)
    se = math.sqrt(var_a + var_b)
    if se == 0:
        df, half, p = float(len(units_a) + len(units_b) - 2), 0.0, 0.0 if mean else 1.0
    else:
        if len(units_a) == len(units_b):  # equal units: the pooled df, robust to unequal variances at equal n
            df = float(len(units_a) + len(units_b) - 2)
        else:
            welch = se**4 / (var_a**2 / (len(units_a) - 1) + var_b**2 / (len(units_b) - 1))
            df = float(max(1, math.floor(welch)))
        half = t_quantile(0.5 + level / 2, df) * se
        p = 2 * (1 - t_cdf(abs(mean) / se, df))
    return {"mean": mean, "low": mean - half, "high": mean + half, "p": min(1.0, p), "df": df,
            "units": (len(units_a), len(units_b)), "seeds": seeds}  # fmt: skip


def binomial_tail(hits: int, trials: int, chance: float) -> float:
    """P(X >= hits) for X ~ Binomial(trials, chance): the one-sided p of ``hits`` retrieval successes at chance."""
    if trials < 1 or not 0 <= hits <= trials or not 0 <= chance <= 1:
        raise ValueError(
            f"expected 0 <= hits <= trials, trials >= 1, chance in [0, 1]; found {hits}, {trials}, {chance}"
        )
    return float(sum(math.comb(trials, i) * chance**i * (1 - chance) ** (trials - i) for i in range(hits, trials + 1)))


def holm(p_values: list[float], alpha: float = 0.05) -> list[dict]:
    """Holm's step-down adjustment of a family of p-values: per input, in input order, ``p_adjusted`` (the running
    maximum of (m − j + 1) · p_(j), at most 1) and ``rejected`` (``p_adjusted <= alpha``)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return [{"p_adjusted": p, "rejected": p <= alpha} for p in adjusted]


def floor_check(plan: dict, cells: dict) -> list[dict]:
    """Per column of the plan: ``column``, ``floor``, scratch's fine-tune ``mean`` at 100 % of the labels and its
    ``n``, ``status`` (``clears``, ``at floor``, or ``not checked`` without a floor or a scratch run) and ``reason``.
    A ``floor_only`` bundle is at floor whatever its scratch run reached (calibration found it could not clear)."""
    bundles = {b["name"]: b for b in plan["bundles"]}
    checks = []
    with_cells = {key[3] for key in cells}
    for column in (c for c in COLUMNS if c.bundle in bundles and c.label in with_cells):
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
    ran: ``pair``, ``mode``, ``fraction``, ``column``, ``n`` (units: common fine-tuning seeds in protocol 2, the
    smaller row's pre-trainings or runs with ``plan["interval"] == "pretraining_unit"``), ``mean`` of d = A − B,
    its 95 % t interval ``low`` / ``high`` (module docstring) and the ``verdict`` (``better`` if low > 0, ``worse``
    if high < 0, else ``within noise``)."""
    kept = [c["column"] for c in floor_check(plan, cells) if c["status"] != "at floor"]
    pretraining_unit = plan.get("interval") == "pretraining_unit"
    differences = []
    for a, b in _pairs(plan):
        for mode, fractions in plan["modes"].items():
            for fraction in (float(f) for f in fractions):
                for label in kept:
                    cell_a = cells.get((a, mode, fraction, label), {})
                    cell_b = cells.get((b, mode, fraction, label), {})
                    units_a, units_b = _by_seed(cell_a), _by_seed(cell_b)
                    seeds = sorted(units_a.keys() & units_b.keys())
                    if not seeds:
                        continue
                    if pretraining_unit:
                        found = pretraining_unit_interval(cell_a, cell_b)
                        if found is None:
                            continue
                        n, mean, low, high = min(found["units"]), found["mean"], found["low"], found["high"]
                    else:
                        d = np.asarray([units_a[s] - units_b[s] for s in seeds])
                        n, mean = len(d), float(d.mean())
                        half = t_quantile_975(n - 1) * float(d.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
                        low, high = mean - half, mean + half
                    verdict = "better" if low > 0 else "worse" if high < 0 else "within noise"
                    differences.append(
                        {
                            "pair": (a, b),
                            "mode": mode,
                            "fraction": fraction,
                            "column": label,
                            "n": n,
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
    return [*lines, INTERVAL_METHODS[plan.get("interval", "fine_tuning_seed")]]


def _contrast_cell(contrast: dict) -> tuple[str, float, str]:
    """(mode, fraction, column label) of a registered contrast (``bundle`` + ``metric``)."""
    label = next(c.label for c in COLUMNS if c.bundle == contrast["bundle"] and c.metric == contrast["metric"])
    return contrast["mode"], float(contrast["fraction"]), label


def _contrast(cells: dict, a: str, b: str, cell: tuple[str, float, str], level: float = 0.95) -> dict:
    found = pretraining_unit_interval(cells.get((a, *cell), {}), cells.get((b, *cell), {}), level)
    found = found or {"mean": math.nan, "low": -math.inf, "high": math.inf, "p": 1.0, "df": 0.0, "units": (0, 0)}
    verdict = "better" if found["low"] > 0 else "worse" if found["high"] < 0 else "within noise"
    return {"a": a, "b": b, "mode": cell[0], "fraction": cell[1], "column": cell[2], **found, "verdict": verdict}


def registered_contrasts(plan: dict, cells: dict) -> dict:
    """The registered protocol's answers (``plan["registered"]``): ``primary`` (its interval at its level),
    ``secondary`` (95 % intervals and Holm-adjusted p-values, ``beyond_noise`` when Holm rejects), ``controls``
    (``positive`` / ``negative``: the contrast and whether its rule ``holds``), and ``reading``: one sentence that
    follows the registered rules (no conclusion from the primary contrast when the positive control fails)."""
    registered = plan["registered"]
    primary_spec = registered["primary"]
    primary_cell = _contrast_cell(primary_spec)
    primary = _contrast(cells, primary_spec["a"], primary_spec["b"], primary_cell, primary_spec.get("level", 0.95))
    family = registered["secondary"]
    secondary = [_contrast(cells, c["a"], c["b"], _contrast_cell(c)) for c in family["contrasts"]]
    for entry, adjusted in zip(secondary, holm([c["p"] for c in secondary], family.get("alpha", 0.05))):
        entry.update(p_holm=adjusted["p_adjusted"], beyond_noise=adjusted["rejected"])
    controls = {}
    for kind, spec in registered["controls"].items():
        found = _contrast(cells, spec["row"], spec["against"], primary_cell)
        holds = found["low"] > 0 if kind == "positive" else not found["low"] > 0
        controls[kind] = {**found, "holds": holds, "rule": spec["rule"]}
    if not controls.get("positive", {}).get("holds", True):
        reading = (
            "The positive control does not beat restoration-only beyond noise on the primary cell: this protocol "
            "cannot see an effect of text at this budget, and the table draws no conclusion from the primary contrast."
        )
    else:
        said = {"better": "beats", "worse": "is worse than", "within noise": "cannot be told from"}[primary["verdict"]]
        reading = f"{primary['a']} {said} {primary['b']} on the primary cell ({primary_spec['reading']})"
        if not controls.get("negative", {}).get("holds", True):
            reading += "; but the negative control beats restoration-only too, so a gain cannot be credited to reports"
        reading += "."
    return {"primary": primary, "secondary": secondary, "controls": controls, "reading": reading}
