"""The torch port of the lattice descriptors agrees with the numpy geometry it replaces in the network."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from py4dstem_gnn.geometry import descriptor_names, gauss_reduce, lattice_descriptors
from py4dstem_gnn.model import ModelConfig, PEAGGMoE, pattern_descriptors
from py4dstem_gnn.model.lattice import pattern_descriptors_numpy
from py4dstem_gnn.model.lattice_torch import gauss_reduce_torch, lattice_descriptors_torch

ROOT = Path(__file__).resolve().parents[1]
#: Agreement stated for the port: every column within 1e-5 relative (float32 rounding of the output);
#: measured on all 7,389 patterns of four stored Bloch-wave sets: largest difference 6e-8.
RTOL = 1e-5


def _pad(lists: list[np.ndarray], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(1, width or max((len(p) for p in lists), default=1))
    spots = np.zeros((len(lists), n, 3), np.float32)
    mask = np.zeros((len(lists), n), bool)
    for i, p in enumerate(lists):
        spots[i, : len(p)] = p
        mask[i, : len(p)] = True
    return torch.from_numpy(spots), torch.from_numpy(mask)


def _net(a, b, n: int = 3, beam: bool = False, extra=(), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, float), np.asarray(b, float)
    pts = [(h * a + k * b) for h in range(-n, n + 1) for k in range(-n, n + 1) if (h, k) != (0, 0)]
    q = np.array(pts) + rng.normal(0, 0.002, (len(pts), 2))
    inten = rng.uniform(0.05, 1.0, len(q))
    out = np.column_stack([q, inten])
    if beam:
        out = np.vstack([[0.001, -0.002, 50.0], out])
    if len(extra):
        out = np.vstack([out, np.asarray(extra, float)])
    return rng.permutation(out).astype(np.float32)


def _fixtures() -> list[np.ndarray]:
    c, s = math.cos(0.4), math.sin(0.4)
    row = np.array([[t * 0.25 * c, t * 0.25 * s, 1.0 / abs(t)] for t in (-3, -2, -1, 1, 2, 3)], np.float32)
    return [
        np.zeros((0, 3), np.float32),  # empty
        np.array([[0.0, 0.0, 9.0]], np.float32),  # direct beam only
        np.array([[0.3, 0.1, 1.0]], np.float32),  # one spot
        row,  # a systematic row
        _net([0.3, 0.0], [0.0, 0.3], beam=True),  # square, with the beam
        _net([0.31, 0.0], [0.155, 0.268], n=4, seed=1),  # hexagonal
        _net([0.2, 0.05], [-0.1, 0.35], seed=2, extra=[[0.11, 0.07, 0.3], [-0.41, 0.23, 0.2], [0.52, -0.33, 0.1]]),
        _net([0.25, 0.0], [0.0, 0.4], n=2, seed=3),  # rectangular, few spots
    ]


def _assert_agree(lists: list[np.ndarray], got: np.ndarray) -> None:
    ref = lattice_descriptors(lists)
    assert got.shape == ref.shape == (len(lists), len(descriptor_names()))
    assert np.isfinite(got).all()
    off = np.abs(got - ref) > RTOL * (1 + np.abs(ref))
    if off.any():
        names = descriptor_names()
        worst = [(names[j], int(off[:, j].sum())) for j in np.flatnonzero(off.any(0))]
        raise AssertionError(f"{off.any(1).sum()} of {len(lists)} patterns disagree: {worst}")


def test_synthetic_fixtures_match_numpy():
    lists = _fixtures()
    spots, mask = _pad(lists)
    _assert_agree(lists, lattice_descriptors_torch(spots, mask).numpy())


def test_padding_anywhere_and_spot_order_do_not_matter():
    lists = _fixtures()[3:]
    spots, mask = _pad(lists, width=80)
    ref = lattice_descriptors_torch(spots, mask)
    perm = torch.randperm(80, generator=torch.Generator().manual_seed(0))  # padding slots scattered
    got = lattice_descriptors_torch(spots[:, perm], mask[:, perm])
    torch.testing.assert_close(got, ref, rtol=RTOL, atol=1e-6)
    one = lattice_descriptors_torch(spots[2:3], mask[2:3])  # a pattern does not see its batch
    torch.testing.assert_close(one[0], ref[2], rtol=RTOL, atol=1e-6)
    chunked = lattice_descriptors_torch(spots, mask, chunk_size=2)
    torch.testing.assert_close(chunked, ref, rtol=RTOL, atol=1e-6)


def test_empty_batch_and_no_spots():
    assert lattice_descriptors_torch(torch.zeros(0, 4, 3), torch.zeros(0, 4, dtype=torch.bool)).shape == (0, 60)
    x = lattice_descriptors_torch(torch.zeros(2, 0, 3), torch.zeros(2, 0, dtype=torch.bool))
    _assert_agree([np.zeros((0, 3), np.float32)] * 2, x.numpy())  # residuals 1, everything else 0


def test_gauss_reduction_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 2)), rng.normal(size=(200, 2))
    b[:5] = 3 * a[:5]  # collinear: left alone
    ra, rb = gauss_reduce(a, b)
    ta, tb = gauss_reduce_torch(torch.from_numpy(a), torch.from_numpy(b))
    np.testing.assert_allclose(ta.numpy(), ra, atol=1e-12)
    np.testing.assert_allclose(tb.numpy(), rb, atol=1e-12)


@pytest.mark.skipif(not (ROOT / "data/bloch_val_za.h5").exists(), reason="stored Bloch-wave set not present")
def test_bloch_wave_patterns_match_numpy():
    from py4dstem_gnn.batching import RaggedSpots
    from py4dstem_gnn.data.sources import load_validation_sets
    from py4dstem_gnn.features import split_direct_beam

    pls, _, _ = load_validation_sets([f"za={ROOT / 'data/bloch_val_za.h5'}"])["za"]
    idx = np.linspace(0, len(pls) - 1, 300).astype(int)
    diff = [split_direct_beam(pls[i])[0] for i in idx]
    ragged = RaggedSpots.from_lists(diff).cap(64)  # what the network reads
    spots, mask = ragged.pad(np.arange(len(ragged)))
    lists = [spots[i, mask[i]].numpy() for i in range(len(spots))]
    _assert_agree(lists, lattice_descriptors_torch(spots, mask).numpy())


def test_network_uses_the_port_and_predicts_the_same():
    torch.manual_seed(0)
    cfg = ModelConfig(feature_dim=16, hidden_dim=16, n_layers=1, n_heads=4, ffn_dim=16, max_spots=32, lattice_token=True)
    net = PEAGGMoE(cfg).eval()
    for p in net.lattice.parameters():  # the token is zero-initialised: give it a say
        torch.nn.init.normal_(p, std=0.3)
    spots, mask = _pad(_fixtures()[3:])
    torch.testing.assert_close(pattern_descriptors(spots, mask), pattern_descriptors_numpy(spots, mask), rtol=RTOL, atol=1e-6)
    with torch.inference_mode():
        out = net(spots, mask).cs_logits
        ref = net(spots, mask, lattice=pattern_descriptors_numpy(spots, mask)).cs_logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
