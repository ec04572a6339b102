"""Study labels: the ``Labels`` column of the BIMCV tables and an English rule-based labeler, one vocabulary.

Both routes produce *canonical terms*: lower-case PadChest/UMLS terms after synonym mapping (:data:`SYNONYMS`).

``Labels`` route
    The column holds a Python-style list string, e.g. ``"['COVID 19', 'pneumonia', 'pleural effusion']"``. Terms are
    normalised (case, whitespace, surrounding quotes/punctuation), mapped through :data:`SYNONYMS`, and *meta labels*
    are dropped. Rule: a term is a meta label when it describes the report or the study rather than a finding in the
    patient (:data:`META_LABELS`: "normal", "exclude", "suboptimal study", "unchanged", ...). A study whose terms are
    all meta labels has no positive class (it is a negative for every class, not excluded).

English route (sources without labels, e.g. a BIMCV-R style CSV)
    :func:`label_english_report` finds each vocabulary term's surface phrases (:data:`ENGLISH_PATTERNS`) per clause
    and classifies each mention as positive, negative (a negation cue earlier in the clause, or "is absent"/"has
    resolved" after it) or uncertain (a hedge such as "possible", "suspicious for", "cannot be excluded").
    :func:`english_terms` turns that into a term list with an explicit policy for uncertain mentions.

Class list: :func:`build_class_list` keeps the terms with at least ``min_positive`` positive studies, ordered by
descending frequency then name, and :func:`multi_hot` encodes a study over it.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from custom.errors import DataError

__all__ = [
    "SYNONYMS",
    "META_LABELS",
    "ENGLISH_PATTERNS",
    "normalise_term",
    "parse_label_list",
    "canonical_terms",
    "label_english_report",
    "english_terms",
    "build_class_list",
    "multi_hot",
]

# surface form -> canonical term (forms are compared after normalise_term)
SYNONYMS: dict[str, str] = {
    "pulmonary nodule": "nodule",
    "nodules": "nodule",
    "multiple nodules": "nodule",
    "pulmonary mass": "mass",
    "lung mass": "mass",
    "pleural effusions": "pleural effusion",
    "effusion": "pleural effusion",
    "alveolar consolidation": "consolidation",
    "consolidations": "consolidation",
    "pulmonary emphysema": "emphysema",
    "heart enlargement": "cardiomegaly",
    "enlarged heart": "cardiomegaly",
    "liver lesion": "hepatic lesion",
    "hepatic nodule": "hepatic lesion",
    "kidney cyst": "renal cyst",
    "renal cysts": "renal cyst",
    "covid19": "covid 19",
    "covid-19": "covid 19",
}

# terms about the report/study, not about the patient: never a class
META_LABELS: frozenset[str] = frozenset(
    {"normal", "exclude", "suboptimal study", "unchanged", "no finding", "no findings", "nothing to report"}
)

# canonical term -> regex of its English surface phrases (word-bounded, case-insensitive)
ENGLISH_PATTERNS: dict[str, str] = {
    "nodule": r"nodules?|nodular opacit(?:y|ies)",
    "mass": r"mass(?:es)?",
    "pleural effusion": r"(?:pleural )?effusions?",
    "consolidation": r"consolidat(?:ion|ions|ed|ive)",
    "emphysema": r"emphysema(?:tous)?",
    "cardiomegaly": r"cardiomegaly|heart is enlarged|enlarged heart|enlargement of the heart",
    "hepatic lesion": r"(?:hepatic|liver) lesions?|lesions? (?:is |are )?(?:seen |noted )?in the liver",
    "renal cyst": r"(?:renal|kidney) cysts?|cysts?(?: of \d+ mm)? (?:of|in|arises from|arising from) the \w+ kidney",
    "pneumonia": r"pneumonias?",
    "atelectasis": r"atelectas[ie]s",
    "covid 19": r"covid[- ]?19",
}

_NEGATION_BEFORE = re.compile(
    r"\b(?:no|not|without|absence of|negative for|free of|rule out|ruled out|resolution of|resolved)\b", re.I
)
_NEGATION_AFTER = re.compile(r"^[^.]*?\b(?:is|are) (?:absent|not seen|not identified|resolved)\b", re.I)
_UNCERTAIN_BEFORE = re.compile(
    r"\b(?:possible|possibly|probable|probably|questionable|suspicious for|suspected|may represent|"
    r"could represent|cannot exclude|equivocal|likely)\b",
    re.I,
)
_UNCERTAIN_AFTER = re.compile(r"^[^.]*?\b(?:cannot be (?:excluded|ruled out)|is not excluded|is suspected)\b", re.I)
# clause boundaries end a negation's scope: sentence ends, semicolons, and contrastive conjunctions
_CLAUSE_SPLIT = re.compile(r"[.;:\n]+|\b(?:but|however|although|with the exception of)\b", re.I)


def normalise_term(term: str) -> str:
    """Lower case, single spaces, no surrounding quotes/punctuation, then :data:`SYNONYMS`."""
    term = re.sub(r"\s+", " ", term.strip().strip("'\"[](){}.,;").strip()).lower()
    return SYNONYMS.get(term, term)


def parse_label_list(value: str, source: str) -> list[str]:
    """Parse a ``Labels`` cell (``"['a', 'b']"``, ``"a, b"`` or empty) into its raw terms.

    Raises:
        DataError: the cell looks like a list literal but does not parse.
    """
    value = (value or "").strip()
    if not value or value.lower() in {"nan", "none", "[]"}:
        return []
    if value.startswith("["):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise DataError(f"{source}: expected a list string such as \"['a', 'b']\", found {value[:60]!r}") from None
        if not isinstance(parsed, (list, tuple)):
            raise DataError(f"{source}: expected a list of terms, found {type(parsed).__name__}")
        return [str(term) for term in parsed]
    return [part for part in value.split(",")]


def canonical_terms(raw_terms: Iterable[str]) -> list[str]:
    """Normalised, de-duplicated (first occurrence order) terms without meta labels."""
    terms: list[str] = []
    for raw in raw_terms:
        term = normalise_term(raw)
        if term and term not in META_LABELS and term not in terms:
            terms.append(term)
    return terms


def label_english_report(text: str, patterns: dict[str, str] | None = None) -> dict[str, str]:
    """``{term: "positive" | "negative" | "uncertain"}`` for every vocabulary term mentioned in ``text``.

    A term mentioned several times takes the strongest status: positive > uncertain > negative.
    """
    patterns = ENGLISH_PATTERNS if patterns is None else patterns
    rank = {"negative": 0, "uncertain": 1, "positive": 2}
    status: dict[str, str] = {}
    for clause in _CLAUSE_SPLIT.split(text):
        for term, pattern in patterns.items():
            for match in re.finditer(rf"\b(?:{pattern})\b", clause, re.I):
                before, after = clause[: match.start()], clause[match.end() :]
                if _NEGATION_BEFORE.search(before) or _NEGATION_AFTER.search(after):
                    found = "negative"
                elif _UNCERTAIN_BEFORE.search(before) or _UNCERTAIN_AFTER.search(after):
                    found = "uncertain"
                else:
                    found = "positive"
                previous = status.get(term)
                if previous is None or rank[found] > rank[previous]:
                    status[term] = found
    return status


def english_terms(text: str, uncertain_as: str = "positive", patterns: dict[str, str] | None = None) -> list[str]:
    """Positive terms of an English report; ``uncertain_as`` is "positive" (U-ones) or "negative" (U-zeros)."""
    if uncertain_as not in ("positive", "negative"):
        raise ValueError(f"uncertain_as: expected 'positive' or 'negative', found {uncertain_as!r}")
    wanted = {"positive"} | ({"uncertain"} if uncertain_as == "positive" else set())
    return [term for term, found in label_english_report(text, patterns).items() if found in wanted]


def build_class_list(study_terms: Iterable[Sequence[str]], min_positive: int) -> list[str]:
    """Terms with at least ``min_positive`` positive studies, by descending count then name."""
    counts = Counter(term for terms in study_terms for term in set(terms))
    return sorted((term for term, n in counts.items() if n >= min_positive), key=lambda t: (-counts[t], t))


def multi_hot(terms: Iterable[str], classes: Sequence[str]) -> list[int]:
    """Multi-hot vector, shape ``(len(classes),)``, 1 where the class is among ``terms``."""
    present = set(terms)
    return [int(name in present) for name in classes]
