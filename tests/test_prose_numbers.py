"""Every number stated as a result in prose is traceable to a committed result file (#27).

Where: the README's Results section outside its generated paper-table block, and ``docs/paper_table.md``. What counts
as a stated result: a number with a decimal point (0.765, 53.6), a percentage (12 %), a duration (54 min, 763 s) and
a count of the form "N of M". Code spans and fenced blocks (commands, paths), link targets and numbers glued to
letters or symbols (R@1, T3D, 32³, #14, fs48) are not prose numbers.

Traceable: the number, as written, is a token of a committed file under ``results/`` (the rendered table, plans,
timing, run files), so prose quotes a value at the precision the table prints it; a duration may also be a recorded
wall time (``timing.json``, a run's ``elapsed_s``) in seconds or minutes, rounded as written, and a percentage a
fraction the plan holds (``0.2`` as 20 %). ``ALLOWED`` names the few design numbers the docs state that no result
file can hold, each with its reason.
"""

from __future__ import annotations

import glob
import json
import os
import re

import pytest

from t3d_tools import REPO_ROOT
from t3d_tools.experiments.results import README_BEGIN, README_END

#: number (as written) -> why it is in prose although no result file holds it
ALLOWED: dict[str, str] = {
    "0.031": "chance R@1 of 32 validation studies (1 / 32), arithmetic a reader can check",
    "0.156": "chance R@5 of 32 validation studies (5 / 32), arithmetic a reader can check",
    "100": "'100 %' of the labels / '100-300-word' reports: a label fraction and the report generator's length range",
    "150": "the registered CPU budget, 150 min (protocol_v3.json 'budgets'), a limit and not a measurement",
    "12": "the registered GPU budget, 12 min (protocol_v3.json 'budgets'), a limit and not a measurement",
    "25": "the generator's share of normal studies (25 %, custom/data/make_synthetic_pairs.py), a design constant",
    "40": "the block-masking ratio (40 %, train.json mask_ratio), a design constant",
    "30": "the cut-out share of voxels in Tang et al.'s SSL (up to 30 %), a property of the method",
    "0.975": "the t quantile of a two-sided 95 % interval, t(0.975, n - 1): a definition",
    "5": "'the nominal 5 %' a 95 % interval misses, a definition",
    "70": "the lung miniature's share of masses (70 %, custom/data/seg_datasets/msd.py), a design constant",
    "0.93": "the coverage the interval method must reach by simulation (issue #27), a threshold",
    "0.95": "the nominal coverage of a 95 % interval, a definition",
    "95": "95 % intervals, a definition",
}

NUMBER = re.compile(
    r"(?<![\w@#.\-/:^])(?P<n>\d{1,3}(?: \d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\w³²@/])"
    r"(?P<unit>\s?(?:%|min\b|s\b|seconds\b|minutes\b)|\s+of\s+\d+)?"
)


def _prose(text: str) -> str:
    """``text`` without fenced blocks, code spans, link targets and HTML comments."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return re.sub(r"<!--.*?-->", " ", text, flags=re.S)


def stated_numbers(text: str) -> list[tuple[str, str]]:
    """The numbers ``text`` states as results (module docstring): ``(number as written without thousands spaces,
    unit)``, the unit ``%``, ``min``, ``s``, ``of`` or empty."""
    found = []
    for match in NUMBER.finditer(_prose(text)):
        number, unit = match["n"].replace(" ", ""), (match["unit"] or "").strip().split(" ")[0]
        unit = {"seconds": "s", "minutes": "min"}.get(unit, unit)
        if "." in number or unit:
            found.append((number, unit))
    return found


def readme_results_prose() -> str:
    text = open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("\n## Results", 1)[1].split("\n## ", 1)[0]
    head, rest = section.split(README_BEGIN, 1)
    return head + rest.split(README_END, 1)[1]


def committed_results() -> dict:
    """What prose may quote: ``tokens`` (every number token of the committed result files, as written),
    ``seconds`` (recorded wall times) and ``fractions`` (label and test fractions of the plans)."""
    tokens, seconds, fractions = set(), [], []
    for path in glob.glob(os.path.join(REPO_ROOT, "results", "**", "*"), recursive=True):
        if not path.endswith((".json", ".md")):
            continue
        text = open(path, encoding="utf-8").read()
        tokens.update(n.replace(" ", "") for n in re.findall(r"\d{1,3}(?: \d{3})+(?:\.\d+)?|\d+(?:\.\d+)?", text))
        if not path.endswith(".json"):
            continue
        content = json.loads(text)
        if os.path.basename(path) == "timing.json":
            seconds += [v for k, v in content.items() if k.endswith("_s")]
        elif os.path.basename(path) == "plan.json":
            fractions += [*content["fractions"], content.get("budget", {}).get("test_fraction", 0.0)]
        elif "elapsed_s" in content:
            seconds.append(content["elapsed_s"])
    return {"tokens": tokens, "seconds": seconds, "fractions": fractions}


def traceable(number: str, unit: str, committed: dict) -> bool:
    if number in committed["tokens"]:
        return True
    decimals = len(number.split(".")[1]) if "." in number else 0
    candidates = {
        "min": [s / 60 for s in committed["seconds"]],
        "s": committed["seconds"],
        "%": [f * 100 for f in committed["fractions"]],
    }.get(unit, [])
    return any(round(c, decimals) == float(number) for c in candidates)


@pytest.mark.parametrize("source", ["README.md Results prose", "docs/paper_table.md"])
def test_every_stated_number_is_in_a_committed_result_file(source):
    if source.startswith("README"):
        text = readme_results_prose()
    else:
        text = open(os.path.join(REPO_ROOT, "docs", "paper_table.md"), encoding="utf-8").read()
    committed = committed_results()
    stated = stated_numbers(text)
    assert stated, f"{source}: expected stated numbers to check, found none"
    untraceable = sorted({n for n, u in stated if n not in ALLOWED and not traceable(n, u, committed)})
    assert not untraceable, f"{source}: numbers no committed result file holds: {untraceable}"


def test_the_extractor_sees_results_and_skips_code():
    text = (
        "Lung 0.765 against 0.344; 4 of 18 cells; 54 min wall; 12 % of cases; R@1 of T3D at 32³ (#14). "
        "`python -m x --seed 7.5` and [link](results/toy/0.999.png)\n```\nrun 123.4\n```"
    )
    assert stated_numbers(text) == [("0.765", ""), ("0.344", ""), ("4", "of"), ("54", "min"), ("12", "%")]
    committed = {"tokens": {"0.765", "0.344"}, "seconds": [3213.3], "fractions": [0.12]}
    assert traceable("0.765", "", committed) and traceable("54", "min", committed) and traceable("12", "%", committed)
    assert not traceable("0.19", "", committed) and not traceable("0.34", "", committed)
