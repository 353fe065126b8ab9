"""Toy spot patterns of 2-D lattices, for tests and quick checks of the training loop.

Four plane lattices stand in for four crystal systems: oblique (monoclinic, P2/m = 10),
rectangular (orthorhombic, Pmmm = 47), square (tetragonal, P4/mmm = 123) and hexagonal
(hexagonal, P6/mmm = 191). The task is easy but not trivial: the lattice must be read from
spot geometry, under random rotation, scale and missing spots.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TOY_CLASSES", "toy_pattern", "ToyLatticeSource", "tiny_model"]

#: (crystal-system code, space-group number) of each toy class.
TOY_CLASSES: tuple[tuple[int, int], ...] = ((1, 10), (2, 47), (3, 123), (5, 191))


def toy_pattern(kind: int, rng: np.random.Generator, max_order: int = 3) -> np.ndarray:
    """One pointlist (direct beam first) of toy lattice ``kind`` (index into :data:`TOY_CLASSES`)."""
    a = rng.uniform(0.3, 0.6)
    if kind == 0:
        b, gamma = a * rng.uniform(1.2, 1.6), np.deg2rad(rng.uniform(70, 80))
    elif kind == 1:
        b, gamma = a * rng.uniform(1.3, 1.7), np.pi / 2
    elif kind == 2:
        b, gamma = a, np.pi / 2
    else:
        b, gamma = a, 2 * np.pi / 3
    v1 = np.array([a, 0.0])
    v2 = np.array([b * np.cos(gamma), b * np.sin(gamma)])
    h, k = np.meshgrid(np.arange(-max_order, max_order + 1), np.arange(-max_order, max_order + 1))
    q = h.reshape(-1, 1) * v1 + k.reshape(-1, 1) * v2
    phi = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    q = q @ rot.T
    r = np.hypot(q[:, 0], q[:, 1])
    inten = np.exp(-r / 0.8) * rng.uniform(0.5, 1.5, len(r))
    keep = (r == 0) | (rng.random(len(r)) > 0.15)
    pl = np.c_[q, inten][keep]
    order = np.argsort(np.hypot(pl[:, 0], pl[:, 1]), kind="stable")
    return pl[order].astype(np.float32)


class ToyLatticeSource:
    """A pattern source (see :class:`py4dstem_gnn.training.train.PatternSource`) of toy lattices."""

    def sample(self, rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """``n`` random toy patterns with their crystal-system and space-group labels."""
        kinds = rng.integers(0, len(TOY_CLASSES), n)
        pls = [toy_pattern(int(k), rng) for k in kinds]
        cs = np.array([TOY_CLASSES[k][0] for k in kinds])
        sg = np.array([TOY_CLASSES[k][1] for k in kinds])
        return pls, cs, sg


def tiny_model(seed: int = 0):
    """A seeded, untrained, very small :class:`~py4dstem_gnn.model.PEAGGMoE` in eval mode (for tests)."""
    import torch

    from .model import ModelConfig, PEAGGMoE

    torch.manual_seed(seed)
    cfg = ModelConfig(
        feature_dim=16, encoder_layers=1, hidden_dim=16, n_layers=1, n_heads=2, ffn_dim=16,
        n_experts=2, top_k=1, max_spots=24,
    )
    return PEAGGMoE(cfg).eval()
