"""Pattern geometry on py4DSTEM kinematic patterns of known crystals along named zone axes.

The expected net is the reduced cell of the reflections *present* (worked out by hand from the
extinction rules, not from the code under test):

* Au (fcc, a = 4.08 Å) [001]: h, k even -> square, a* = 2/a. [111]: the 2-20 family ->
  hexagonal, a* = sqrt(8)/a. [110]: 1-11 and 1-1-1 span the net -> rhombic cell with
  a* = b* = sqrt(3)/a, gamma* = 70.53 deg: centred rectangular.
* Si (diamond, a = 5.431 Å) [001]: 200 is forbidden (h + k + l = 4n + 2), so the net of the
  reflections present is the 220 net: square, a* = sqrt(8)/a (not 2/a). [111] hexagonal
  sqrt(8)/a; [110] centred rectangular sqrt(3)/a, 70.53 deg.
* Mg (hcp, a = 3.21 Å) [0001]: hk0 all present -> hexagonal, a* = 2/(sqrt(3) a).
* Rutile TiO2 (P4_2/mnm, a = 4.594, c = 2.959 Å) [001]: h00 with h odd absent, but 110 and 210
  span the full square net a* = 1/a. [100]: 0kl needs k + l even -> rhombic cell on 011 and
  01-1, a* = b* = sqrt(1/a^2 + 1/c^2), gamma* = 180 - angle(011, 01-1): centred rectangular.
"""

from __future__ import annotations

import numpy as np
import pytest

from _crystals import au, mg
from py4dstem_gnn.data.structures import StructureCell

pytest.importorskip("py4DSTEM")


def si() -> StructureCell:
    fcc = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    pos = np.concatenate([fcc, fcc + 0.25])
    return StructureCell(np.eye(3) * 5.431, pos, np.full(8, 14))


def rutile() -> StructureCell:
    a, c, u = 4.594, 2.959, 0.305
    pos = np.array([[0, 0, 0], [.5, .5, .5], [u, u, 0], [1 - u, 1 - u, 0],
                    [.5 + u, .5 - u, .5], [.5 - u, .5 + u, .5]])
    return StructureCell(np.diag([a, a, c]), pos, np.array([22, 22, 8, 8, 8, 8]))


_RUT_A, _RUT_C = 4.594, 2.959
_R011 = np.hypot(1 / _RUT_A, 1 / _RUT_C)
_G011 = 180 - np.degrees(np.arccos((1 / _RUT_A**2 - 1 / _RUT_C**2) / _R011**2))
_G011 = min(_G011, 180 - _G011)

# crystal, zone axis [uvw] (direct lattice), expected (a*, b*, gamma*, net type)
CASES = {
    "Au[001]": (au, (0, 0, 1), (2 / 4.08, 2 / 4.08, 90.0, "square")),
    "Au[111]": (au, (1, 1, 1), (np.sqrt(8) / 4.08, np.sqrt(8) / 4.08, 60.0, "hexagonal")),
    "Au[110]": (au, (1, 1, 0), (np.sqrt(3) / 4.08, np.sqrt(3) / 4.08, 70.529, "centred_rectangular")),
    "Si[001]": (si, (0, 0, 1), (np.sqrt(8) / 5.431, np.sqrt(8) / 5.431, 90.0, "square")),
    "Si[111]": (si, (1, 1, 1), (np.sqrt(8) / 5.431, np.sqrt(8) / 5.431, 60.0, "hexagonal")),
    "Si[110]": (si, (1, 1, 0), (np.sqrt(3) / 5.431, np.sqrt(3) / 5.431, 70.529, "centred_rectangular")),
    "Mg[0001]": (mg, (0, 0, 1), (2 / (np.sqrt(3) * 3.21), 2 / (np.sqrt(3) * 3.21), 60.0, "hexagonal")),
    "TiO2[001]": (rutile, (0, 0, 1), (1 / _RUT_A, 1 / _RUT_A, 90.0, "square")),
    "TiO2[100]": (rutile, (1, 0, 0), (_R011, _R011, _G011, "centred_rectangular")),
}


@pytest.fixture(scope="module")
def patterns():
    """Four in-plane rotations of every case, py4DSTEM kinematic patterns (k_max 2 1/Å)."""
    from py4dstem_gnn.data.kinematic import kinematic_pattern_py4dstem
    from py4dstem_gnn.data.orientations import rotation_with_beam_along

    rng = np.random.default_rng(0)
    out = {}
    crystals = {}
    for name, (make, uvw, _) in CASES.items():
        cell = make()
        if make not in crystals:
            cr = cell.to_crystal()
            cr.calculate_structure_factors(2.0)
            crystals[make] = cr
        direction = np.asarray(uvw, float) @ cell.lattice
        R = rotation_with_beam_along(np.repeat(direction[None], 4, 0), rng.uniform(0, 2 * np.pi, 4))
        out[name] = [kinematic_pattern_py4dstem(crystals[make], r, k_max=2.0) for r in R]
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_zone_axis_nets(patterns, name):
    from py4dstem_gnn.geometry import pattern_geometry

    ea, eb, eg, etype = CASES[name][2]
    g = pattern_geometry(patterns[name])
    assert g.found.all()
    np.testing.assert_allclose(g.a_len, ea, rtol=0.01)
    np.testing.assert_allclose(g.b_len, eb, rtol=0.01)
    np.testing.assert_allclose(g.gamma_deg, eg, atol=0.5)
    assert g.net_type_name == [etype] * 4
    assert np.all(g.frac_indexed > 0.99)
    # kinematic zero-order patterns obey Friedel's law: the 2-fold residual vanishes
    assert np.all(g.symmetry[:, 0] < 0.01)


def test_zone_axis_nets_corrupted(patterns):
    """Experiment-like corruption (the calibrated preset): ratios and angles survive."""
    from py4dstem_gnn.data.augment import augment_pointlists
    from py4dstem_gnn.geometry import pattern_geometry

    names = list(CASES)
    pls = [p for n in names for p in patterns[n]]
    noisy = augment_pointlists(pls, np.random.default_rng(1))
    g = pattern_geometry(noisy)
    exp = np.array([CASES[n][2][:3] for n in names for _ in range(4)], float)
    ok = (np.abs(g.b_over_a / (exp[:, 1] / exp[:, 0]) - 1) <= 0.01) & (np.abs(g.gamma_deg - exp[:, 2]) <= 0.5)
    assert ok.mean() >= 0.9


def test_symmetry_of_known_axes(patterns):
    """Au [001] (4mm) and [111] (6mm kinematically, by Friedel's law) have small residuals."""
    from py4dstem_gnn.geometry import SYMMETRY_OPERATIONS, pattern_geometry

    g = pattern_geometry(patterns["Au[001]"] + patterns["Au[111]"])
    r = dict(zip(SYMMETRY_OPERATIONS, g.symmetry.T))
    assert np.all(r["4"][:4] < 0.05) and np.all(r["m_a"][:4] < 0.05)
    assert np.all(r["6"][4:] < 0.05) and np.all(r["3"][4:] < 0.05)
    assert np.all(r["4"][4:] == 1.0)
