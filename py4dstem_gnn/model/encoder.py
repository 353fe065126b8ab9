"""Pointlist encoder: per-spot 1×1 convolutions with normalisation, ReLU and residuals."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PointlistEncoder"]


class PointlistEncoder(nn.Module):
    """Embed each spot independently (a stack of 1×1 Conv1d layers).

    A 1×1 convolution over the spot axis is the same map as a per-spot linear layer; it is
    written here as :class:`torch.nn.Linear` on ``(B, N, C)`` tensors, which avoids transposes.
    Layer normalisation (per spot, so padding cannot leak into real spots) replaces the batch
    normalisation of a plain PointNet for the same reason.

    Parameters
    ----------
    in_features : int
        Input channels per spot.
    feature_dim : int
        Encoder width.
    out_dim : int
        Output width (the model's hidden dimension).
    n_layers : int
        Number of 1×1 layers (the first lifts ``in_features`` to ``feature_dim``, the others are
        residual).
    dropout : float
        Dropout after each residual layer.
    """

    def __init__(self, in_features: int, feature_dim: int, out_dim: int, n_layers: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.lift = nn.Sequential(nn.Linear(in_features, feature_dim), nn.LayerNorm(feature_dim), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.LayerNorm(feature_dim), nn.ReLU(), nn.Dropout(dropout))
            for _ in range(n_layers - 1)
        )
        self.out = nn.Linear(feature_dim, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, N, in_features)`` → ``(B, N, out_dim)``, zero at padded spots."""
        h = self.lift(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h) * mask.unsqueeze(-1).to(h.dtype)
