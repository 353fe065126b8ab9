"""The lattice token: what a crystallographer reads off a pattern, handed to the Graphormer.

A zone-axis pattern is a 2D reciprocal net with intensities on it. Its reduced cell, net type,
intensity symmetry, centring and higher-Laue-zone spacing are measured per pattern by
:mod:`py4dstem_gnn.geometry` (vectorised numpy, no gradient needed: they are inputs); inside the
network the torch port :mod:`~py4dstem_gnn.model.lattice_torch` measures the same numbers on the
batch's device (:func:`pattern_descriptors`; the numpy code stays the reference). This module
turns those descriptors into a global embedding that joins the virtual graph token at the input of
the Graphormer and the pooled representation before the heads.

Both entry points are zero-initialised linear maps, so a model that gains a lattice token computes
exactly what it computed before until training moves them: weights trained without the token are a
valid starting point (``py4dstem-gnn train --init-from ... --model '{"lattice_token": true}'``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..geometry.descriptors import descriptor_names, lattice_descriptors

from .lattice_torch import lattice_descriptors_torch

__all__ = ["LatticeEmbedding", "n_lattice_descriptors", "pattern_descriptors", "pattern_descriptors_numpy"]

#: Standardised descriptors are clipped to this many standard deviations (heavy-tailed columns
#: such as the projected real-space cell area would otherwise dominate a batch).
CLIP = 5.0


def n_lattice_descriptors() -> int:
    """Number of lattice descriptors per pattern (``len(descriptor_names())``)."""
    return len(descriptor_names())


def pattern_descriptors(spots: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Lattice descriptors of a padded batch of diffracted spots, on the batch's device.

    Parameters
    ----------
    spots : torch.Tensor
        ``(B, N, 3)`` ``qx, qy`` (1/Å), intensity; the model's input (direct beam removed).
    mask : torch.Tensor
        ``(B, N)`` bool, True for real spots.

    Returns
    -------
    torch.Tensor
        ``(B, n_lattice_descriptors())`` float32, computed on ``spots.device`` by the torch port
        (:func:`~py4dstem_gnn.model.lattice_torch.lattice_descriptors_torch`).
    """
    return lattice_descriptors_torch(spots, mask)


def pattern_descriptors_numpy(spots: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`pattern_descriptors` by the numpy reference (a round trip through the CPU).

    Parameters
    ----------
    spots : torch.Tensor
        ``(B, N, 3)`` as :func:`pattern_descriptors`.
    mask : torch.Tensor
        ``(B, N)`` bool.

    Returns
    -------
    torch.Tensor
        ``(B, n_lattice_descriptors())`` float32 on ``spots.device``.
    """
    s = spots.detach().float().cpu().numpy()
    m = mask.detach().cpu().numpy().astype(bool)
    lists: Sequence[np.ndarray] = [s[i, m[i]] for i in range(len(s))]
    x = lattice_descriptors(lists)
    return torch.from_numpy(x).to(spots.device)


class LatticeEmbedding(nn.Module):
    """Embed standardised lattice descriptors into the model width.

    Parameters
    ----------
    n_in : int
        Descriptors per pattern.
    hidden_dim : int
        Model width.
    mean, std : sequence of float
        Per-descriptor normalisation (empty: 0 and 1).
    """

    def __init__(self, n_in: int, hidden_dim: int, mean: Sequence[float] = (), std: Sequence[float] = ()) -> None:
        super().__init__()
        mean = list(mean) or [0.0] * n_in
        std = list(std) or [1.0] * n_in
        if len(mean) != n_in or len(std) != n_in:
            raise ValueError(f"lattice normalisation needs {n_in} values, got {len(mean)} and {len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.mlp = nn.Sequential(nn.Linear(n_in, 2 * hidden_dim), nn.GELU(), nn.Linear(2 * hidden_dim, hidden_dim), nn.GELU())
        self.to_token = nn.Linear(hidden_dim, hidden_dim)
        self.to_head = nn.Linear(hidden_dim, hidden_dim)
        for layer in (self.to_token, self.to_head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, descriptors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(token_term, head_term)``, each ``(B, hidden_dim)``."""
        z = ((descriptors.float() - self.mean) / self.std).clamp(-CLIP, CLIP)
        e = self.mlp(z)
        return self.to_token(e), self.to_head(e)
