"""Reports of the second synthetic world: freely worded 100-300-word CT reports drawn from a study's truth.

What a report says, with which probability (also in ``docs/synthetic_world.md``):

- Every present finding is named positively, once in FINDINGS (one of several templates with its attributes: side,
  zone, size, count, severity) and once in the IMPRESSION (a short form), optionally with a hedge ("likely",
  "probable", "possibly", "consistent with"). Positive sentences never carry a negation word.
- Every absent finding is either not mentioned (probability :data:`P_OMIT_ABSENT`), negated on its own or negated
  in a list with other absent findings of its region. No sentence asserts an absent finding.
- Normal-region boilerplate (airways, mediastinum, gallbladder, spleen, pancreas, kidneys, bowel, bones, soft
  tissues...) is drawn from several phrasings each and included with probability 0.6; a "the lungs are clear"-style
  sentence only appears when the region has no finding.
- Sentence order within a region, region order within the chest and the abdomen, the section headers, the
  indication, the comparison line and the technique line (which names the contrast phase with probability 0.7 and
  the kernel with probability 0.4: a radiologist writes what the scan was) vary independently.

:data:`FINDING_TERMS` and :data:`NEGATION_CUES` are the words a reader (or a test) uses to tell which findings a
sentence names and whether it negates them.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from custom.data.world_findings import WORLD_FINDINGS, Finding, Study

__all__ = [
    "FINDING_TERMS",
    "NEGATION_CUES",
    "P_OMIT_ABSENT",
    "write_world_report",
    "sentences_naming",
    "word_bigrams",
    "same_findings_bigram_overlap",
]

P_OMIT_ABSENT = 0.3

#: lower-case substrings by which a sentence names a finding (positively or negated)
FINDING_TERMS: dict[str, tuple[str, ...]] = {
    "ground-glass opacity": ("ground-glass", "ground glass"),
    "pulmonary nodule": ("nodule", "nodular"),
    "emphysema": ("emphysema", "emphysematous"),
    "hepatic steatosis": ("steatosis", "fatty"),
    "lung mass": ("mass",),
    "pleural effusion": ("pleural effusion", "pleural fluid", "effusions"),
    "cardiomegaly": ("cardiomegaly", "heart is enlarged", "enlarged heart", "cardiac enlargement", "enlarged cardiac"),
    "liver lesion": ("lesion", "hypodensit"),
}
#: a sentence containing one of these words (whole words) is a negated statement
NEGATION_CUES: tuple[str, ...] = ("no", "not", "without", "negative", "absent", "free", "nor", "none")

_HEDGES = ("", "", "likely ", "probable ", "possibly ", "most likely ")
_SIZE_WORD = {"mild": ("mild", "subtle", "faint", "minimal"), "moderate": ("moderate", "moderately extensive")}


def _pick(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def _side_words(side: str, rng: np.random.Generator) -> str:
    if side == "bilateral":
        return _pick(rng, ("bilateral", "bilateral", "both"))
    return side


def _lobe(finding: Finding, rng: np.random.Generator) -> str:
    """'right upper lobe' style location, sometimes as a zone."""
    if finding.side == "bilateral":
        return _pick(rng, (f"both {finding.zone} lobes", f"the {finding.zone} lung zones bilaterally"))
    return _pick(
        rng,
        (
            f"the {finding.side} {finding.zone} lobe",
            f"the {finding.zone} zone of the {finding.side} lung",
            f"the {finding.side} {finding.zone} lung",
        ),
    )


def _positive(finding: Finding, rng: np.random.Generator) -> str:
    """One FINDINGS sentence naming ``finding`` with its attributes (never a negation word)."""
    name = finding.name
    hedge = _pick(rng, _HEDGES)
    if name == "ground-glass opacity":
        severity = _pick(rng, _SIZE_WORD[finding.severity])
        return _pick(
            rng,
            (
                f"There is {severity} ground-glass opacity in {_lobe(finding, rng)}, {hedge}inflammatory.",
                f"Patchy {severity} ground-glass attenuation is seen in {_lobe(finding, rng)}.",
                f"Hazy ground glass densities involve {_lobe(finding, rng)}, {hedge}infectious.",
                f"{severity.capitalize()} areas of ground-glass opacification are present in {_lobe(finding, rng)}.",
            ),
        )
    if name == "pulmonary nodule":
        size = int(finding.size_mm)
        call = _pick(rng, ("likely benign", "indeterminate", "of uncertain significance"))
        if finding.count == 1:
            return _pick(
                rng,
                (
                    f"A {size} mm solid nodule is noted in {_lobe(finding, rng)}.",
                    f"There is a {size} mm pulmonary nodule in {_lobe(finding, rng)}.",
                    f"Solitary {size} mm nodule, {_lobe(finding, rng)}, {call}.",
                    f"In {_lobe(finding, rng)} a small nodule measuring {size} mm is seen.",
                ),
            )
        count = {2: _pick(rng, ("two", "2")), 3: _pick(rng, ("three", "several", "3"))}[finding.count]
        return _pick(
            rng,
            (
                f"{count.capitalize()} small pulmonary nodules, the largest {size} mm in {_lobe(finding, rng)}.",
                f"There are {count} solid nodules in the {finding.side} lung measuring up to {size} mm.",
                f"Multiple tiny nodules ({count}) are scattered in the {finding.side} lung, up to {size} mm.",
            ),
        )
    if name == "emphysema":
        severity = _pick(rng, _SIZE_WORD[finding.severity])
        return _pick(
            rng,
            (
                f"{severity.capitalize()} centrilobular emphysema, upper lobe predominant.",
                f"Emphysematous changes are seen in both upper lobes, {severity} in degree.",
                f"Areas of low attenuation in the upper lobes are consistent with {severity} emphysema.",
                f"There is {severity} paraseptal and centrilobular emphysema at the apices.",
            ),
        )
    if name == "hepatic steatosis":
        severity = _pick(rng, _SIZE_WORD[finding.severity])
        return _pick(
            rng,
            (
                f"Diffusely decreased attenuation of the liver relative to the spleen, {hedge}{severity} steatosis.",
                f"The liver is diffusely hypoattenuating ({severity}), consistent with fatty infiltration.",
                f"{severity.capitalize()} hepatic steatosis.",
                f"Hepatic parenchyma shows {severity} diffuse fatty change.",
            ),
        )
    if name == "lung mass":
        size = int(round(finding.size_mm / 10))
        call = _pick(rng, ("suspicious for malignancy", "concerning for a primary lung cancer", "likely neoplastic"))
        return _pick(
            rng,
            (
                f"A {size} cm spiculated mass in {_lobe(finding, rng)} is {call}.",
                f"There is a lobulated {size} cm soft tissue mass in {_lobe(finding, rng)}.",
                f"Large mass measuring {size} cm occupies {_lobe(finding, rng)}.",
            ),
        )
    if name == "pleural effusion":
        side = _side_words(finding.side, rng)
        if finding.side == "bilateral":
            return _pick(
                rng,
                (
                    f"{finding.severity.capitalize()} bilateral pleural effusions with adjacent atelectasis.",
                    f"There are {finding.severity} layering pleural effusions on both sides.",
                    f"Bilateral {finding.severity} effusions are present.",
                ),
            )
        return _pick(
            rng,
            (
                f"There is a {finding.severity} {side} pleural effusion.",
                f"{finding.severity.capitalize()} layering {side} pleural effusion with compressive atelectasis.",
                f"A {finding.severity} amount of {side} pleural fluid is seen.",
            ),
        )
    if name == "cardiomegaly":
        severity = _pick(rng, ("mild", "slight") if finding.severity == "mild" else ("moderate", "marked"))
        return _pick(
            rng,
            (
                f"The heart is enlarged, {severity} in degree.",
                f"{severity.capitalize()} cardiomegaly.",
                f"There is {severity} cardiac enlargement.",
                f"Enlarged cardiac silhouette, {severity}.",
            ),
        )
    if name == "liver lesion":
        size = int(round(finding.size_mm / 10))
        call = _pick(rng, ("likely a cyst", "indeterminate", "possibly a hemangioma"))
        segment = _pick(rng, ("VI", "VII", "VIII", "V"))
        if finding.count == 1:
            return _pick(
                rng,
                (
                    f"A {size} cm hypodense lesion in the right hepatic lobe, {call}.",
                    f"There is a hypoattenuating {size} cm liver lesion in segment {segment}.",
                    f"Focal low-density lesion of the liver measuring {size} cm.",
                ),
            )
        return _pick(
            rng,
            (
                f"Two hypodense hepatic lesions, the larger {size} cm.",
                f"There are two liver lesions up to {size} cm, {_pick(rng, ('likely cysts', 'indeterminate'))}.",
                f"Hepatic hypodensities, two in number, measure up to {size} cm.",
            ),
        )
    raise ValueError(f"finding: expected one of {WORLD_FINDINGS}, found {name!r}")


def _impression(finding: Finding, rng: np.random.Generator) -> str:
    """A short IMPRESSION line naming ``finding`` (never a negation word)."""
    hedge = _pick(rng, ("", "", "Likely ", "Probable ", "Findings consistent with "))
    short = {
        "ground-glass opacity": _pick(
            rng, ("ground-glass opacity", "ground-glass opacities", f"{finding.side} ground glass changes")
        ),
        "pulmonary nodule": _pick(rng, ("pulmonary nodule", "small lung nodules", f"{finding.side} lung nodule")),
        "emphysema": _pick(rng, ("emphysema", "upper lobe emphysema", "emphysematous lung disease")),
        "hepatic steatosis": _pick(rng, ("hepatic steatosis", "fatty liver", "diffuse fatty infiltration")),
        "lung mass": _pick(rng, ("lung mass", f"{finding.side} lung mass", "pulmonary mass")),
        "pleural effusion": _pick(rng, ("pleural effusion", f"{_side_words(finding.side, rng)} pleural effusion")),
        "cardiomegaly": _pick(rng, ("cardiomegaly", "enlarged heart")),
        "liver lesion": _pick(rng, ("liver lesion", "hypodense hepatic lesion", "focal liver lesion")),
    }[finding.name]
    if hedge:
        return f"{hedge}{short}."
    return f"{short[0].upper()}{short[1:]}."


#: per finding: (singular noun phrase used in negation lists) and its own negative sentences
_NEGATIVE: dict[str, tuple[str, tuple[str, ...]]] = {
    "ground-glass opacity": (
        "ground-glass opacity",
        (
            "No ground-glass opacity.",
            "There is no ground-glass opacification.",
            "No areas of ground glass attenuation.",
        ),
    ),
    "pulmonary nodule": (
        "pulmonary nodules",
        ("No pulmonary nodules.", "No suspicious pulmonary nodule is identified.", "There are no lung nodules."),
    ),
    "emphysema": ("emphysema", ("No emphysema.", "No emphysematous change.", "There is no evidence of emphysema.")),
    "hepatic steatosis": (
        "hepatic steatosis",
        ("No hepatic steatosis.", "No evidence of fatty infiltration of the liver.", "The liver is not fatty."),
    ),
    "lung mass": ("lung mass", ("No lung mass.", "No pulmonary mass is seen.", "There is no mass in either lung.")),
    "pleural effusion": (
        "pleural effusion",
        ("No pleural effusion.", "No pleural effusion or pneumothorax.", "There is no pleural fluid."),
    ),
    "cardiomegaly": ("cardiomegaly", ("No cardiomegaly.", "The heart is not enlarged.", "No cardiac enlargement.")),
    "liver lesion": (
        "focal liver lesion",
        ("No focal liver lesion.", "No focal hepatic lesions are seen.", "The liver has no focal lesion."),
    ),
}

#: regions: name, findings reported there, normal statements allowed only when all those findings are absent,
#: boilerplate that is true whatever the findings (each a tuple of phrasings)
_REGIONS: tuple[tuple[str, tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]], ...] = (
    (
        "lungs",
        ("ground-glass opacity", "pulmonary nodule", "emphysema", "lung mass"),
        ("The lungs are clear.", "Lung parenchyma is unremarkable.", "The lungs are well aerated and clear."),
        (
            ("The central airways are patent.", "Trachea and main bronchi are patent.", "Airways are clear."),
            ("The lungs are well expanded.", "Lung volumes are normal.", "Normal lung inflation."),
        ),
    ),
    (
        "pleura",
        ("pleural effusion",),
        ("The pleural spaces are clear.", "Pleural surfaces are smooth.", "Both pleural spaces are normal."),
        (("No pneumothorax.", "There is no pneumothorax.", "Pneumothorax is absent."),),
    ),
    (
        "heart",
        ("cardiomegaly",),
        ("Heart size is normal.", "The heart is normal in size.", "Normal cardiac size."),
        (
            ("No pericardial effusion.", "The pericardium is unremarkable.", "Pericardium is normal."),
            ("No mediastinal or hilar lymphadenopathy.", "Mediastinal nodes are not enlarged.", "No adenopathy."),
            ("The thoracic aorta is normal in caliber.", "Normal caliber of the thoracic aorta.", "Aorta is normal."),
        ),
    ),
    (
        "liver",
        ("hepatic steatosis", "liver lesion"),
        ("The liver is unremarkable.", "Normal appearance of the liver.", "The liver is normal in size and density."),
        (("The portal veins are patent.", "Hepatic vasculature is patent.", "Portal venous system is patent."),),
    ),
)
_ABDOMEN_BOILERPLATE: tuple[tuple[str, ...], ...] = (
    ("The gallbladder is unremarkable.", "Gallbladder is normal.", "No gallstones are seen."),
    ("The spleen is normal in size.", "Spleen is unremarkable.", "Normal spleen."),
    ("The pancreas is unremarkable.", "Pancreas is normal in appearance.", "No pancreatic duct dilatation."),
    ("The adrenal glands are normal.", "Adrenals are unremarkable.", "Both adrenal glands are normal."),
    ("Kidneys enhance symmetrically.", "The kidneys are normal in size.", "No hydronephrosis."),
    ("No bowel obstruction.", "Bowel loops are normal in caliber.", "Bowel is unremarkable."),
    ("No free fluid in the abdomen.", "There is no ascites.", "No free intraperitoneal air."),
    ("No aggressive osseous lesion.", "Degenerative changes of the spine.", "Bones are intact."),
    ("Soft tissues are unremarkable.", "The body wall is normal.", "Subcutaneous tissues are normal."),
    ("The urinary bladder is unremarkable.", "Bladder is decompressed.", "The bladder is normal."),
    ("The thyroid gland is unremarkable.", "Visualized thyroid is normal.", "Thyroid appears normal."),
    ("Abdominal aorta is normal in caliber.", "No abdominal aortic aneurysm.", "Normal abdominal vessels."),
    ("The stomach is unremarkable.", "Stomach is normally distended.", "No gastric wall thickening."),
    ("No retroperitoneal adenopathy.", "Abdominal lymph nodes are not enlarged.", "No enlarged abdominal nodes."),
)
_INDICATIONS = (
    "Cough.",
    "Shortness of breath.",
    "Abdominal pain.",
    "Staging.",
    "Follow-up.",
    "Fever of unknown origin.",
    "Weight loss.",
    "Chest pain.",
    "Routine surveillance.",
)
_COMPARISON = ("None.", "No prior studies available.", "Prior CT from last year.", "None available.", "Outside CT.")
_NORMAL_IMPRESSION = (
    "No acute abnormality.",
    "Normal CT of the chest and abdomen.",
    "No acute cardiopulmonary or abdominal process.",
    "Unremarkable examination.",
)


def _technique(study: Study, rng: np.random.Generator) -> str:
    region = _pick(rng, ("chest, abdomen and pelvis", "chest and abdomen", "thorax and abdomen"))
    phase = study.nuisance.phase
    if rng.random() < 0.7:
        contrast = (
            _pick(rng, (" without intravenous contrast", " without contrast"))
            if phase == "non-contrast"
            else f" with intravenous contrast in the {phase} phase"
        )
    else:
        contrast = ""
    sentence = f"{_pick(rng, ('CT', 'Computed tomography', 'Helical CT'))} of the {region}{contrast}."
    if rng.random() < 0.4:
        sentence += f" Images reconstructed with a {study.nuisance.kernel} kernel."
    return sentence


def _negation_list(names: list[str], rng: np.random.Generator) -> str:
    phrases = [_NEGATIVE[n][0] for n in names]
    joined = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + _pick(rng, (" or ", " nor ")) + phrases[-1]
    return _pick(rng, (f"No {joined}.", f"Negative for {joined}.", f"There is no {joined}."))


def _region_sentences(
    findings: tuple[str, ...], normals, boilerplate, present: dict[str, Finding], rng: np.random.Generator
) -> list[str]:
    sentences = [_positive(present[n], rng) for n in findings if n in present]
    absent = [n for n in findings if n not in present and rng.random() >= P_OMIT_ABSENT]
    if not any(n in present for n in findings) and rng.random() < 0.6:
        sentences.append(_pick(rng, normals))
    if len(absent) > 1 and rng.random() < 0.5:
        sentences.append(_negation_list([absent[i] for i in rng.permutation(len(absent))], rng))
    else:
        sentences += [_pick(rng, _NEGATIVE[n][1]) for n in absent]
    sentences += [_pick(rng, options) for options in boilerplate if rng.random() < 0.6]
    if rng.random() < 0.5:  # positives first or anywhere
        return [sentences[i] for i in rng.permutation(len(sentences))]
    return sentences


def write_world_report(study: Study, rng: np.random.Generator, min_words: int = 100) -> str:
    """A 100-300-word report of ``study`` drawn with ``rng`` (same rng state, same text); see the module doc."""
    present = {f.name: f for f in study.findings}
    chest = [
        _region_sentences(findings, normals, boilerplate, present, rng)
        for _, findings, normals, boilerplate in _REGIONS[:3]
    ]
    chest = [chest[i] for i in rng.permutation(3)] if rng.random() < 0.5 else chest
    _, liver_findings, liver_normals, liver_boilerplate = _REGIONS[3]
    abdomen = _region_sentences(liver_findings, liver_normals, liver_boilerplate, present, rng)
    extra = [_pick(rng, options) for options in _ABDOMEN_BOILERPLATE]
    order = list(rng.permutation(len(extra)))
    abdomen += [extra[i] for i in order[: int(rng.integers(3, 7))]]
    body = [s for block in chest for s in block] + abdomen
    names = [f for f in WORLD_FINDINGS if f in present]
    impression = [_impression(present[n], rng) for n in (names[i] for i in rng.permutation(len(names)))]
    if not impression:
        impression = [_pick(rng, _NORMAL_IMPRESSION)]
    elif rng.random() < 0.5:
        impression.append(_pick(rng, ("Otherwise unremarkable.", "No other acute abnormality.")))
    header = (("FINDINGS:", "IMPRESSION:"), ("FINDINGS:", "CONCLUSION:"), ("Findings:", "Impression:"))[
        int(rng.integers(3))
    ]
    parts = []
    if rng.random() < 0.6:
        parts.append(f"HISTORY: {_pick(rng, _INDICATIONS)}")
    parts.append(f"TECHNIQUE: {_technique(study, rng)}")
    if rng.random() < 0.5:
        parts.append(f"Comparison: {_pick(rng, _COMPARISON)}")
    lead_words = _words(" ".join(parts + body + impression))
    while lead_words < min_words and len(order) > 0:  # real reports are long: pad with unused normal statements
        sentence = extra[order.pop()]
        body.append(sentence)
        lead_words += _words(sentence)
    parts += [header[0], " ".join(body), header[1], " ".join(impression)]
    return " ".join(parts)


def _words(text: str) -> int:
    return len(text.split())


_CUE = re.compile(r"\b(" + "|".join(NEGATION_CUES) + r")\b", re.IGNORECASE)


def sentences_naming(report: str, finding: str) -> list[tuple[str, bool]]:
    """``(sentence, negated)`` for each sentence of ``report`` that names ``finding`` (by :data:`FINDING_TERMS`)."""
    from custom.transforms.report_text import split_sentences

    terms = FINDING_TERMS[finding]
    out = []
    for sentence in split_sentences(report):
        lower = sentence.lower()
        if any(t in lower for t in terms):
            out.append((sentence, bool(_CUE.search(sentence))))
    return out


def word_bigrams(text: str) -> set[tuple[str, str]]:
    """The set of lower-case word bigrams of ``text`` (punctuation marks ``. , :`` count as words)."""
    words = re.findall(r"[a-z0-9-]+|[.,:]", text.lower())
    return set(zip(words, words[1:]))


def same_findings_bigram_overlap(reports: Sequence[str], label_vectors: Sequence[Sequence[int]]) -> dict:
    """Overlap of the word-bigram sets of every pair of reports with equal label vectors: ``{"mean_jaccard"
    (shared / union), "mean_overlap_coefficient" (shared / the smaller set: the share of the shorter report's
    bigrams found in the other), "pairs", "groups"}`` (groups with at least two reports)."""
    groups: dict[tuple, list[set]] = defaultdict(list)
    for report, vector in zip(reports, label_vectors):
        groups[tuple(int(v) for v in vector)].append(word_bigrams(report))
    pairs = [(a, b) for g in groups.values() for a, b in itertools.combinations(g, 2)]
    jaccard = [len(a & b) / len(a | b) for a, b in pairs]
    coefficient = [len(a & b) / min(len(a), len(b)) for a, b in pairs]
    return {
        "mean_jaccard": float(np.mean(jaccard)) if pairs else float("nan"),
        "mean_overlap_coefficient": float(np.mean(coefficient)) if pairs else float("nan"),
        "pairs": len(pairs),
        "groups": sum(len(g) > 1 for g in groups.values()),
    }
