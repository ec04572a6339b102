"""Labels for BIMCV-R's English reports: the BIMCV English labeler (negation and uncertainty per clause) run over a
vocabulary that covers the findings chest CT reports name, and a measure of how much of the release's own ``Labels``
column that vocabulary covers.

Vocabulary (:data:`CHEST_CT_PATTERNS`): the BIMCV terms (:data:`t3d_tools.curation.bimcv.labels.ENGLISH_PATTERNS`)
plus the chest-CT findings that are most frequent in BIMCV-R's ``Labels`` column (ground glass pattern, adenopathy,
calcified densities, vertebral degenerative changes, ...; frequencies cited in ``docs/ct_rate_curation.md``), each
named by its canonical PadChest term so the ``Labels`` column can be compared term for term. "pleural effusion" no
longer matches a bare "effusion" after "pericardial".

Coverage (:func:`label_coverage`): of the finding terms the ``Labels`` column gives (meta labels such as "normal"
and "exclude" left out), the fraction that are vocabulary terms (``coverage``), and, per vocabulary term, the
fraction of studies whose ``Labels`` has it where the labeler found it positive in the English report
(``recall``). Low coverage means the labeler's classes describe little of what the reports say; TCL's label
affinity is then refused (see :mod:`t3d_tools.curation.bimcv_r.curate`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from t3d_tools.curation.bimcv.labels import ENGLISH_PATTERNS

__all__ = ["CHEST_CT_PATTERNS", "label_coverage"]

CHEST_CT_PATTERNS: dict[str, str] = {
    **ENGLISH_PATTERNS,
    "pleural effusion": r"pleural effusions?|(?<!pericardial )(?<!pericardic )effusions?",
    "pericardial effusion": r"pericardi(?:al|c) effusions?",
    "ground glass pattern": r"ground[- ]glass(?: pattern| opacit(?:y|ies)| densit(?:y|ies))?",
    "adenopathy": r"(?:lymph)?adenopath(?:y|ies)|enlarged (?:lymph )?nodes",
    "calcified densities": r"calcifi(?:ed|cations?)",
    "vertebral degenerative changes": (
        r"(?:vertebral |spinal )?degenerative changes|spondylo(?:sis|arthrosis)|discopath(?:y|ies)"
    ),
    "interstitial pattern": r"interstitial (?:pattern|infiltrates?|involvement|disease)",
    "alveolar pattern": r"alveolar (?:pattern|infiltrates?|opacit(?:y|ies))",
    "bronchiectasis": r"bronchiectas[ie]s",
    "pulmonary fibrosis": r"(?:pulmonary )?fibros(?:is|ing)|fibrotic (?:changes|bands?|tracts?)",
    "aortic atheromatosis": r"(?:aortic )?atherom(?:a|atosis|atous)",
    "hiatal hernia": r"hiatal hernias?|hiatus hernias?",
    "pneumothorax": r"pneumothora(?:x|ces)",
    "granuloma": r"granulomas?",
}


def label_coverage(
    reference_terms: Sequence[Sequence[str]], labeled_terms: Sequence[Sequence[str]], vocabulary: Sequence[str]
) -> dict:
    """Compare the labeler (``labeled_terms``, per study) with the release's ``Labels`` column (``reference_terms``,
    canonical terms without meta labels). Returns ``{"studies", "reference_mentions", "covered_mentions",
    "coverage", "recall": {term: fraction}, "uncovered_top": [[term, count], ...]}``."""
    vocabulary = set(vocabulary)
    mentions = Counter(term for terms in reference_terms for term in set(terms))
    covered = sum(count for term, count in mentions.items() if term in vocabulary)
    total = sum(mentions.values())
    recall = {}
    for term in sorted(vocabulary):
        having = [i for i, terms in enumerate(reference_terms) if term in terms]
        if having:
            recall[term] = round(sum(term in labeled_terms[i] for i in having) / len(having), 4)
    uncovered = [[t, c] for t, c in mentions.most_common() if t not in vocabulary][:15]
    return {
        "studies": len(reference_terms),
        "reference_mentions": total,
        "covered_mentions": covered,
        "coverage": round(covered / total, 4) if total else None,
        "recall": recall,
        "uncovered_top": uncovered,
    }
