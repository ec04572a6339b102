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

from custom.data.synthetic_ct import FINDING_NAMES, Finding

__all__ = ["NORMAL_REPORTS", "REPORT_STYLES", "write_report", "report_corpus"]

REPORT_STYLES: tuple[str, ...] = ("long", "short")

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
    "cardiomegaly": ("The heart is enlarged.", "Cardiomegaly is present."),
    "hepatic lesion": (
        "A {size} mm hypodense lesion is seen in the liver.",
        "Hypoattenuating hepatic lesion measuring {size} mm.",
    ),
    "renal cyst": ("Simple cyst of {size} mm in the {side} kidney.", "A {size} mm cyst arises from the {side} kidney."),
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


# ---------------------------------------------------------------------------------------------------------------
# long style. Slots: {measure} ("9 mm" or "9 x 7 mm"), {side} / {Side} (right, left, bilateral), {zone} (upper, lower).
# Every positive phrasing names its finding the way t3d_tools.curation.bimcv.labels.ENGLISH_PATTERNS reads it, and no
# negation or hedge ("possible", "suspicious for") precedes the finding's name, so rule-based labelers agree with
# the ground truth; no phrase outside a finding's own statements names another finding (no "renal mass").

_TECHNIQUE: tuple[str, ...] = (
    "Contrast-enhanced CT of the chest and abdomen.",
    "CT of the chest and abdomen with intravenous contrast.",
    "Helical CT of the chest and upper abdomen was performed after intravenous contrast administration.",
    "Axial CT images of the chest and abdomen were obtained with intravenous contrast and multiplanar reformats.",
)
_COMPARISON: tuple[str, ...] = (
    "No prior studies are available for comparison.",
    "No prior imaging for comparison.",
    "There are no prior examinations for comparison.",
)

_LONG_POSITIVE: dict[str, tuple[str, ...]] = {
    "nodule": (
        "There is a {measure} solid nodule in the {side} {zone} lobe.",
        "A {measure} pulmonary nodule is seen in the {zone} lobe of the {side} lung.",
        "Solid pulmonary nodule in the {side} {zone} lobe measuring {measure}.",
        "A noncalcified nodule in the {side} {zone} lobe measures {measure}.",
    ),
    "mass": (
        "There is a {measure} spiculated mass in the {side} {zone} lobe.",
        "A {measure} pulmonary mass is present in the {zone} lobe of the {side} lung, suspicious for malignancy.",
        "Lobulated soft tissue mass in the {side} {zone} lobe measuring {measure}.",
    ),
    "consolidation": (
        "There is patchy airspace consolidation in the {side} {zone} lobe.",
        "Consolidation with air bronchograms is present in the {zone} lobe of the {side} lung.",
        "Dense consolidation in the {side} {zone} lobe, likely pneumonia.",
    ),
    "emphysema": (
        "Centrilobular emphysema in both upper lobes.",
        "There is upper lobe predominant centrilobular emphysema bilaterally.",
        "Emphysematous changes are present in both upper lobes.",
    ),
    "pleural effusion": (
        "There is a {side} pleural effusion.",
        "A {side} pleural effusion is present with adjacent compressive atelectasis.",
        "{Side} pleural effusion layering dependently.",
    ),
    "pleural effusion/bilateral": (
        "There are bilateral pleural effusions.",
        "Bilateral pleural effusions are present with adjacent compressive atelectasis.",
        "Bilateral pleural effusions layering dependently.",
    ),
    "cardiomegaly": ("The heart is enlarged.", "Cardiomegaly is present.", "There is enlargement of the heart."),
    "hepatic lesion": (
        "There is a {measure} hypoattenuating hepatic lesion in the {side} lobe of the liver.",
        "A {measure} hypodense lesion is seen in the liver, in the {side} hepatic lobe.",
        "Indeterminate {measure} hypoattenuating liver lesion in the {side} hepatic lobe.",
    ),
    "renal cyst": (
        "A {measure} simple cyst arises from the {side} kidney.",
        "There is a {measure} simple renal cyst in the {side} kidney.",
        "Simple cyst in the {side} kidney measuring {measure}.",
        "{Side} renal cyst measuring {measure}, of fluid attenuation.",
    ),
}

_IMPRESSION: dict[str, tuple[str, ...]] = {
    "mass": (
        "{measure} mass in the {side} {zone} lobe, suspicious for primary lung malignancy.",
        "{Side} {zone} lobe pulmonary mass measuring {measure}, concerning for malignancy.",
    ),
    "consolidation": (
        "{Side} {zone} lobe consolidation, likely pneumonia in the appropriate clinical setting.",
        "Consolidation in the {side} {zone} lobe, compatible with pneumonia.",
    ),
    "pleural effusion": ("{Side} pleural effusion.", "{Side} pleural effusion with adjacent atelectasis."),
    "pleural effusion/bilateral": (
        "Bilateral pleural effusions.",
        "Bilateral pleural effusions with adjacent atelectasis.",
    ),
    "nodule": (
        "{measure} solid nodule in the {side} {zone} lobe.",
        "{Side} {zone} lobe pulmonary nodule measuring {measure}.",
    ),
    "hepatic lesion": (
        "{measure} indeterminate hepatic lesion in the {side} lobe of the liver.",
        "Indeterminate {measure} liver lesion in the {side} hepatic lobe.",
    ),
    "cardiomegaly": ("Cardiomegaly.", "Enlarged heart."),
    "emphysema": ("Centrilobular emphysema.", "Upper lobe predominant emphysema."),
    "renal cyst": (
        "{measure} simple cyst in the {side} kidney, no follow-up required.",
        "Simple {side} renal cyst measuring {measure}.",
    ),
}
# follow-up sentence after an impression item ("nodule" by size, roughly the Fleischner solid-nodule bands)
_RECOMMENDATION: dict[str, tuple[str, ...]] = {
    "nodule/small": (
        "Recommend follow-up chest CT in 6 to 12 months.",
        "Follow-up CT in 6 to 12 months is recommended.",
    ),
    "nodule/large": (
        "Consider follow-up CT in 3 months, PET/CT or tissue sampling.",
        "Short-interval follow-up CT in 3 months or PET/CT is recommended.",
    ),
    "mass": (
        "Recommend tissue sampling and staging.",
        "Further evaluation with PET/CT and tissue sampling is recommended.",
    ),
    "hepatic lesion": (
        "Further characterization with liver MRI is suggested.",
        "Nonurgent MRI of the liver is recommended.",
    ),
}
_NODULE_FOLLOW_UP_MM = 8.0  # nodules above this size get the short-interval recommendation

_CLOSING_ABNORMAL: tuple[str, ...] = (
    "No other acute abnormality in the chest or abdomen.",
    "Otherwise no acute abnormality.",
    "No other acute findings.",
)
_CLOSING_NORMAL: tuple[str, ...] = (
    "No acute abnormality in the chest or abdomen.",
    "No acute cardiopulmonary or abdominal abnormality.",
    "Unremarkable CT of the chest and abdomen.",
    "Normal CT of the chest and abdomen.",
)

# Regions in reading order. Entries:
#   ("positive", names)                present findings among names, as positive sentences (rng order)
#   ("negate", names, p, variants)     when every one of names is absent and not yet negated; a grouped statement
#                                      (several names) is used with probability p, else its names fall through
#   ("clear", names, variants)         when none of names is present
#   ("otherwise", names, variants)     when some of names is present
#   ("always", p, variants)            with probability p
_LUNG = ("nodule", "mass", "consolidation", "emphysema")
# (a hand-laid grammar table, one rule per line: the formatter leaves it as written)
# fmt: off
_REGIONS: tuple[tuple[str, tuple[tuple, ...]], ...] = (
    ("lungs and airways", (
        ("always", 1.0, (
            "The central airways are patent.",
            "The trachea and central bronchi are patent.",
            "The tracheobronchial tree is patent.",
        )),
        ("positive", _LUNG),
        ("clear", _LUNG, (
            "The lungs are clear.",
            "Both lungs are well aerated.",
            "The lungs are well expanded and clear.",
        )),
        ("otherwise", _LUNG, (
            "The remaining lung parenchyma is clear.",
            "The lungs are otherwise clear.",
            "The remainder of the lungs is clear.",
        )),
        ("negate", ("nodule", "mass"), 0.6, (
            "No suspicious pulmonary nodule or mass.",
            "There are no pulmonary nodules or masses.",
            "No pulmonary nodule or mass is identified.",
        )),
        ("negate", ("nodule",), 1.0, (
            "No suspicious pulmonary nodule.",
            "No pulmonary nodules are identified.",
            "There is no suspicious pulmonary nodule.",
        )),
        ("negate", ("mass",), 1.0, (
            "No pulmonary mass.",
            "There is no lung mass.",
            "No endobronchial lesion or pulmonary mass.",
        )),
        ("negate", ("consolidation",), 1.0, (
            "No focal consolidation.",
            "There is no airspace consolidation.",
            "No focal airspace consolidation is seen.",
        )),
        ("negate", ("emphysema",), 1.0, ("No emphysema.", "There is no emphysema.", "No emphysematous change.")),
        ("always", 0.4, ("No bronchiectasis or interstitial abnormality.", "No interstitial lung disease.")),
    )),
    ("pleura", (
        ("positive", ("pleural effusion",)),
        ("negate", ("pleural effusion",), 1.0, (
            "No pleural effusion or pneumothorax.",
            "There is no pleural effusion or pneumothorax.",
            "No pleural effusion. No pneumothorax.",
        )),
        ("otherwise", ("pleural effusion",), ("No pneumothorax.", "There is no pneumothorax.")),
    )),
    ("heart and mediastinum", (
        ("positive", ("cardiomegaly",)),
        ("negate", ("cardiomegaly",), 1.0, (
            "The heart is normal in size.",
            "Heart size is normal.",
            "The heart is not enlarged.",
        )),
        ("always", 1.0, (
            "No pericardial effusion.",
            "There is no pericardial effusion.",
            "The pericardium is unremarkable without effusion.",
        )),
        ("always", 1.0, (
            "No mediastinal or hilar lymphadenopathy.",
            "No enlarged mediastinal, hilar or axillary lymph nodes.",
            "There is no thoracic lymphadenopathy.",
        )),
        ("always", 0.7, (
            "The thoracic aorta is normal in caliber.",
            "The thoracic aorta and main pulmonary artery are normal in caliber.",
            "No thoracic aortic aneurysm.",
        )),
        ("always", 0.3, (
            "The esophagus is unremarkable.",
            "The visualized thyroid gland and esophagus are unremarkable.",
        )),
    )),
    ("liver", (
        ("positive", ("hepatic lesion",)),
        ("negate", ("hepatic lesion",), 1.0, (
            "The liver is normal in size and attenuation without focal lesion.",
            "The liver is unremarkable with no focal hepatic lesion.",
            "No focal liver lesion is identified. The liver is normal in size.",
        )),
        ("otherwise", ("hepatic lesion",), (
            "The liver is otherwise normal in size and attenuation.",
            "The remainder of the liver is unremarkable.",
        )),
        ("always", 0.5, ("The portal and hepatic veins are patent.", "The portal vein is patent.")),
    )),
    ("gallbladder and bile ducts", (
        ("always", 1.0, (
            "The gallbladder is unremarkable.",
            "The gallbladder is normal without gallstones.",
            "The gallbladder is well distended without wall thickening.",
        )),
        ("always", 0.8, (
            "No biliary ductal dilatation.",
            "There is no intrahepatic or extrahepatic biliary dilatation.",
            "The bile ducts are not dilated.",
        )),
    )),
    ("spleen", (
        ("always", 1.0, (
            "The spleen is normal in size.",
            "The spleen is unremarkable.",
            "The spleen is normal in size without focal splenic lesion.",
        )),
    )),
    ("pancreas", (
        ("always", 1.0, (
            "The pancreas is unremarkable.",
            "The pancreas is normal without ductal dilatation.",
            "The pancreas enhances homogeneously without peripancreatic stranding.",
        )),
    )),
    ("kidneys and adrenals", (
        ("positive", ("renal cyst",)),
        ("negate", ("renal cyst",), 1.0, (
            "The kidneys are normal in size without renal cysts or hydronephrosis.",
            "Both kidneys are unremarkable with no renal cyst or hydronephrosis.",
            "No renal cysts. The kidneys enhance symmetrically without hydronephrosis.",
        )),
        ("otherwise", ("renal cyst",), (
            "No hydronephrosis.",
            "There is no hydronephrosis or renal calculus.",
            "The kidneys are otherwise unremarkable without hydronephrosis.",
        )),
        ("always", 1.0, (
            "The adrenal glands are normal.",
            "The adrenal glands are unremarkable.",
            "Both adrenal glands are normal in thickness.",
        )),
    )),
    ("bowel and peritoneum", (
        ("always", 1.0, (
            "No bowel obstruction or bowel wall thickening.",
            "The visualized bowel loops are normal in caliber.",
            "The stomach and visualized bowel are unremarkable.",
        )),
        ("always", 1.0, (
            "No ascites or free intraperitoneal air.",
            "There is no free fluid or free air.",
            "No intra-abdominal free fluid.",
        )),
        ("always", 0.8, (
            "No abdominal or retroperitoneal lymphadenopathy.",
            "No enlarged abdominal lymph nodes.",
            "There is no retroperitoneal lymphadenopathy.",
        )),
        ("always", 0.5, (
            "The abdominal aorta is normal in caliber.",
            "The abdominal aorta is of normal caliber without aneurysm.",
        )),
    )),
    ("bones and soft tissues", (
        ("always", 1.0, (
            "No suspicious osseous lesion.",
            "No acute osseous abnormality.",
            "The osseous structures are intact without suspicious lesion.",
        )),
        ("always", 0.5, (
            "Mild degenerative changes of the thoracic spine.",
            "Mild multilevel degenerative changes of the spine.",
        )),
        ("always", 0.6, (
            "The visualized soft tissues are unremarkable.",
            "The chest wall and soft tissues are unremarkable.",
        )),
    )),
)
# fmt: on
# impression order: most significant first
_IMPRESSION_ORDER: tuple[str, ...] = (
    "mass",
    "consolidation",
    "pleural effusion",
    "nodule",
    "hepatic lesion",
    "cardiomegaly",
    "emphysema",
    "renal cyst",
)


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
        template = str(rng.choice(_POSITIVE[finding.name]))
        sentences.append(template.format(size=int(finding.size_mm), side=finding.side, zone=finding.zone))
    rng.shuffle(sentences)
    present = {f.name for f in findings}
    absent = [name for name in FINDING_NAMES if name not in present]
    for index in rng.permutation(len(absent))[: int(rng.integers(0, max_negations + 1))]:
        sentences.append(str(rng.choice(_NEGATIVE[absent[int(index)]])))
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
    unknown = sorted({f.name for f in findings} - set(_LONG_POSITIVE))
    if unknown:
        raise ValueError(f"findings: expected names from {FINDING_NAMES}, found {unknown}")
    measures = [_measure(f.size_mm, bool(rng.random() < 0.5)) for f in findings]
    present = {f.name for f in findings}
    parts: list[str] = []
    if rng.random() < 0.85:
        parts.append("TECHNIQUE: " + _pick(rng, _TECHNIQUE))
        if rng.random() < 0.7:
            parts.append(_pick(rng, _COMPARISON))
    sentences: list[str] = []
    negated: set[str] = set()
    for _, entries in _REGIONS:
        for entry in entries:
            kind = entry[0]
            if kind == "positive":
                chosen = [i for i, f in enumerate(findings) if f.name in entry[1]]
                for i in rng.permutation(len(chosen)):
                    finding = findings[chosen[int(i)]]
                    template = _pick(rng, _templates(_LONG_POSITIVE, finding))
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
        order = sorted(range(len(findings)), key=lambda i: _IMPRESSION_ORDER.index(findings[i].name))
        items = []
        for number, i in enumerate(order, start=1):
            finding = findings[i]
            item = _fill(_pick(rng, _templates(_IMPRESSION, finding)), finding, measures[i])
            key = finding.name
            if key == "nodule":
                key = "nodule/large" if finding.size_mm > _NODULE_FOLLOW_UP_MM else "nodule/small"
            if key in _RECOMMENDATION:
                item += " " + _pick(rng, _RECOMMENDATION[key])
            items.append(f"{number}) {item}")
        impression = " ".join(items) + " " + _pick(rng, _CLOSING_ABNORMAL)
    else:
        impression = _pick(rng, _CLOSING_NORMAL)
    parts.append("IMPRESSION: " + impression)
    return " ".join(" ".join(parts).split())


def report_corpus(styles: tuple[str, ...] = REPORT_STYLES) -> list[str]:
    """Every template sentence of ``styles`` with its slots filled by representative values: text to train a
    tokenizer on. The short style's part comes first and is the same list as before the long style existed."""
    corpus: list[str] = []
    if "short" in styles:
        corpus.extend(NORMAL_REPORTS)
        for templates in _NEGATIVE.values():
            corpus.extend(templates)
        for templates in _POSITIVE.values():
            for template in templates:
                for side in ("right", "left", "bilateral"):
                    for zone in ("upper", "lower"):
                        corpus.append(template.format(size=12, side=side, zone=zone))
    if "long" in styles:
        corpus.append("TECHNIQUE: FINDINGS: IMPRESSION:")
        corpus.extend("TECHNIQUE: " + t for t in _TECHNIQUE)
        corpus.extend(_COMPARISON)
        for _, entries in _REGIONS:
            for entry in entries:
                if entry[0] != "positive":
                    corpus.extend(entry[-1])
        corpus.extend(_CLOSING_NORMAL)
        corpus.extend(_CLOSING_ABNORMAL)
        for templates in _RECOMMENDATION.values():
            corpus.extend(templates)
        for table, prefix in ((_LONG_POSITIVE, ""), (_IMPRESSION, "1) ")):
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
