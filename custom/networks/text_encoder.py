"""Report encoder: any Hugging Face BERT-family model, by hub id (from the local cache only) or by local path.

Reports longer than the model's window are split at sentence boundaries into chunks that each fit, every chunk is
encoded, and the report is represented by the mean of its chunks' pooled vectors and by the concatenation of all its
chunks' token embeddings: nothing is silently cut.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from custom.errors import OneLineError
from custom.transforms.report_text import split_sentences

__all__ = ["TextEncoderLoadError", "TextFeatures", "HFTextEncoder"]


class TextEncoderLoadError(OneLineError, OSError):
    """The text encoder (``text_encoder_name``) could not be loaded; one line naming it and the reason."""


@dataclass
class TextFeatures:
    """``tokens`` ``(B, L, H)`` (all chunks of a report, concatenated, zero-padded), ``mask`` ``(B, L)`` bool
    (True = real token), ``pooled`` ``(B, H)`` (mean over chunks of the CLS or mean-pooled chunk vector)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor


class HFTextEncoder(nn.Module):
    """Hugging Face encoder with partial freezing and chunked long reports.

    Args:
        name_or_path: hub id (e.g. ``zzxslp/RadBERT-RoBERTa-4m``; must already be in the local HF cache) or a folder.
        frozen_layers: freeze the embeddings and the first N transformer layers; ``-1`` freezes everything, in
            which case each report's outputs are computed once and cached (they never change):
            :meth:`precompute` fills the cache for the training reports before the first step.
        cache_size: reports a fully frozen encoder keeps (least recently used dropped first); None keeps every one.
            Tokens are kept in float16: ~1.5 KB per token at RadBERT's width, ~0.6 GB per 1,000 reports of 300
            words (per process).
        max_length: tokens per chunk including special tokens (capped by the model's own limit).
        pooling: ``"cls"`` or ``"mean"``.
        local_files_only: never reach the network (the project runs offline); set False to allow a hub download.
    """

    def __init__(
        self,
        name_or_path: str,
        frozen_layers: int = 0,
        max_length: int = 512,
        pooling: str = "cls",
        local_files_only: bool = True,
        cache_size: int | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_files_only)
            self.model = AutoModel.from_pretrained(name_or_path, local_files_only=local_files_only)
        except OSError as err:
            raise TextEncoderLoadError(
                f"text_encoder_name '{name_or_path}': expected a local model folder or a hub id already in the local "
                f"Hugging Face cache (this project never downloads at run time), found neither "
                f"({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__})"
            ) from None
        except Exception as err:  # noqa: BLE001 - a damaged safetensors file, a refused pickled .bin, a bad config
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            raise TextEncoderLoadError(
                f"text_encoder_name '{name_or_path}': expected a loadable tokenizer and model, found "
                f"{type(err).__name__}: {lines[0] if lines else 'no message'}"
            ) from None
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling: expected 'cls' or 'mean', found '{pooling}'")
        self.pooling = pooling
        model_limit = int(getattr(self.model.config, "max_position_embeddings", max_length))
        if getattr(self.model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            model_limit -= 2  # RoBERTa position ids start after the padding index
        self.max_length = min(max_length, model_limit)
        self.hidden_size = int(self.model.config.hidden_size)
        self.fully_frozen = frozen_layers < 0
        self._freeze(frozen_layers)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def _freeze(self, frozen_layers: int) -> None:
        if self.fully_frozen:
            self.model.requires_grad_(False)
            return
        if frozen_layers > 0:
            self.model.embeddings.requires_grad_(False)
            for layer in self.model.encoder.layer[:frozen_layers]:
                layer.requires_grad_(False)

    def train(self, mode: bool = True) -> HFTextEncoder:
        super().train(mode)
        if self.fully_frozen:
            self.model.eval()  # a frozen encoder stays deterministic (no dropout), so its outputs can be cached
        return self

    def chunk_report(self, report: str) -> list[list[int]]:
        """Token ids of each chunk (special tokens included), packing whole sentences while they fit."""
        budget = self.max_length - 2
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        chunks: list[list[int]] = []
        current: list[int] = []
        for sentence in split_sentences(report) or [report]:
            ids = self.tokenizer(sentence, add_special_tokens=False)["input_ids"]
            if current and len(current) + len(ids) > budget:
                chunks.append(current)
                current = []
            while len(ids) > budget:  # a single sentence longer than the window is split hard
                chunks.append(ids[:budget])
                ids = ids[budget:]
            current = current + ids
        if current or not chunks:
            chunks.append(current)
        return [[cls_id, *chunk, sep_id] for chunk in chunks]

    def _encode(self, reports: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per report: (token embeddings ``(L_r, H)``, pooled ``(H,)``)."""
        chunks, owner = [], []
        for index, report in enumerate(reports):
            for chunk in self.chunk_report(report):
                chunks.append(chunk)
                owner.append(index)
        device = next(self.model.parameters()).device
        length = max(len(c) for c in chunks)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(chunks), length), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunks), length), dtype=torch.long)
        for row, chunk in enumerate(chunks):
            input_ids[row, : len(chunk)] = torch.tensor(chunk)
            attention[row, : len(chunk)] = 1
        hidden = self.model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).last_hidden_state
        attention = attention.to(device).unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            chunk_vectors = hidden[:, 0]
        else:
            chunk_vectors = (hidden * attention).sum(1) / attention.sum(1).clamp_min(1.0)
        owner_t = torch.tensor(owner, device=device)
        outputs = []
        for index in range(len(reports)):
            rows = (owner_t == index).nonzero().flatten()
            tokens = torch.cat([hidden[r, : len(chunks[r])] for r in rows.tolist()])
            outputs.append((tokens, chunk_vectors[rows].mean(0)))
        return outputs

    def forward(self, reports: list[str]) -> TextFeatures:
        if self.fully_frozen:
            per_report = self._cached_encode(reports)
        else:
            per_report = self._encode(reports)
        length = max(t.shape[0] for t, _ in per_report)
        device = per_report[0][0].device
        dtype = per_report[0][1].dtype  # the cache keeps tokens in float16 and pooled vectors as computed
        tokens = torch.zeros(len(reports), length, self.hidden_size, device=device, dtype=dtype)
        mask = torch.zeros(len(reports), length, dtype=torch.bool, device=device)
        for row, (report_tokens, _) in enumerate(per_report):
            tokens[row, : report_tokens.shape[0]] = report_tokens
            mask[row, : report_tokens.shape[0]] = True
        return TextFeatures(tokens=tokens, mask=mask, pooled=torch.stack([p for _, p in per_report]))

    @torch.no_grad()
    def eval_pooled(self, reports: list[str]) -> torch.Tensor:
        """``B`` reports -> float32 ``(B, H)`` pooled vectors as the encoder gives them in eval mode (no dropout),
        without gradients or autocast, whatever mode it is in; every submodule's previous mode is restored.

        What the ``"text"`` report affinity compares, at calibration and at every step alike. A fully frozen encoder
        reads cached reports from its cache and encodes the others without storing them (calibration's negated
        copies would otherwise fill it); a trainable one runs one extra no-grad forward pass over ``reports``."""
        modes = {module: module.training for module in self.model.modules()}
        self.model.eval()
        try:
            with torch.autocast(next(self.model.parameters()).device.type, enabled=False):
                if not self.fully_frozen:
                    return torch.stack([pooled for _, pooled in self._encode(reports)]).float()
                missing = list(dict.fromkeys(r for r in reports if r not in self._cache))
                encoded = dict(zip(missing, (pooled for _, pooled in self._encode(missing)))) if missing else {}
                return torch.stack([self._cache[r][1] if r in self._cache else encoded[r] for r in reports]).float()
        finally:
            for module, mode in modes.items():
                module.training = mode

    @torch.no_grad()
    def precompute(self, reports: Sequence[str], batch_size: int = 32, progress: bool = True) -> None:
        """Encode every report of ``reports`` not cached yet, in batches, with a progress bar: a fully frozen encoder
        then never runs during training (the T3D bundle calls it on the training reports in ``initialize``)."""
        if not self.fully_frozen:
            raise RuntimeError(
                "precompute: only a fully frozen text encoder (frozen_layers -1) has fixed outputs to cache"
            )
        missing = list(dict.fromkeys(r for r in reports if r not in self._cache))
        from tqdm import tqdm

        for start in tqdm(
            range(0, len(missing), batch_size), desc="encoding reports", unit="batch", disable=not progress
        ):
            self._store(missing[start : start + batch_size])

    def _store(self, reports: list[str]) -> None:
        for report, (tokens, pooled) in zip(reports, self._encode(reports)):
            self._cache[report] = (tokens.half(), pooled)
            if self.cache_size is not None and len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    @torch.no_grad()
    def _cached_encode(self, reports: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        missing = list(dict.fromkeys(r for r in reports if r not in self._cache))
        if missing:
            self._store(missing)
        outputs = []
        for report in reports:
            self._cache.move_to_end(report)
            tokens, pooled = self._cache[report]
            outputs.append((tokens.to(pooled.dtype), pooled))
        return outputs
