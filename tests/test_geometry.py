"""Pattern geometry on hand-made nets: reduction, net type, indices, symmetry, rows, Laue layers, descriptors."""

from __future__ import annotations

import numpy as np
import pytest

from py4dstem_gnn.data.kinematic import electron_wavelength
from py4dstem_gnn.geometry import (
    NET_TYPES,
    SYMMETRY_OPERATIONS,
    GeometryConfig,
    canonical_coordinates,
    descriptor_names,
    descriptor_units,
    gauss_reduce,
    lattice_descriptors,
    net_type_scores,
    pattern_geometry,
)

# ideal reduced cells (|a| <= |b|, 60 <= gamma <= 90) of one net of each type, 1/A
NETS = {
    "square": ((0.30, 0.0), (0.0, 0.30)),
    "hexagonal": ((0.30, 0.0), (0.15, 0.30 * np.sqrt(3) / 2)),
    "rectangular": ((0.25, 0.0), (0.0, 0.41)),
    "centred_rectangular": ((0.20, 0.0), (0.0, 0.50)),  # conventional cell; odd h + k absent
    "oblique": ((0.22, 0.0), (0.10, 0.37)),
}


def make_net(a, b, rng, *, k_max=1.6, jitter=0.0, drop=0.0, spurious=0, scale=1.0, angle=None,
             centred=False, intensity=None, extra=None):
    """A pointlist (direct beam first) of the net ``h a + k b`` within ``k_max``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    r = np.arange(-40, 41)
    h, k = (x.ravel() for x in np.meshgrid(r, r, indexing="ij"))
    if centred:
        h, k = h[(h + k) % 2 == 0], k[(h + k) % 2 == 0]
    q = h[:, None] * a + k[:, None] * b
    keep = (np.hypot(*q.T) <= k_max) & ((h != 0) | (k != 0))
    h, k, q = h[keep], k[keep], q[keep]
    inten = (np.exp(-2 * np.hypot(*q.T)) * rng.uniform(0.3, 1.0, len(q)) if intensity is None
             else intensity(h, k, q))
    sel = rng.random(len(q)) >= drop
    q, inten = q[sel], inten[sel]
    if extra is not None:
        q = np.concatenate([q, extra[:, :2]])
        inten = np.concatenate([inten, extra[:, 2]])
    if spurious:
        rr = np.sqrt(rng.random(spurious)) * k_max
        ph = rng.uniform(0, 2 * np.pi, spurious)
        q = np.concatenate([q, np.c_[rr * np.cos(ph), rr * np.sin(ph)]])
        inten = np.concatenate([inten, rng.uniform(0.0, 0.3, spurious)])
    t = rng.uniform(0, 2 * np.pi) if angle is None else angle
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    q = scale * q @ rot.T + rng.normal(0.0, jitter, q.shape)
    return np.vstack([[0.0, 0.0, 1.0], np.c_[q, inten]]).astype(np.float32)


def reduced(a, b):
    ra, rb = gauss_reduce(np.asarray(a, float), np.asarray(b, float))
    la, lb = np.hypot(*ra), np.hypot(*rb)
    return la, lb, np.degrees(np.arccos(ra @ rb / (la * lb)))


def test_gauss_reduce_conventions():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 2))
    b = rng.normal(size=(200, 2))
    M = rng.integers(-3, 4, size=(200, 2, 2))
    M = M[np.abs(np.linalg.det(M)).round() == 1]  # unimodular: same lattice
    a, b = a[: len(M)], b[: len(M)]
    ra, rb = gauss_reduce(a, b)
    ua = M[:, 0, 0, None] * a + M[:, 0, 1, None] * b
    ub = M[:, 1, 0, None] * a + M[:, 1, 1, None] * b
    sa, sb = gauss_reduce(ua, ub)
    la, lb = np.hypot(*ra.T), np.hypot(*rb.T)
    assert np.all(la <= lb + 1e-12)
    dot = np.einsum("ij,ij->i", ra, rb)
    assert np.all(dot >= -1e-12) and np.all(dot <= la**2 / 2 + 1e-9)
    # the reduced cell is a lattice invariant
    np.testing.assert_allclose(np.hypot(*sa.T), la, rtol=1e-9)
    np.testing.assert_allclose(np.hypot(*sb.T), lb, rtol=1e-9)
    np.testing.assert_allclose(np.abs(np.cross(sa, sb)), np.abs(np.cross(a, b)), rtol=1e-9)


@pytest.mark.parametrize("name", list(NETS))
def test_reduction_robust(name):
    """Jitter, 10 % dropped spots, 2 spurious spots, a 3 % scale error and a random rotation."""
    rng = np.random.default_rng(hash(name) % 2**32)
    a, b = NETS[name]
    centred = name == "centred_rectangular"
    # expected reduced cell (the centred net's is spanned by a + b and 2 a)
    ea, eb, eg = reduced(np.add(a, b), 2 * np.asarray(a)) if centred else reduced(a, b)
    scales = 1 + rng.uniform(-0.03, 0.03, 20)
    pls = [make_net(a, b, rng, jitter=0.003, drop=0.1, spurious=2, scale=s, centred=centred) for s in scales]
    g = pattern_geometry(pls)
    ok_a = np.abs(g.a_len / (scales * ea) - 1) <= 0.01
    ok_b = np.abs(g.b_len / (scales * eb) - 1) <= 0.01
    ok_g = np.abs(g.gamma_deg - eg) <= 0.5
    assert (ok_a & ok_b & ok_g).sum() >= 19
    assert (np.array(g.net_type_name) == name).sum() >= 19
    # continuous score of the true type is the largest (oblique: no other type scores)
    scores = g.net_scores[:, NET_TYPES.index(name)]
    assert np.median(scores) > 0.8
    assert np.median(g.frac_indexed) > 0.9


def test_indices_and_off_net_spots():
    rng = np.random.default_rng(1)
    a, b = np.array(NETS["oblique"])
    # two spurious spots half-way between net points (added before the random rotation)
    spur = np.c_[np.stack([0.5 * a + 0.5 * b, 1.5 * a - 0.5 * b]), [0.2, 0.2]]
    pl = make_net(a, b, rng, jitter=0.002, extra=spur)
    n_net = len(pl) - 3
    g = pattern_geometry([pl])
    assert g.found[0]
    rows = slice(g.offsets[0], g.offsets[1])
    assert g.is_beam[rows][0] and g.is_beam[rows].sum() == 1
    on, hk = g.on_net[rows], g.hk[rows]
    pred = hk @ np.stack([g.a[0], g.b[0]]) + g.offset[0]
    assert np.max(np.hypot(*(pl[on, :2] - pred[on]).T)) < 0.01
    spur_rows = np.arange(1 + n_net, len(pl))
    assert not on[spur_rows].any()  # the two spurious spots are off the net
    assert on[1:1 + n_net].all()
    assert g.off_net["n_off"][0] == 2 and not g.off_net["layer_found"][0]
    assert np.all(g.residual[rows][on] < 0.01)


def test_canonical_frame():
    rng = np.random.default_rng(2)
    a, b = NETS["rectangular"]
    pls = [make_net(a, b, rng, jitter=0.001) for _ in range(5)]
    g = pattern_geometry(pls)
    c, s = np.cos(g.frame_angle), np.sin(g.frame_angle)
    ax = c * g.a[:, 0] - s * g.a[:, 1]
    ay = s * g.a[:, 0] + c * g.a[:, 1]
    np.testing.assert_allclose(ay, 0, atol=1e-9)
    assert np.all(ax > 0)
    xy = canonical_coordinates(pls, g, reflect=True)
    # in the canonical frame every pattern's net is a* = (|a*|, 0), b* = |b*| (cos gamma, sin gamma)
    for i in range(5):
        rows = slice(g.offsets[i], g.offsets[i + 1])
        on, hk = g.on_net[rows], g.hk[rows]
        gam = np.radians(g.gamma_deg[i])
        basis = np.array([[g.a_len[i], 0.0], [g.b_len[i] * np.cos(gam), g.b_len[i] * np.sin(gam)]])
        pred = hk[on] @ basis
        assert np.max(np.hypot(*(xy[rows][on] - pred).T)) < 0.01


def _hex_intensity(trigonal: bool):
    def f(h, k, q):
        r = np.hypot(*q.T)
        base = np.exp(-3 * r)
        return base * (1.2 + np.cos(3 * np.arctan2(q[:, 1], q[:, 0]))) if trigonal else base
    return f


def test_symmetry_residuals_friedel():
    """6mm vs a Friedel-breaking 3-fold intensity on the same hexagonal net."""
    rng = np.random.default_rng(3)
    a, b = NETS["hexagonal"]
    g6 = pattern_geometry([make_net(a, b, rng, jitter=0.001, intensity=_hex_intensity(False))])
    g3 = pattern_geometry([make_net(a, b, rng, jitter=0.001, intensity=_hex_intensity(True))])
    r6 = dict(zip(SYMMETRY_OPERATIONS, g6.symmetry[0]))
    r3 = dict(zip(SYMMETRY_OPERATIONS, g3.symmetry[0]))
    assert max(r6[o] for o in ("2", "3", "6", "m_a", "m_b", "m_a+b")) < 0.02
    assert r6["4"] == 1.0 and not g6.lattice_invariant[0, SYMMETRY_OPERATIONS.index("4")]
    assert r3["3"] < 0.02
    assert r3["2"] > 0.15 and r3["6"] > 0.15  # Friedel's law broken: 3 no longer looks like 6


def test_symmetry_rectangular_and_missing_rows():
    """A rectangular net with the odd orders of the a* row absent (a glide-like extinction)."""
    rng = np.random.default_rng(4)
    a, b = NETS["rectangular"]

    def inten(h, k, q):
        out = np.exp(-2 * np.hypot(*q.T))
        out[(k == 0) & (h % 2 == 1)] = 0.0
        return out

    pl = make_net(a, b, rng, jitter=0.001, intensity=inten)
    pl = pl[pl[:, 2] > 0]
    g = pattern_geometry([pl])
    assert g.net_type_name[0] == "rectangular"
    r = dict(zip(SYMMETRY_OPERATIONS, g.symmetry[0]))
    assert r["2"] < 0.02 and r["m_a"] < 0.02 and r["m_b"] < 0.02
    assert r["4"] == 1.0 and r["3"] == 1.0
    assert g.stats["row_odd"][0, 0] < 0.05 and g.stats["row_even"][0, 0] > 0.9  # row along a*
    assert g.stats["row_odd"][0, 1] > 0.9  # row along b* complete


def test_laue_layer():
    """A zero-order square net within 1 1/A plus a ring of a shifted (first-layer) net at ~1.6 1/A."""
    rng = np.random.default_rng(5)
    a = 0.3
    r = np.arange(-10, 11)
    h, k = (x.ravel() for x in np.meshgrid(r, r, indexing="ij"))
    ring = np.c_[(h + 0.5) * a, (k + 0.5) * a]
    rad = np.hypot(*ring.T)
    ring = ring[(rad > 1.5) & (rad < 1.7)]
    extra = np.c_[ring, np.full(len(ring), 0.05)]
    pl = make_net((a, 0), (0, a), rng, k_max=1.0, jitter=0.001, extra=extra)
    X, g = lattice_descriptors([pl], return_geometry=True)
    assert g.found[0] and abs(g.a_len[0] - a) < 0.003
    assert g.off_net["layer_found"][0]
    G = np.sqrt(np.mean(np.sum(ring**2, axis=1)))
    lam = electron_wavelength(300e3)
    names = descriptor_names()
    assert X[0, names.index("layer_spots")] == len(ring)
    np.testing.assert_allclose(X[0, names.index("layer_spacing")], lam * G**2 / 2, rtol=0.02)
    np.testing.assert_allclose(X[0, names.index("layer_repeat")], 2 / (lam * G**2), rtol=0.02)
    # a net without such spots has no layer
    g0 = pattern_geometry([make_net((a, 0), (0, a), rng, k_max=1.0, jitter=0.001, spurious=2)])
    assert not g0.off_net["layer_found"][0]


def test_systematic_row():
    pl = np.array([[0, 0, 1.0]] + [[n * 0.21, n * 0.07, 0.5] for n in range(-5, 6) if n], np.float32)
    g = pattern_geometry([pl])
    assert not g.found[0] and g.is_row[0]
    np.testing.assert_allclose(g.a_len[0], np.hypot(0.21, 0.07), rtol=1e-4)


def test_descriptors_invariant_and_finite():
    rng = np.random.default_rng(6)
    pls = [make_net(*NETS[n], rng, jitter=0.002, drop=0.1, spurious=1, centred=n == "centred_rectangular")
           for n in NETS]
    X = lattice_descriptors(pls)
    names, units = descriptor_names(), descriptor_units()
    assert X.dtype == np.float32 and X.shape == (len(pls), len(names)) == (len(pls), len(units))
    assert len(set(names)) == len(names)
    assert np.all(np.isfinite(X))
    # rotate and permute every pattern (direct beam included): same descriptors
    moved = []
    for pl in pls:
        t = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        p = pl.copy()
        p[:, :2] = pl[:, :2] @ rot.T
        moved.append(p[rng.permutation(len(p))])
    X2 = lattice_descriptors(moved)
    np.testing.assert_allclose(X2, X, rtol=1e-3, atol=1e-3)


def test_degenerate_inputs():
    pls = [np.zeros((0, 3)), np.array([[0, 0, 1.0]]), np.array([[0, 0, 1.0], [0.3, 0, 0.5]]),
           np.array([[0.3, 0.1, 0.5], [-0.3, -0.1, 0.5], [0.1, 0.4, 0.2]])]
    X, g = lattice_descriptors(pls, return_geometry=True)
    assert X.shape == (4, len(descriptor_names())) and np.all(np.isfinite(X))
    assert not g.found[:3].any()
    assert list(g.n_spots) == [0, 0, 1, 3]
    assert lattice_descriptors([]).shape == (0, len(descriptor_names()))


def test_chunking_matches_single_batch():
    rng = np.random.default_rng(7)
    pls = [make_net(*NETS[n], rng, jitter=0.002, k_max=rng.uniform(0.8, 1.8)) for n in list(NETS) * 3]
    X1 = lattice_descriptors(pls)
    X2 = lattice_descriptors(pls, GeometryConfig(chunk_size=4))
    np.testing.assert_allclose(X1, X2, rtol=1e-5, atol=1e-6)


def test_net_type_scores_tolerances():
    a = np.ones(4)
    b = np.array([1.0, 1.0, 1.5, 1.5])
    gam = np.array([90.0, 60.0, 90.0, 75.0])
    scores, label = net_type_scores(a, b, gam, np.ones(4, bool))
    assert [NET_TYPES[i] for i in label] == ["square", "hexagonal", "rectangular", "oblique"]
    assert np.all((scores >= 0) & (scores <= 1))
    # just outside the angle tolerance a square becomes centred rectangular (rhombic), scores drop smoothly
    s2, l2 = net_type_scores(np.ones(3), np.ones(3), np.array([89.0, 88.0, 85.0]), np.ones(3, bool))
    assert [NET_TYPES[i] for i in l2] == ["square", "centred_rectangular", "centred_rectangular"]
    assert s2[0, 3] > s2[1, 3] > s2[2, 3]
