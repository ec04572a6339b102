"""Report text: cleaning before tokenisation, and lexical fingerprints whose cosine says how alike two reports are."""

from __future__ import annotations

import re
import zlib

import numpy as np

__all__ = ["split_sentences", "clean_report", "report_fingerprint"]

_WHITESPACE = re.compile(r"\s+")
_SECTION_HEADER = re.compile(r"^\s*(findings|impression|report|conclusion|history|technique)\s*:\s*", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")
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


def report_fingerprint(text: str, dim: int = 512) -> np.ndarray:
    """L2-normalised hashed bag of word unigrams and bigrams, ``(dim,)`` float32.

    Identical reports (up to case, punctuation and whitespace) get cosine 1; "no effusion" and "effusion" differ
    through their bigrams. Language-model-free on purpose: it is stable from the first step, when the text
    embeddings are still untrained.
    """
    words = _WORD.findall(text.lower())
    vector = np.zeros(dim, dtype=np.float32)
    for gram in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
        vector[zlib.crc32(gram.encode()) % dim] += 1.0
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector
