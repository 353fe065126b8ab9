"""Relational attention aggregator: two MHA + MoE blocks whose attention product defines a graph (Eqs. 7–9)."""

from __future__ import annotations

import torch
from torch import nn

from .graphormer import GraphormerLayer

__all__ = ["RelationalAttentionBlock", "RelationalAttentionAggregator", "sparsify_attention"]


def sparsify_attention(attention_product: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Turn the dense attention product into a sparse, symmetric graph.

    ``A`` is dense and row-stochastic, so taken as is every pair of spots would be adjacent and
    every shortest path would have length 1. Each real spot keeps an edge to its ``k`` strongest
    partners (largest ``A_ij``, ``j ≠ i``, ``j`` real); the graph is then symmetrised
    (``i ~ j`` if either chose the other). Padded spots have no edges.

    Parameters
    ----------
    attention_product : torch.Tensor
        ``(B, N, N)`` attention product.
    mask : torch.Tensor
        ``(B, N)`` bool, True for real spots.
    k : int
        Partners kept per spot.

    Returns
    -------
    torch.Tensor
        ``(B, N, N)`` bool adjacency without self-loops.
    """
    b, n, _ = attention_product.shape
    eye = torch.eye(n, dtype=torch.bool, device=mask.device)
    valid = mask[:, :, None] & mask[:, None, :] & ~eye
    k_eff = min(k, n - 1)
    adj = torch.zeros((b, n, n), dtype=torch.bool, device=mask.device)
    if k_eff <= 0:
        return adj
    scores = attention_product.float().masked_fill(~valid, float("-inf"))
    top = scores.topk(k_eff, dim=-1).indices
    adj.scatter_(-1, top, True)
    adj &= valid
    return adj | adj.transpose(1, 2)


class RelationalAttentionBlock(GraphormerLayer):
    """Pre-norm ``x + MHA(LN x)`` then ``x + MoE(LN x)``, returning the attention weights too.

    The same block as :class:`~py4dstem_gnn.model.graphormer.GraphormerLayer`, without a
    structural bias (the graph does not exist yet: it is built from these weights).
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, weights = self.attn(self.norm1(x), mask, need_weights=True)
        x = x + self.drop(h)
        m, aux = self.moe(self.norm2(x), mask)
        return x + self.drop(m), weights, aux


class RelationalAttentionAggregator(nn.Module):
    """Two relational attention blocks; ``A = Attn² · Attn¹`` and its sparsified graph.

    Parameters
    ----------
    dim, n_heads, ffn_dim, n_experts, top_k : int
        Block sizes (see :class:`~py4dstem_gnn.model.ModelConfig`).
    shared_expert : bool
        Shared expert in the MoE blocks.
    dropout : float
        Residual dropout.
    attention_dropout : float
        Dropout on the attention weights.
    graph_top_k : int
        Partners kept per spot in the graph (:func:`sparsify_attention`).
    """

    def __init__(self, dim: int, n_heads: int, ffn_dim: int, n_experts: int, top_k: int, shared_expert: bool, dropout: float, graph_top_k: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            RelationalAttentionBlock(dim, n_heads, ffn_dim, n_experts, top_k, shared_expert, dropout, attention_dropout) for _ in range(2)
        )
        self.graph_top_k = graph_top_k

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns node features, the attention product ``(B, N, N)``, the adjacency and the mean aux loss."""
        x, attn1, aux1 = self.blocks[0](x, mask)
        x, attn2, aux2 = self.blocks[1](x, mask)
        product = torch.bmm(attn2, attn1)
        with torch.no_grad():
            adjacency = sparsify_attention(product, mask, self.graph_top_k)
        return x, product, adjacency, (aux1 + aux2) / 2
