"""Report text: sentence splitting and cleaning before tokenisation."""

from __future__ import annotations

import re

__all__ = ["split_sentences", "clean_report"]

_WHITESPACE = re.compile(r"\s+")
_SECTION_HEADER = re.compile(r"^\s*(findings|impression|report|conclusion|history|technique)\s*:\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def split_sentences(text: str) -> list[str]:
    """Split at sentence-final punctuation followed by whitespace; empty pieces dropped."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def clean_report(text: str) -> str:
    """Collapse whitespace, drop section headers ("FINDINGS:") and repeated sentences, keep the wording otherwise."""
    seen, kept = set(), []
    for sentence in split_sentences(_WHITESPACE.sub(" ", text)):
        sentence = _SECTION_HEADER.sub("", sentence).strip()
        key = sentence.lower()
        if sentence and key not in seen:
            seen.add(key)
            kept.append(sentence)
    return " ".join(kept)
