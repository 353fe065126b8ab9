"""Multi-head self-attention with key padding, an additive per-head bias and optional weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MultiHeadAttention", "key_padding_bias"]


def key_padding_bias(key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask ``(B, 1, 1, N)``: 0 for real keys, a large negative number for padding.

    A finite value (rather than −inf) keeps rows without any real key finite; real keys then
    receive exactly the same weights as without padding, because ``exp`` of the fill underflows
    to 0.
    """
    fill = torch.finfo(dtype).min / 4
    bias = torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device)
    return bias.masked_fill(~key_mask, fill)[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Scaled dot-product self-attention over a padded set of tokens.

    Parameters
    ----------
    dim : int
        Token width.
    n_heads : int
        Number of heads; ``dim`` must be divisible by it.
    dropout : float
        Dropout on the attention weights (training only).
    """

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        #: Use ``F.scaled_dot_product_attention`` where the weights are not asked for (an inference
        #: choice, :func:`py4dstem_gnn.model.inference.prepare_for_inference`); same result.
        self.sdpa = False

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None,
        bias: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, N, dim)`` tokens.
        key_mask : torch.Tensor or None
            ``(B, N)`` bool, True for real tokens (padded keys are ignored). None when ``bias``
            already holds :func:`key_padding_bias` (computed once for a stack of layers).
        bias : torch.Tensor, optional
            ``(B, H, N, N)`` additive attention bias (structural encodings).
        need_weights : bool
            Also return the head-averaged attention probabilities ``(B, N, N)`` (before dropout).

        Returns
        -------
        out : torch.Tensor
            ``(B, N, dim)``.
        weights : torch.Tensor or None
            ``(B, N, N)`` row-stochastic over real keys, when ``need_weights``.
        """
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if key_mask is None:
            if bias is None:
                raise ValueError("pass a key mask or a bias that already holds the padding mask")
            full_bias = bias.to(q.dtype)
        else:
            mask_bias = key_padding_bias(key_mask, q.dtype)
            full_bias = mask_bias if bias is None else bias.to(q.dtype) + mask_bias
        p_drop = self.dropout if self.training else 0.0
        if self.sdpa and not need_weights:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=full_bias.expand(b, self.n_heads, n, n), dropout_p=p_drop)
            return self.proj(out.transpose(1, 2).reshape(b, n, d)), None
        # Explicit softmax attention: with head_dim 8 and ~50 tokens it ran faster on a CPU than
        # scaled_dot_product_attention with a float mask, and it yields the weights when asked.
        scores = torch.baddbmm(
            full_bias.expand(b, self.n_heads, n, n).reshape(b * self.n_heads, n, n),
            q.reshape(b * self.n_heads, n, self.head_dim),
            k.reshape(b * self.n_heads, n, self.head_dim).transpose(1, 2),
            alpha=self.head_dim**-0.5,
        )
        probs = torch.softmax(scores, dim=-1)
        out = torch.bmm(F.dropout(probs, p_drop, self.training), v.reshape(b * self.n_heads, n, self.head_dim))
        out = out.view(b, self.n_heads, n, self.head_dim)
        weights = probs.view(b, self.n_heads, n, n).float().mean(dim=1) if need_weights else None
        out = out.transpose(1, 2).reshape(b, n, d)
        return self.proj(out), weights
