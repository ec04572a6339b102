"""The T3D model: image backbone + report encoder + projection heads + interactor + restoration decoder."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from custom.networks.image_head import ImageEmbeddingHead
from custom.networks.interactor import Interactor
from custom.networks.projection import ProjectionHead
from custom.networks.temperature import LOGIT_SCALE_MAX
from custom.networks.text_encoder import HFTextEncoder
from custom.networks.text_whitening import TextWhitening

__all__ = ["LOGIT_SCALE_MAX", "T3DOutput", "T3DModel", "T3DImageEmbedder"]

#: upper bound of the learnable log inverse temperature (CLIP's: the temperature never goes below 0.01)


@dataclass
class T3DOutput:
    """``image_embeddings`` ``(N, E)`` of the clean crops, ``text_embeddings`` ``(B, E)``, ``restored`` ``(N, 1, *S)``
    from the corrupted crops, ``logit_scale`` the multiplier of TCL's cosine similarities (``exp`` of the model's
    ``logit_scale`` parameter: 1 / temperature, as open_clip's model output). Absent parts are None.

    What the ``"text"`` report affinity compares is not here: the train-mode pooled vectors carry dropout, so it
    takes :meth:`T3DModel.report_vectors` instead."""

    image_embeddings: torch.Tensor | None
    text_embeddings: torch.Tensor | None
    restored: torch.Tensor | None
    logit_scale: torch.Tensor


class T3DModel(nn.Module):
    """Vision-language pre-training model of T3D.

    Args:
        image_backbone: ``SwinUNETRBackbone`` or ``BasicUNetBackbone`` (``encode``/``decode``, ``embedding_channels``).
        text_encoder: ``HFTextEncoder``.
        embed_dim: width of the shared embedding space.
        use_interactor: False is the paper's ablation (the decoder sees visual features only).
        interactor_depth, interactor_heads: cross-attention blocks and heads.
        temperature: initial TCL temperature (learnable, stored as ``logit_scale = log(1 / temperature)``), at least
            0.01: the trainer keeps it there (:meth:`clamp_logit_scale_`).
        text_whitening: 0 (off) or the number of principal components a frozen encoder's pooled report vectors are
            whitened to before the text projection; fitted by :meth:`prepare_text` on the training reports.
        standardize_embeddings: both heads standardise their input with running statistics
            (:class:`~custom.networks.running_standardizer.RunningStandardizer`), which is what lets TCL leave its
            uniform start when neither side's features are spread by themselves (the shipped defaults).
    """

    def __init__(
        self,
        image_backbone: nn.Module,
        text_encoder: HFTextEncoder,
        embed_dim: int = 512,
        use_interactor: bool = True,
        interactor_depth: int = 2,
        interactor_heads: int = 8,
        temperature: float = 0.07,
        text_whitening: int = 0,
        standardize_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.image_backbone = image_backbone
        self.text_encoder = text_encoder
        if text_whitening and not text_encoder.fully_frozen:
            raise ValueError(
                f"text_whitening: {text_whitening} components need a fully frozen text encoder (frozen_layers -1), "
                "found a trainable one (the whitening is fitted once on its outputs)"
            )
        self.image_head = ImageEmbeddingHead(image_backbone.embedding_channels, embed_dim, standardize_embeddings)
        self.text_whitening = TextWhitening(text_encoder.hidden_size, text_whitening) if text_whitening else None
        self.text_projection = ProjectionHead(
            text_whitening or text_encoder.hidden_size, embed_dim, standardize=standardize_embeddings
        )
        self.interactor = (
            Interactor(image_backbone.bottleneck_channels, text_encoder.hidden_size, interactor_depth, interactor_heads)
            if use_interactor
            else None
        )
        if not temperature >= 0.01:  # exp(-LOGIT_SCALE_MAX): a lower start would be clamped away at the first step
            raise ValueError(f"temperature: expected at least 0.01 (CLIP's bound on TCL's), found {temperature}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Keep the temperature at or above 0.01 (``logit_scale`` at most :data:`LOGIT_SCALE_MAX`, CLIP's bound) by
        clamping the parameter in place. The one place the bound is applied: the trainer calls it after every
        optimiser step, as open_clip does, so every forward pass, checkpoint and evaluation sees a bounded value and
        nothing downstream clamps again. In place rather than in the forward: a forward clamp zeroes the gradient
        above the bound, and a parameter pushed past it (by Adam's momentum) could not come back."""
        self.logit_scale.clamp_(max=LOGIT_SCALE_MAX)

    def embed_images(self, crops: torch.Tensor) -> torch.Tensor:
        """``(N, 1, D, H, W)`` crops -> ``(N, E)`` L2-normalised embeddings (attention-pooled bottleneck)."""
        return self.image_head(self.image_backbone.encode(crops).embedding_tokens)

    def embed_reports(self, reports: list[str]) -> torch.Tensor:
        """``B`` report strings -> ``(B, E)`` L2-normalised embeddings."""
        return self._project_text(self.text_encoder(reports).pooled)

    @torch.no_grad()
    def report_vectors(self, reports: list[str]) -> torch.Tensor:
        """``B`` report strings -> float32 ``(B, H)`` the text encoder's pooled vectors in eval mode, without gradients
        or autocast, whitened when whitening is on: what the ``"text"`` report affinity compares at every step and
        calibrates its threshold on, computed the same way both times and whatever mode the model is in
        (:meth:`HFTextEncoder.eval_pooled`; the train-mode forward's dropout put identical reports at cosine ~0.92).

        Cost per step: none for a fully frozen encoder (its cache); one extra no-grad forward pass of the text
        encoder over the batch's reports for a trainable one, and only when ``report_affinity`` is ``"text"``."""
        pooled = self.text_encoder.eval_pooled(reports)
        with torch.autocast(pooled.device.type, enabled=False):
            return self._whiten(pooled)

    def _whiten(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled if self.text_whitening is None else self.text_whitening(pooled)

    def _project_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, H)`` pooled report vectors -> ``(B, E)``, through the whitening when there is one."""
        return self.text_projection(self._whiten(pooled))

    @torch.no_grad()
    def prepare_text(self, reports: Sequence[str], batch_size: int = 32) -> None:
        """Before training, on the training split's ``reports``: a fully frozen text encoder encodes each of them
        once (:meth:`HFTextEncoder.precompute`; steps then only look them up), and the text whitening, when on, is
        fitted on their pooled vectors. Does nothing for a trainable encoder."""
        if not self.text_encoder.fully_frozen:
            return
        self.text_encoder.precompute(reports, batch_size)
        if self.text_whitening is not None:
            pooled = [
                self.text_encoder(list(reports[i : i + batch_size])).pooled for i in range(0, len(reports), batch_size)
            ]
            self.text_whitening.fit(torch.cat(pooled) if pooled else torch.empty(0, self.text_encoder.hidden_size))

    def restore(self, corrupted: torch.Tensor, text=None, crop_to_report: torch.Tensor | None = None) -> torch.Tensor:
        """Decode corrupted crops ``(N, 1, *S)`` to ``(N, 1, *S)``; with the interactor on, crop ``n`` attends to the
        tokens of report ``crop_to_report[n]`` of ``text`` (a ``TextFeatures``)."""
        return self._restore(self.image_backbone.encode(corrupted), text, crop_to_report)

    def _restore(self, features, text, crop_to_report: torch.Tensor | None) -> torch.Tensor:
        if self.interactor is not None and text is not None:
            tokens = self.interactor(features.tokens, text.tokens[crop_to_report], text.mask[crop_to_report])
            features = features.with_tokens(tokens)
        return self.image_backbone.decode(features)

    def forward(
        self,
        crops: torch.Tensor | None,
        corrupted: torch.Tensor | None,
        reports: list[str],
        crop_to_report: torch.Tensor,
    ) -> T3DOutput:
        """One pre-training step's forward pass. ``crops``/``corrupted`` ``(N, 1, *S)``, either None to skip that
        task (its loss weight is 0); ``crop_to_report`` ``(N,)`` index into ``reports``.

        Clean and corrupted crops go through the encoder as one batch: one pass instead of two, and every parameter
        is used once per step, which ``DistributedDataParallel`` requires when it looks for unused parameters."""
        text = self.text_encoder(reports)
        image_embeddings = text_embeddings = restored = None
        batch = [t for t in (crops, corrupted) if t is not None]
        features = self.image_backbone.encode(torch.cat(batch) if len(batch) > 1 else batch[0])
        if crops is not None and corrupted is not None:
            clean, corrupt = features.split(crops.shape[0])
        else:
            clean = corrupt = features
        if crops is not None:
            image_embeddings = self.image_head(clean.embedding_tokens)
            text_embeddings = self._project_text(text.pooled)
        if corrupted is not None:
            restored = self._restore(corrupt, text, crop_to_report)
        # exp inside the forward, not the bare parameter: DDP must see the parameter used inside the graph
        return T3DOutput(image_embeddings, text_embeddings, restored, self.logit_scale.exp())


class T3DImageEmbedder(nn.Module):
    """Image-only view of a trained T3D model for inference: ``(B, 1, D, H, W)`` -> ``(B, E)`` embeddings.

    Its state-dict keys are the T3D model's ``image_backbone.*`` / ``image_head.*`` keys, so ``models/model.pt``
    loads into it with ``strict=False`` (the text side is simply not there).
    """

    def __init__(self, image_backbone: nn.Module, embed_dim: int = 512, standardize_embeddings: bool = True) -> None:
        super().__init__()
        self.image_backbone = image_backbone
        self.image_head = ImageEmbeddingHead(image_backbone.embedding_channels, embed_dim, standardize_embeddings)

    def embed_images(self, crops: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.image_backbone.encode(crops).embedding_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_images(x)
