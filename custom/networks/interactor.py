"""The interactor: report features injected into the visual bottleneck by stacked cross-attention."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CrossAttentionBlock", "Interactor"]


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention (visual queries, text keys/values) and MLP, both residual.

    ``visual`` ``(B, N, C)``, ``text`` ``(B, L, C)``, ``text_mask`` ``(B, L)`` bool (True = real token) ->
    ``(B, N, C)``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_visual = nn.LayerNorm(dim)
        self.norm_text = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        text = self.norm_text(text)
        attended, _ = self.attention(
            self.norm_visual(visual), text, text, key_padding_mask=~text_mask, need_weights=False
        )
        visual = visual + attended
        return visual + self.mlp(self.norm_mlp(visual))


class Interactor(nn.Module):
    """Report token embeddings ``(B, L, text_dim)`` are projected to ``visual_dim`` and attended by the visual
    bottleneck tokens ``(B, N, visual_dim)`` through ``depth`` blocks; returns updated visual tokens
    ``(B, N, visual_dim)``."""

    def __init__(
        self, visual_dim: int, text_dim: int, depth: int = 2, num_heads: int = 8, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if visual_dim % num_heads:
            raise ValueError(
                f"interactor_heads: expected a divisor of the bottleneck width {visual_dim}, found {num_heads}"
            )
        self.text_projection = nn.Linear(text_dim, visual_dim)
        self.blocks = nn.ModuleList(CrossAttentionBlock(visual_dim, num_heads, dropout=dropout) for _ in range(depth))

    def forward(self, visual: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        text = self.text_projection(text_tokens)
        for block in self.blocks:
            visual = block(visual, text, text_mask)
        return visual
