"""English radiology reports written from a phantom's ground-truth findings.

Every positive sentence names the finding and, where it has one, its side, zone and size, so the text carries the
location and type of what is in the image. Phrasing varies (several templates per finding), some absent findings are
stated as negations ("No pleural effusion."), and normal studies get one of a few "no acute findings" reports, which
is exactly the case where text-informed soft negatives matter: many different studies share the same report.
"""

from __future__ import annotations

import numpy as np

from custom.data.synthetic_ct import FINDING_NAMES, Finding

__all__ = ["NORMAL_REPORTS", "write_report", "report_corpus"]

NORMAL_REPORTS: tuple[str, ...] = (
    "No acute findings.",
    "No acute cardiopulmonary or abdominal abnormality.",
    "Unremarkable CT of the chest and abdomen.",
)

_POSITIVE: dict[str, tuple[str, ...]] = {
    "nodule": (
        "There is a {size} mm nodule in the {side} {zone} lobe.",
        "A {size} mm pulmonary nodule is seen in the {zone} lobe of the {side} lung.",
        "Solid nodule of {size} mm in the {side} {zone} lobe.",
    ),
    "mass": (
        "A {size} mm mass is present in the {side} {zone} lobe.",
        "Large {size} mm pulmonary mass in the {zone} lobe of the {side} lung, suspicious for malignancy.",
    ),
    "pleural effusion": (
        "There is a {side} pleural effusion.",
        "Small {side} pleural effusion with adjacent atelectasis.",
    ),
    "consolidation": (
        "Patchy consolidation in the {side} {zone} lobe.",
        "Airspace consolidation is noted in the {zone} lobe of the {side} lung, likely pneumonia.",
    ),
    "emphysema": (
        "Centrilobular emphysema in both upper lobes.",
        "Upper lobe predominant emphysematous changes bilaterally.",
    ),
    "cardiomegaly": (
        "The heart is enlarged.",
        "Cardiomegaly is present.",
    ),
    "hepatic lesion": (
        "A {size} mm hypodense lesion is seen in the liver.",
        "Hypoattenuating hepatic lesion measuring {size} mm.",
    ),
    "renal cyst": (
        "Simple cyst of {size} mm in the {side} kidney.",
        "A {size} mm cyst arises from the {side} kidney.",
    ),
}

_NEGATIVE: dict[str, tuple[str, ...]] = {
    "nodule": ("No pulmonary nodules.", "No suspicious pulmonary nodule."),
    "mass": ("No lung mass.",),
    "pleural effusion": ("No pleural effusion.", "There is no pleural effusion."),
    "consolidation": ("No focal consolidation.", "The lungs are clear without consolidation."),
    "emphysema": ("No emphysema.",),
    "cardiomegaly": ("Heart size is normal.", "No cardiomegaly."),
    "hepatic lesion": ("The liver is unremarkable.", "No focal liver lesion."),
    "renal cyst": ("The kidneys are unremarkable.",),
}


def write_report(findings: list[Finding], rng: np.random.Generator, max_negations: int = 2) -> str:
    """Report text for ``findings``: positive sentences in random order plus 0..max_negations negations."""
    if not findings:
        return str(rng.choice(NORMAL_REPORTS))
    sentences = []
    for finding in findings:
        template = str(rng.choice(_POSITIVE[finding.name]))
        sentences.append(template.format(size=int(finding.size_mm), side=finding.side, zone=finding.zone))
    rng.shuffle(sentences)
    present = {f.name for f in findings}
    absent = [name for name in FINDING_NAMES if name not in present]
    for index in rng.permutation(len(absent))[: int(rng.integers(0, max_negations + 1))]:
        sentences.append(str(rng.choice(_NEGATIVE[absent[int(index)]])))
    return " ".join(sentences)


def report_corpus() -> list[str]:
    """Every template sentence with its slots filled by representative values: text to train a tokenizer on."""
    corpus = list(NORMAL_REPORTS)
    for templates in _NEGATIVE.values():
        corpus.extend(templates)
    for templates in _POSITIVE.values():
        for template in templates:
            for side in ("right", "left", "bilateral"):
                for zone in ("upper", "lower"):
                    corpus.append(template.format(size=12, side=side, zone=zone))
    return corpus
