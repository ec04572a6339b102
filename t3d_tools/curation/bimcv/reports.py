"""Report cleaning and translation (Spanish -> English) behind one interface, with an on-disk cache.

Cleaning (:func:`clean_report`) removes what carries no finding and would only teach the text encoder noise:
upper-case section headers ending in a colon ("INFORME TC TÓRAX:"), dates (with an optional "Fecha:" prefix),
anonymisation tokens ("[NOMBRE]", "<ANON>", "XXXX", "****"), repeated whitespace and repeated sentences.

Translation: every translator has a ``name`` (part of the cache key) and ``translate(texts) -> texts``.

- ``"identity"``: keep the text (for sources already in English, or to inspect the Spanish pipeline);
- ``"column:<name>"``: the table already holds a translated column; the curation reads it, nothing is translated
  (:func:`make_translator` returns ``None``);
- anything else: a ``transformers`` sequence-to-sequence model by hub id or local path, e.g. MarianMT
  ``Helsinki-NLP/opus-mt-es-en``, loaded on first use.

:class:`CachedTranslator` translates sentence by sentence (MarianMT inputs are limited to 512 tokens, and report
sentences repeat across thousands of studies, so the cache hit rate is high) and stores each sentence's translation
in a JSON-lines file keyed by ``sha256(translator name + sentence)``; a re-run translates nothing it has seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from typing import Protocol

from tqdm import tqdm

__all__ = [
    "clean_report",
    "split_sentences",
    "Translator",
    "IdentityTranslator",
    "Seq2SeqTranslator",
    "CachedTranslator",
    "make_translator",
]

_HEADER = re.compile(r"(?:^|(?<=[.\n]))\s*[A-ZÁÉÍÓÚÜÑ][A-ZÁÉÍÓÚÜÑ0-9 ./-]{2,}:\s*")
_DATE = re.compile(
    r"(?:\bfecha\s*:?\s*)?\b(?:\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}-\d{2}-\d{2}|\d{8})\b\.?", re.IGNORECASE
)
_ANONYMISED = re.compile(r"\[[A-ZÁÉÍÓÚÑ_ ]+\]|<[A-Za-z_ ]+>|\bX{3,}\b|\*{3,}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of a cleaned text (split after ``. ! ?``), stripped, empty ones dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip(" .")]


def clean_report(text: str) -> str:
    """Cleaned report text: headers, dates, anonymisation tokens, extra whitespace and repeated sentences removed."""
    text = _HEADER.sub(" ", text)
    text = _DATE.sub(" ", text)
    text = _ANONYMISED.sub(" ", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([.,;:])", r"\1", text)
    sentences, seen = [], set()
    for sentence in split_sentences(text):
        key = sentence.lower().rstrip(".")
        if key not in seen:
            seen.add(key)
            sentences.append(sentence)
    return " ".join(sentences)


class Translator(Protocol):
    """Anything with a ``name`` and ``translate(texts) -> texts`` (same length and order)."""

    name: str

    def translate(self, texts: Sequence[str]) -> list[str]: ...


class IdentityTranslator:
    """Returns its input: no translation."""

    name = "identity"

    def translate(self, texts: Sequence[str]) -> list[str]:
        return list(texts)


class Seq2SeqTranslator:
    """A ``transformers`` seq2seq model (e.g. MarianMT) by hub id or local path, greedy decoding, batched.

    Real runs: ``Helsinki-NLP/opus-mt-es-en`` (needs ``sentencepiece`` for its tokenizer, and the weights in the
    local Hugging Face cache or network access on first use).
    """

    def __init__(self, model: str, batch_size: int = 16, max_new_tokens: int = 256, device: str = "cpu") -> None:
        self.model_id = model
        self.name = f"seq2seq:{model}"
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device = device
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        self._model = AutoModelForSeq2SeqLM.from_pretrained(self.model_id).to(self.device).eval()

    def translate(self, texts: Sequence[str]) -> list[str]:
        import torch

        if self._model is None:
            self._load()
        outputs: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            inputs = self._tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=512)
            inputs.pop("token_type_ids", None)  # Marian takes none; word-level tokenizers emit it anyway
            with torch.no_grad():
                generated = self._model.generate(
                    **inputs.to(self.device), max_new_tokens=self.max_new_tokens, num_beams=1, do_sample=False
                )
            outputs.extend(t.strip() for t in self._tokenizer.batch_decode(generated, skip_special_tokens=True))
        return outputs


class CachedTranslator:
    """Sentence-level translation through ``translator`` with a JSON-lines cache at ``cache_path``.

    Each cache line is ``{"key": sha256(name + "\\0" + sentence), "source": sentence, "target": translation}``.
    Only sentences absent from the cache reach the translator; the file is appended to, never rewritten.
    ``cache_path=None`` keeps the cache in memory (dry runs).
    """

    def __init__(self, translator: Translator, cache_path: str | None, progress: bool = True) -> None:
        self.translator = translator
        self.name = translator.name
        self.cache_path = cache_path
        self.progress = progress
        self.misses = 0
        self._cache: dict[str, str] = {}
        if cache_path and os.path.isfile(cache_path):
            with open(cache_path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        entry = json.loads(line)
                        self._cache[entry["key"]] = entry["target"]

    def _key(self, sentence: str) -> str:
        return hashlib.sha256(f"{self.translator.name}\0{sentence}".encode()).hexdigest()

    def translate(self, texts: Sequence[str], batch_size: int = 64) -> list[str]:
        """Translate whole reports; returns one English text per input text."""
        per_text = [split_sentences(text) for text in texts]
        missing = sorted({s for sentences in per_text for s in sentences if self._key(s) not in self._cache})
        self.misses += len(missing)
        for start in tqdm(
            range(0, len(missing), batch_size), desc="translate", unit="batch", disable=not self.progress or not missing
        ):
            batch = missing[start : start + batch_size]
            translated = self.translator.translate(batch)
            if len(translated) != len(batch):
                raise RuntimeError(f"{self.name}: expected {len(batch)} translations, found {len(translated)}")
            entries = [{"key": self._key(s), "source": s, "target": t} for s, t in zip(batch, translated)]
            for entry in entries:
                self._cache[entry["key"]] = entry["target"]
            if self.cache_path:
                os.makedirs(os.path.dirname(os.path.abspath(self.cache_path)), exist_ok=True)
                with open(self.cache_path, "a", encoding="utf-8") as f:
                    f.writelines(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
        return [" ".join(self._cache[self._key(s)] for s in sentences) for sentences in per_text]


def make_translator(spec: str, **kwargs) -> Translator | None:
    """``"identity"`` -> :class:`IdentityTranslator`; ``"column:<name>"`` -> ``None`` (read the column);
    otherwise a :class:`Seq2SeqTranslator` for the model id/path ``spec`` (``kwargs`` go to it)."""
    if spec == "identity":
        return IdentityTranslator()
    if spec.startswith("column:"):
        return None
    return Seq2SeqTranslator(spec, **kwargs)
