"""Graphormer encoder layer: structurally biased attention and an MoE feed-forward (Eqs. 14–15)."""

from __future__ import annotations

import torch
from torch import nn

from .attention import MultiHeadAttention
from .moe import MixtureOfExperts

__all__ = ["GraphormerLayer"]


class GraphormerLayer(nn.Module):
    """Pre-norm ``h = x + MHA(LN x; bias)``, ``out = h + MoE(LN h)``.

    Parameters
    ----------
    dim, n_heads, ffn_dim, n_experts, top_k : int
        Layer sizes.
    shared_expert : bool
        Shared expert in the MoE feed-forward.
    dropout : float
        Residual dropout.
    attention_dropout : float
        Dropout on the attention weights.
    """

    def __init__(self, dim: int, n_heads: int, ffn_dim: int, n_experts: int, top_k: int, shared_expert: bool, dropout: float, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, n_heads, attention_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.moe = MixtureOfExperts(dim, ffn_dim, n_experts, top_k, shared_expert)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the layer.

        ``x`` ``(B, T, dim)``; ``key_mask`` ``(B, T)`` bool selects the real tokens of the MoE;
        ``bias`` ``(B, H, T, T)`` is the structural bias *including* the key-padding mask
        (:func:`~py4dstem_gnn.model.attention.key_padding_bias`), computed once per stack.
        Returns ``(x, aux)``.
        """
        h, _ = self.attn(self.norm1(x), None, bias)
        x = x + self.drop(h)
        m, aux = self.moe(self.norm2(x), key_mask)
        return x + self.drop(m), aux
