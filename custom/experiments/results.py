"""Results of the paper table: one JSON per run, and the table and plots built only from a complete set of them.

``<out>/plan.json`` lists every run the protocol expects; ``<out>/runs/<run_id>.json`` holds one finished run
(``method``, ``ablation``, ``row``, ``bundle``, ``fraction``, ``seed``, ``metrics``, ``command``, ``config``,
``status``). :func:`collect_results` refuses (one line, naming the first missing or partial run) unless every planned
run is there, complete, and has finite values for every metric its bundle reports; nothing is averaged over a subset.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from custom.experiments.protocol import COLUMNS

__all__ = [
    "IncompleteResultsError",
    "result_path",
    "write_result",
    "read_plan",
    "collect_results",
    "summarise",
    "markdown_table",
    "plot_results",
    "build_report",
]

COMPLETE = "complete"


class IncompleteResultsError(RuntimeError):
    """The results folder does not hold every planned run, complete; the message names the first one that is not."""


def result_path(out_dir: str, run_id: str) -> str:
    return os.path.join(out_dir, "runs", f"{run_id}.json")


def _atomic_json(content: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=1)
    os.replace(tmp, path)


def write_result(out_dir: str, run: dict, metrics: dict, command: str, config: dict, **extra) -> str:
    """Write ``runs/<run_id>.json`` atomically (a crash never leaves a half-written result)."""
    row = run["row"]
    content = {
        "run_id": run["run_id"],
        "row": row,
        "method": row if row in ("scratch", "ssl_swin", "restoration_only", "t3d") else "t3d",
        "ablation": None if row in ("scratch", "ssl_swin", "restoration_only", "t3d") else row,
        "bundle": run["bundle"],
        "fraction": run["fraction"],
        "seed": run["seed"],
        "metrics": {k: float(v) for k, v in metrics.items()},
        "command": command,
        "config": config,
        "status": COMPLETE,
        **extra,
    }
    path = result_path(out_dir, run["run_id"])
    _atomic_json(content, path)
    return path


def read_plan(out_dir: str) -> dict:
    path = os.path.join(out_dir, "plan.json")
    if not os.path.isfile(path):
        raise IncompleteResultsError(f"refusing to build the table: {path} not found (run the protocol first)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _problem(out_dir: str, run: dict, required: list[str]) -> str | None:
    """Why ``run``'s result is not usable, or None."""
    path = result_path(out_dir, run["run_id"])
    if not os.path.isfile(path):
        return f"run {run['run_id']} is missing ({path})"
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        return f"run {run['run_id']} is unreadable ({path}: {type(err).__name__})"
    if result.get("status") != COMPLETE:
        return f"run {run['run_id']} is partial (status {result.get('status')!r} in {path})"
    for key in ("row", "bundle", "fraction", "seed"):
        if result.get(key) != run[key]:
            return f"run {run['run_id']} does not match the plan ({key} {result.get(key)!r} in {path})"
    metrics = result.get("metrics") or {}
    for key in required:
        value = metrics.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"run {run['run_id']} is partial (metric {key!r} is {value!r} in {path})"
    return None


def collect_results(out_dir: str) -> tuple[dict, list[dict]]:
    """``(plan, results)`` when every planned run is complete; otherwise :class:`IncompleteResultsError`."""
    plan = read_plan(out_dir)
    required = {b["name"]: b["metrics"] for b in plan["bundles"]}
    problems = [p for p in (_problem(out_dir, run, required[run["bundle"]]) for run in plan["runs"]) if p]
    if problems:
        more = f" (and {len(problems) - 1} more of {len(plan['runs'])} planned runs)" if len(problems) > 1 else ""
        raise IncompleteResultsError(f"refusing to build the table: {problems[0]}{more}")
    results = []
    for run in plan["runs"]:
        with open(result_path(out_dir, run["run_id"]), encoding="utf-8") as f:
            results.append(json.load(f))
    return plan, results


def summarise(plan: dict, results: list[dict]) -> dict:
    """``{(row, column label, fraction): values over seeds}`` for every column whose bundle was run."""
    bundles = {b["name"] for b in plan["bundles"]}
    cells: dict = {}
    for result in results:
        for column in COLUMNS:
            if column.bundle == result["bundle"] and column.bundle in bundles:
                key = (result["row"], column.label, float(result["fraction"]))
                cells.setdefault(key, []).append(float(result["metrics"][column.metric]))
    return cells


def _cell(values: list[float] | None) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f} (n=1)"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} (n={len(values)})"


def markdown_table(plan: dict, results: list[dict]) -> str:
    """The paper-shaped tables, one per label fraction: rows = methods and ablations, columns = downstream metrics.
    Cells are mean ± sample standard deviation over seeds, with the number of seeds."""
    cells = summarise(plan, results)
    bundles = {b["name"] for b in plan["bundles"]}
    lines = [
        f"Scale `{plan['scale']}`, {plan['seeds']} seed(s) per cell; each cell is mean ± std (n = seeds) of the "
        "validation metric after fine-tuning. Every number is one file in `runs/` (command, config, seed).",
        "",
    ]
    if plan.get("command"):
        lines += [f"Produced by `{plan['command']}` (budgets in `plan.json`).", ""]
    for fraction in plan["fractions"]:
        lines += [f"### {fraction * 100:g} % of the training labels", ""]
        lines.append("| pre-training | " + " | ".join(c.label for c in COLUMNS) + " |")
        lines.append("|---|" + "---|" * len(COLUMNS))
        for row in plan["rows"]:
            values = [cells.get((row["name"], c.label, float(fraction))) if c.bundle in bundles else None for c in COLUMNS]
            lines.append(f"| {row['label']} | " + " | ".join(_cell(v) for v in values) + " |")
        lines.append("")
    notes = [f"- `{r['name']}`: {r['note']}" for r in plan["rows"] if r.get("note")]
    notes += [f"- row `{name}` not run at this scale: {why}" for name, why in plan["skipped_rows"].items()]
    notes += [f"- `{name}` columns show —: {why}" for name, why in plan["skipped_bundles"].items()]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    return "\n".join(lines)


def plot_results(plan: dict, results: list[dict], plot_dir: str) -> list[str]:
    """One PNG per column: metric vs label fraction (log axis), a line per row through the seed means, every seed's
    value as a dot and the ± std band. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = summarise(plan, results)
    fractions = [float(f) for f in plan["fractions"]]
    os.makedirs(plot_dir, exist_ok=True)
    written = []
    for column in COLUMNS:
        if not any(key[1] == column.label for key in cells):
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for index, row in enumerate(plan["rows"]):
            series = [cells.get((row["name"], column.label, f), []) for f in fractions]
            if not any(series):
                continue
            x = np.asarray([f * 100 for f in fractions])
            means = np.asarray([np.mean(v) if v else np.nan for v in series])
            stds = np.asarray([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in series])
            color = f"C{index % 10}"
            ax.plot(x, means, marker="o", color=color, label=row["name"])
            ax.fill_between(x, means - stds, means + stds, color=color, alpha=0.12)
            for xi, values in zip(x, series):
                ax.scatter([xi * (1 + 0.04 * (index - len(plan["rows"]) / 2))] * len(values), values, s=9, color=color, alpha=0.6)
        ax.set_xscale("log")
        ax.set_xticks([f * 100 for f in fractions], [f"{f * 100:g} %" for f in fractions])
        ax.set_xlabel("training labels used")
        ax.set_ylabel(column.label)
        ax.set_title(f"{column.label} ({plan['scale']}, {plan['seeds']} seeds)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(plot_dir, column.label.lower().replace(" ", "_") + ".png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def build_report(out_dir: str) -> tuple[str, list[str]]:
    """Refuse unless complete; then write ``<out>/paper_table.md`` and ``<out>/plots/*.png``; returns their paths."""
    plan, results = collect_results(out_dir)
    table = markdown_table(plan, results)
    path = os.path.join(out_dir, "paper_table.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"# Paper table ({plan['scale']})\n\n{table}")
    return path, plot_results(plan, results, os.path.join(out_dir, "plots"))
