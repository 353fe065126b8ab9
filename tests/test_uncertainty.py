"""Net types that carry the position uncertainty (py4dstem_gnn.geometry.uncertainty)."""

from __future__ import annotations

import numpy as np

from py4dstem_gnn.geometry import net_type_scores, pattern_geometry
from py4dstem_gnn.geometry.uncertainty import (
    compatible_net_types,
    fit_n_effective,
    net_parameter_sigma,
    net_type_scores_uncertain,
    net_type_sets,
)


def _net(a, b, gamma_deg, n=4, rot=0.3):
    g = np.radians(gamma_deg)
    A = a * np.array([np.cos(rot), np.sin(rot)])
    B = b * np.array([np.cos(rot + g), np.sin(rot + g)])
    h = np.arange(-n, n + 1)
    hh, kk = np.meshgrid(h, h, indexing="ij")
    q = hh.reshape(-1, 1) * A + kk.reshape(-1, 1) * B
    inten = np.exp(-np.hypot(q[:, 0], q[:, 1]) / 0.5)
    pl = np.column_stack([q, inten])
    return pl[np.argsort(np.hypot(q[:, 0], q[:, 1]))]  # direct beam first


def test_zero_sigma_reproduces_the_fixed_tolerance_scores():
    a = np.array([0.3, 0.4, 0.5]); b = np.array([0.3, 0.41, 0.7]); g = np.array([90.0, 89.0, 75.0])
    f = np.ones(3, bool)
    s0, l0 = net_type_scores(a, b, g, f)
    s1, l1 = net_type_scores_uncertain(a, b, g, f, position_sigma=0.0)
    np.testing.assert_allclose(s0, s1)
    assert l0.tolist() == l1.tolist()


def test_nearly_square_net_is_square_or_rectangular_within_the_error():
    # b*/a* = 1.03: rectangular for the fixed 2.5 % tolerance; a 0.01 1/A position error on a 0.3 1/A
    # spacing (3 %) makes it "square or rectangular"
    a, b, g, f = np.array([0.3]), np.array([0.309]), np.array([90.0]), np.array([True])
    assert net_type_scores(a, b, g, f)[1][0] == 1
    m = compatible_net_types(a, b, g, f, position_sigma=0.01)
    assert m[0, 1] and m[0, 3] and m[0, 0]
    assert not m[0, 4]
    assert net_type_scores_uncertain(a, b, g, f, position_sigma=0.01)[1][0] == 3
    # a clearly rectangular net stays rectangular only
    m2 = compatible_net_types(np.array([0.3]), np.array([0.45]), g, f, position_sigma=0.01)
    assert m2[0].tolist() == [True, True, False, False, False]
    # nothing where no net was found
    assert not compatible_net_types(a, b, g, np.array([False]), 0.01).any()


def test_sigma_propagation_and_least_squares_count():
    rel, gdeg = net_parameter_sigma(np.array([0.5]), np.array([0.5]), 0.005)
    np.testing.assert_allclose(rel, np.sqrt(2) * 0.01)
    np.testing.assert_allclose(gdeg, np.degrees(np.sqrt(2) * 0.01))
    rel4, _ = net_parameter_sigma(np.array([0.5]), np.array([0.5]), 0.005, n_effective=4.0)
    np.testing.assert_allclose(rel4, rel / 2)
    geo = pattern_geometry([_net(0.3, 0.36, 80.0, n=3), _net(0.3, 0.36, 80.0, n=1)])
    ne = fit_n_effective(geo)
    assert ne[0] > ne[1] >= 1.0  # more orders pin the basis better


def test_net_type_sets_on_pointlists():
    rng = np.random.default_rng(0)
    pl = _net(0.30, 0.306, 90.0, n=2)
    pl[1:, :2] += rng.normal(0, 0.004, (len(pl) - 1, 2))
    out = net_type_sets([pl, _net(0.3, 0.5, 90.0)], position_sigma=0.004)
    assert out["compatible"].shape == (2, 5)
    assert out["compatible"][0, 3] and out["compatible"][0, 1]
    assert out["compatible"][1].tolist() == [True, True, False, False, False]
    assert (out["position_sigma"] >= 0.004).all()
