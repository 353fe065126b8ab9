"""Tests of the PE-AG-GMoE components on tiny hand-made inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from py4dstem_gnn.features import collate, polar_features, split_direct_beam
from py4dstem_gnn.model import (
    MixtureOfExperts,
    ModelConfig,
    PEAGGMoE,
    load_balancing_loss,
    node_degrees,
    shortest_path_distances,
    sparsify_attention,
)

TINY = dict(feature_dim=16, hidden_dim=16, n_layers=2, n_heads=4, ffn_dim=16, max_spots=32)


@pytest.fixture(scope="module")
def tiny_model() -> PEAGGMoE:
    torch.manual_seed(0)
    return PEAGGMoE(ModelConfig(**TINY)).eval()


def random_spots(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.c_[rng.uniform(-1.5, 1.5, (n, 2)), rng.uniform(0.01, 1.0, n)].astype(np.float32)


def test_table6_defaults():
    cfg = ModelConfig()
    assert (cfg.feature_dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads) == (256, 64, 8, 8)
    assert (cfg.n_experts, cfg.top_k, cfg.dropout, cfg.aux_loss_weight) == (4, 2, 0.1, 0.01)
    assert cfg.shared_expert


def test_config_round_trip():
    cfg = ModelConfig(n_layers=3, feature_set="polar", feature_mean=(1, 0, 0, 0.2, -1), feature_std=(1, 1, 1, 1, 1))
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg
    assert json.loads(cfg.to_json())["n_layers"] == 3
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(hidden_dim=30, n_heads=4)
    with pytest.raises(ValueError, match="feature_set"):
        ModelConfig(feature_set="cartesian")
    assert ModelConfig(feature_set="polar").in_features == 5
    assert ModelConfig().in_features == 11 and len(ModelConfig().feature_mean) == 11


def test_output_shapes_and_empty_pattern(tiny_model):
    rng = np.random.default_rng(0)
    spots, mask = collate([random_spots(rng, 7), np.zeros((0, 3)), random_spots(rng, 1)], 32)
    with torch.inference_mode():
        out = tiny_model(spots, mask)
    assert out.cs_logits.shape == (3, 7)
    assert out.sg_logits.shape == (3, 230)
    assert torch.isfinite(out.cs_logits).all() and torch.isfinite(out.sg_logits).all()
    assert out.aux_loss.ndim == 0


def test_batch_independence(tiny_model):
    """A pattern's output does not depend on the other patterns (of other sizes) in its batch."""
    rng = np.random.default_rng(1)
    lists = [random_spots(rng, n) for n in (3, 25, 11, 1, 30)]
    with torch.inference_mode():
        together = tiny_model(*collate(lists, 32))
        for i, pl in enumerate(lists):
            alone = tiny_model(*collate([pl], 32))
            torch.testing.assert_close(alone.cs_logits[0], together.cs_logits[i], atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(alone.sg_logits[0], together.sg_logits[i], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("n", [2, 9, 24])
def test_permutation_invariance(tiny_model, n):
    rng = np.random.default_rng(n)
    pl = random_spots(rng, n)
    perm = rng.permutation(n)
    with torch.inference_mode():
        a = tiny_model(*collate([pl], 32))
        b = tiny_model(*collate([pl[perm]], 32))
    torch.testing.assert_close(a.cs_logits, b.cs_logits, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(a.sg_logits, b.sg_logits, atol=2e-5, rtol=1e-4)


def test_collate_keeps_brightest_and_masks():
    pl = np.array([[0.1, 0, 5.0], [0.2, 0, 1.0], [0.3, 0, 3.0]], np.float32)
    spots, mask = collate([pl, pl[:1]], max_spots=2)
    assert spots.shape == (2, 2, 3)
    assert sorted(spots[0, :, 2].tolist()) == [3.0, 5.0]
    assert mask.tolist() == [[True, True], [True, False]]


def test_split_direct_beam_by_position_not_brightness():
    pl = np.array([[0.5, 0.0, 100.0], [0.01, -0.01, 1.0], [0.0, 0.6, 2.0]], np.float32)
    spots, removed = split_direct_beam(pl)
    assert removed and len(spots) == 2 and 100.0 in spots[:, 2]
    spots, removed = split_direct_beam(pl[[0, 2]])
    assert not removed and len(spots) == 2


@pytest.mark.parametrize("feature_set", ["polar", "polar+neighbours"])
def test_both_feature_sets_are_order_independent(feature_set):
    torch.manual_seed(0)
    model = PEAGGMoE(ModelConfig(**TINY, feature_set=feature_set)).eval()
    # a square lattice: many exactly equidistant neighbours (ties)
    h, k = np.meshgrid(np.arange(-2, 3), np.arange(-2, 3))
    pl = np.c_[0.4 * h.ravel(), 0.4 * k.ravel(), np.ones(h.size)].astype(np.float32)
    pl = pl[np.any(pl[:, :2] != 0, axis=1)]
    perm = np.random.default_rng(0).permutation(len(pl))
    with torch.inference_mode():
        a = model(*collate([pl], 32)).cs_logits
        b = model(*collate([pl[perm]], 32)).cs_logits
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_neighbour_features_see_lattice_symmetry():
    from py4dstem_gnn.features import NEIGHBOUR_ORDERS, neighbour_features

    def lattice(v1, v2):
        h, k = np.meshgrid(np.arange(-3, 4), np.arange(-3, 4))
        q = h.reshape(-1, 1) * np.array(v1) + k.reshape(-1, 1) * np.array(v2)
        return torch.tensor(np.c_[q, np.ones(len(q))][None], dtype=torch.float32)

    square = lattice([0.5, 0], [0, 0.5])
    hexagonal = lattice([0.5, 0], [0.25, 0.5 * np.sqrt(3) / 2])
    centre = 24  # (h, k) = (0, 0) sits in the middle of the 7 x 7 grid
    for spots, n_fold, coordination in ((square, 4, 4.0), (hexagonal, 6, 6.0)):
        f = neighbour_features(spots, torch.ones(1, 49, dtype=torch.bool))[0, centre]
        assert f[0].item() == pytest.approx(0.5, rel=1e-5)
        assert f[1].item() == pytest.approx(coordination, rel=1e-3)
        assert f[2 + NEIGHBOUR_ORDERS.index(n_fold)].item() == pytest.approx(1.0, abs=5e-3)
    f_sq = neighbour_features(square, torch.ones(1, 49, dtype=torch.bool))[0, centre]
    assert f_sq[2 + NEIGHBOUR_ORDERS.index(6)].item() < 0.5


def test_polar_features_values():
    spots = torch.tensor([[[0.0, 2.0, 4.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    f = polar_features(spots, mask)[0]
    torch.testing.assert_close(f[0], torch.tensor([2.0, 0.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(f[1, :4], torch.tensor([1.0, 1.0, 0.0, 0.25]))
    assert f[1, 4].item() == pytest.approx(np.log10(0.25))
    assert torch.all(f[2] == 0)


# -- mixture of experts ---------------------------------------------------------------------------
def _moe(top_k: int = 2, shared: bool = True) -> MixtureOfExperts:
    torch.manual_seed(0)
    return MixtureOfExperts(dim=4, hidden=8, n_experts=4, top_k=top_k, shared_expert=shared)


def test_moe_routes_to_hand_chosen_expert():
    moe = _moe(top_k=1, shared=False)
    with torch.no_grad():
        moe.gate.weight.zero_()
        moe.gate.weight[2, 0] = 10.0  # feature 0 large -> expert 2
        moe.gate.weight[1, 1] = 10.0  # feature 1 large -> expert 1
    x = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    out, aux = moe(x)
    torch.testing.assert_close(out[0], moe.experts[2](x[0]))
    torch.testing.assert_close(out[1], moe.experts[1](x[1]))
    # two tokens on two different experts, each with gate prob ~1: f = (0, .5, .5, 0), P ~ same -> 4 * .5 = 2
    assert aux.item() == pytest.approx(2.0, rel=1e-3)


def test_moe_matches_dense_reference_and_ignores_padding():
    moe = _moe()
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    out, _ = moe(x, mask)
    probs = torch.softmax(moe.gate(x), -1)
    w, idx = probs.topk(2, -1)
    w = w / w.sum(-1, keepdim=True)
    dense = torch.stack([e(x) for e in moe.experts], -2)  # (2, 5, E, 4)
    ref = moe.shared(x) + (torch.gather(dense, -2, idx[..., None].expand(-1, -1, -1, 4)) * w[..., None]).sum(-2)
    torch.testing.assert_close(out[mask], ref[mask], atol=1e-6, rtol=1e-5)
    assert torch.all(out[~mask] == 0)
    # padding content does not change real outputs
    x2 = x.clone()
    x2[~mask] = 1e3
    torch.testing.assert_close(moe(x2, mask)[0], out)


def test_load_balancing_loss_extremes():
    uniform = torch.full((8, 4), 0.25)
    chosen = torch.arange(8).remainder(4)[:, None]
    assert load_balancing_loss(uniform, chosen, 4).item() == pytest.approx(1.0)
    collapsed = torch.tensor([[1.0, 0, 0, 0]]).repeat(8, 1)
    assert load_balancing_loss(collapsed, torch.zeros(8, 1, dtype=torch.long), 4).item() == pytest.approx(4.0)


def test_load_balancing_loss_ignores_padded_tokens():
    moe = _moe()
    x = torch.randn(1, 6, 4)
    mask = torch.tensor([[True, True, True, False, False, False]])
    _, aux_masked = moe(x, mask)
    _, aux_real = moe(x[:, :3])
    torch.testing.assert_close(aux_masked, aux_real)


# -- graph ------------------------------------------------------------------------------------------
def _bfs_reference(adj: np.ndarray, max_d: int) -> np.ndarray:
    n = len(adj)
    out = np.full((n, n), max_d + 1)
    for s in range(n):
        out[s, s] = 0
        frontier, d = [s], 0
        while frontier and d < max_d:
            d += 1
            nxt = []
            for u in frontier:
                for v in np.flatnonzero(adj[u]):
                    if out[s, v] > d:
                        out[s, v] = d
                        nxt.append(v)
            frontier = nxt
    return out


@pytest.mark.parametrize("seed", range(4))
def test_shortest_paths_match_bfs(seed):
    rng = np.random.default_rng(seed)
    adj = rng.random((3, 9, 9)) < 0.2
    adj = adj | adj.transpose(0, 2, 1)
    adj[:, np.arange(9), np.arange(9)] = False
    got = shortest_path_distances(torch.from_numpy(adj), max_distance=4).numpy()
    for b in range(3):
        np.testing.assert_array_equal(got[b], _bfs_reference(adj[b], 4))


def test_shortest_paths_on_a_path_graph():
    n = 5
    adj = torch.zeros(1, n, n, dtype=torch.bool)
    for i in range(n - 1):
        adj[0, i, i + 1] = adj[0, i + 1, i] = True
    d = shortest_path_distances(adj, max_distance=3)[0]
    assert d[0].tolist() == [0, 1, 2, 3, 4]  # 4 = max_distance + 1
    assert node_degrees(adj, max_degree=1)[0].tolist() == [1, 1, 1, 1, 1]
    assert node_degrees(adj, max_degree=9)[0].tolist() == [1, 2, 2, 2, 1]


def test_sparsify_attention_topk_symmetric_and_masked():
    a = torch.tensor([[[0.0, 0.9, 0.1, 0.0], [0.2, 0.0, 0.8, 0.0], [0.5, 0.4, 0.1, 0.0], [1, 1, 1, 1.0]]])
    mask = torch.tensor([[True, True, True, False]])
    adj = sparsify_attention(a, mask, k=1)[0]
    expected = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(adj, expected)
    assert torch.equal(adj, adj.T)


def test_a_few_steps_lower_the_loss():
    """The whole model can fit a fixed batch of toy lattices."""
    from py4dstem_gnn.toy import ToyLatticeSource
    from py4dstem_gnn.training.train import compute_loss

    torch.manual_seed(0)
    model = PEAGGMoE(ModelConfig(**{**TINY, "dropout": 0.0}))
    pls, cs, sg = ToyLatticeSource().sample(np.random.default_rng(0), 24)
    spots, mask = collate([split_direct_beam(p)[0] for p in pls], 32)
    cs_t, sg_t = torch.as_tensor(cs), torch.as_tensor(sg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, _ = compute_loss(model, spots, mask, cs_t, sg_t, 0.01)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_logit_adjustment_applies_in_eval_mode_only():
    from py4dstem_gnn.toy import tiny_model

    net = tiny_model()
    rng = np.random.default_rng(0)
    spots = torch.tensor(rng.normal(size=(3, 10, 3)), dtype=torch.float32).abs()
    mask = torch.ones(3, 10, dtype=torch.bool)
    base = net(spots, mask)
    cs_off, sg_off = np.arange(7.0), np.linspace(-1, 1, 230)
    net.set_logit_adjustment(cs_off.tolist(), sg_off.tolist())
    shifted = net(spots, mask)
    torch.testing.assert_close(shifted.cs_logits - base.cs_logits, torch.tensor(cs_off, dtype=torch.float32).expand(3, 7))
    torch.testing.assert_close(shifted.sg_logits - base.sg_logits, torch.tensor(sg_off, dtype=torch.float32).expand(3, 230))
    net.train()
    torch.manual_seed(0)
    a = net(spots, mask).cs_logits
    net.set_logit_adjustment()
    torch.manual_seed(0)
    torch.testing.assert_close(net(spots, mask).cs_logits, a)  # training logits are never shifted
    with pytest.raises(ValueError):
        ModelConfig(cs_logit_adjustment=(1.0, 2.0))
    with pytest.raises(ValueError):
        ModelConfig(cs_logit_adjustment=(float("nan"),) * 7)
