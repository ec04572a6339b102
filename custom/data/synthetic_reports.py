"""English radiology reports written from a phantom's ground-truth findings, in two styles.

``style="long"`` (the default) reads like a real chest/abdomen CT report, 100-300 words::

    TECHNIQUE: <one line>. <comparison line>. FINDINGS: <region by region> IMPRESSION: 1) <finding>. ... <closing line>.

The FINDINGS section walks the regions in a fixed order (lungs and airways, pleura, heart and mediastinum, liver,
gallbladder and bile ducts, spleen, pancreas, kidneys and adrenals, bowel and peritoneum, bones and soft tissues),
each with several phrasing variants, so most sentences are negated or normal statements, as in real reports. Every
finding of :data:`~custom.data.synthetic_ct.FINDING_NAMES` is covered either way: when absent, its region carries a
negated/normal statement naming it ("No pleural effusion or pneumothorax."); when present, a positive sentence with
its size in mm, side and lobe ("There is a 9 x 7 mm solid nodule in the right upper lobe.") and no contradicting
negation. The IMPRESSION lists the positive findings as ``1)``, ``2)`` ... (with ``"1. "`` the sentence splitter of
:mod:`custom.transforms.report_text` would cut a lone "1." sentence off every item) and closes with a negative line;
a normal study's impression is one "no acute abnormality" line. Every sentence ends with ``.`` and the section
headers are the ones ``clean_report`` strips (``TECHNIQUE:``, ``FINDINGS:``, ``IMPRESSION:``); no two sentences of a
report are equal, so ``clean_report``'s de-duplication drops nothing.

``style="short"`` is the original generator, unchanged (same text for the same rng): positive sentences in random
order, 0..2 negations, and one of a few "no acute findings" one-liners for normal studies, which is exactly the case
where text-informed soft negatives matter: many different studies share the same report.
"""

from __future__ import annotations

import numpy as np

from custom.data.report_phrases import (
    CLOSING_ABNORMAL,
    CLOSING_NORMAL,
    COMPARISON,
    IMPRESSION,
    IMPRESSION_ORDER,
    LONG_POSITIVE,
    NEGATIVE,
    NODULE_FOLLOW_UP_MM,
    NORMAL_REPORTS,
    POSITIVE,
    RECOMMENDATION,
    REGIONS,
    REPORT_STYLES,
    TECHNIQUE,
)
from custom.data.synthetic_ct import FINDING_NAMES, Finding

__all__ = ["NORMAL_REPORTS", "REPORT_STYLES", "write_report", "report_corpus"]


def write_report(
    findings: list[Finding], rng: np.random.Generator, style: str = "long", *, max_negations: int = 2
) -> str:
    """Report text for ``findings``, drawn with ``rng`` (same rng state, same text).

    ``style="long"``: a realistic 100-300 word TECHNIQUE / FINDINGS / IMPRESSION report (see the module doc).
    ``style="short"``: the original short text, positive sentences in random order plus 0..max_negations negations.
    """
    if style == "long":
        return _write_long(findings, rng)
    if style != "short":
        raise ValueError(f"style: expected one of {REPORT_STYLES}, found {style!r}")
    if not findings:
        return str(rng.choice(NORMAL_REPORTS))
    sentences = []
    for finding in findings:
        template = str(rng.choice(POSITIVE[finding.name]))
        sentences.append(template.format(size=int(finding.size_mm), side=finding.side, zone=finding.zone))
    rng.shuffle(sentences)
    present = {f.name for f in findings}
    absent = [name for name in FINDING_NAMES if name not in present]
    for index in rng.permutation(len(absent))[: int(rng.integers(0, max_negations + 1))]:
        sentences.append(str(rng.choice(NEGATIVE[absent[int(index)]])))
    return " ".join(sentences)


def _pick(rng: np.random.Generator, variants: tuple[str, ...]) -> str:
    return variants[int(rng.integers(len(variants)))]


def _measure(size_mm: float, two_axes: bool) -> str:
    """``9 mm``, or ``9 x 7 mm`` with the short axis about 0.8 of the long one (deterministic)."""
    size = int(size_mm)
    return f"{size} x {max(1, int(round(0.8 * size)))} mm" if two_axes else f"{size} mm"


def _fill(template: str, finding: Finding, measure: str) -> str:
    return template.format(measure=measure, side=finding.side, Side=finding.side.capitalize(), zone=finding.zone)


def _templates(table: dict[str, tuple[str, ...]], finding: Finding) -> tuple[str, ...]:
    if finding.side == "bilateral" and f"{finding.name}/bilateral" in table:
        return table[f"{finding.name}/bilateral"]
    return table[finding.name]


def _write_long(findings: list[Finding], rng: np.random.Generator) -> str:
    unknown = sorted({f.name for f in findings} - set(LONG_POSITIVE))
    if unknown:
        raise ValueError(f"findings: expected names from {FINDING_NAMES}, found {unknown}")
    measures = [_measure(f.size_mm, bool(rng.random() < 0.5)) for f in findings]
    present = {f.name for f in findings}
    parts: list[str] = []
    if rng.random() < 0.85:
        parts.append("TECHNIQUE: " + _pick(rng, TECHNIQUE))
        if rng.random() < 0.7:
            parts.append(_pick(rng, COMPARISON))
    sentences: list[str] = []
    negated: set[str] = set()
    for _, entries in REGIONS:
        for entry in entries:
            kind = entry[0]
            if kind == "positive":
                chosen = [i for i, f in enumerate(findings) if f.name in entry[1]]
                for i in rng.permutation(len(chosen)):
                    finding = findings[chosen[int(i)]]
                    template = _pick(rng, _templates(LONG_POSITIVE, finding))
                    sentences.append(_fill(template, finding, measures[chosen[int(i)]]))
            elif kind == "negate":
                names, p, variants = entry[1], entry[2], entry[3]
                if present.isdisjoint(names) and negated.isdisjoint(names) and (p >= 1.0 or rng.random() < p):
                    sentences.append(_pick(rng, variants))
                    negated.update(names)
            elif kind == "clear":
                if present.isdisjoint(entry[1]):
                    sentences.append(_pick(rng, entry[2]))
            elif kind == "otherwise":
                if not present.isdisjoint(entry[1]):
                    sentences.append(_pick(rng, entry[2]))
            elif rng.random() < entry[1]:  # "always"
                sentences.append(_pick(rng, entry[2]))
    parts.append("FINDINGS: " + " ".join(sentences))
    if findings:
        order = sorted(range(len(findings)), key=lambda i: IMPRESSION_ORDER.index(findings[i].name))
        items = []
        for number, i in enumerate(order, start=1):
            finding = findings[i]
            item = _fill(_pick(rng, _templates(IMPRESSION, finding)), finding, measures[i])
            key = finding.name
            if key == "nodule":
                key = "nodule/large" if finding.size_mm > NODULE_FOLLOW_UP_MM else "nodule/small"
            if key in RECOMMENDATION:
                item += " " + _pick(rng, RECOMMENDATION[key])
            items.append(f"{number}) {item}")
        impression = " ".join(items) + " " + _pick(rng, CLOSING_ABNORMAL)
    else:
        impression = _pick(rng, CLOSING_NORMAL)
    parts.append("IMPRESSION: " + impression)
    return " ".join(" ".join(parts).split())


def report_corpus(styles: tuple[str, ...] = REPORT_STYLES) -> list[str]:
    """Every template sentence of ``styles`` with its slots filled by representative values: text to train a
    tokenizer on. The short style's part comes first and is the same list as before the long style existed."""
    corpus: list[str] = []
    if "short" in styles:
        corpus.extend(NORMAL_REPORTS)
        for templates in NEGATIVE.values():
            corpus.extend(templates)
        for templates in POSITIVE.values():
            for template in templates:
                for side in ("right", "left", "bilateral"):
                    for zone in ("upper", "lower"):
                        corpus.append(template.format(size=12, side=side, zone=zone))
    if "long" in styles:
        corpus.append("TECHNIQUE: FINDINGS: IMPRESSION:")
        corpus.extend("TECHNIQUE: " + t for t in TECHNIQUE)
        corpus.extend(COMPARISON)
        for _, entries in REGIONS:
            for entry in entries:
                if entry[0] != "positive":
                    corpus.extend(entry[-1])
        corpus.extend(CLOSING_NORMAL)
        corpus.extend(CLOSING_ABNORMAL)
        for templates in RECOMMENDATION.values():
            corpus.extend(templates)
        for table, prefix in ((LONG_POSITIVE, ""), (IMPRESSION, "1) ")):
            for key, templates in table.items():
                sides = ("bilateral",) if key.endswith("/bilateral") else ("right", "left")
                for template in templates:
                    for side in sides:
                        for zone in ("upper", "lower"):
                            for two_axes in (False, True):
                                finding = Finding(key.split("/")[0], side, zone, 12.0)
                                corpus.append(prefix + _fill(template, finding, _measure(12.0, two_axes)))
        corpus = list(dict.fromkeys(corpus))  # templates without slots would repeat
    return corpus
