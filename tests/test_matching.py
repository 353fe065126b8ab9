"""The match stage: templates, bank, matcher, orientations, user phases and the decision."""

from __future__ import annotations

import numpy as np
import pytest

spglib = pytest.importorskip("spglib")
ase = pytest.importorskip("ase")

from ase.build import bulk  # noqa: E402
from ase.spacegroup import crystal  # noqa: E402

from py4dstem_gnn.data.conventional import conventional_to_primitive  # noqa: E402
from py4dstem_gnn.data.kinematic import KinematicLibrary, SpotSelection, kinematic_entry, sample_kinematic  # noqa: E402
from py4dstem_gnn.data.orientations import zone_axis_rotation  # noqa: E402
from py4dstem_gnn.matching import (  # noqa: E402
    MatchConfig, TemplateBank, match_orientations, match_patterns, resolve_bank, structure_bank,
)
from py4dstem_gnn.geometry import pattern_geometry  # noqa: E402
from py4dstem_gnn.matching.templates import hnf_basis_2d  # noqa: E402


def _structures():
    return {
        "Au": bulk("Au", "fcc", a=4.078),
        "Si": bulk("Si", "diamond", a=5.431),
        "TiO2": crystal(["Ti", "O"], basis=[(0, 0, 0), (0.3048, 0.3048, 0)], spacegroup=136,
                        cellpar=[4.594, 4.594, 2.959, 90, 90, 90]),
        "ZnO": crystal(["Zn", "O"], basis=[(1 / 3, 2 / 3, 0), (1 / 3, 2 / 3, 0.382)], spacegroup=186,
                       cellpar=[3.25, 3.25, 5.207, 90, 90, 120]),
    }


@pytest.fixture(scope="module")
def bank() -> TemplateBank:
    return structure_bank(list(_structures().values()), names=list(_structures()))


def _simulator(atoms):
    from py4DSTEM.process.diffraction import Crystal

    cell = (np.asarray(atoms.cell[:]), atoms.get_scaled_positions(), atoms.numbers)
    plat, ppos, pnum = spglib.standardize_cell(cell, to_primitive=True, symprec=1e-3)
    entry = kinematic_entry(Crystal(positions=ppos, numbers=pnum, cell=plat), 2.0)
    lib = KinematicLibrary.from_entries([0], [entry])
    conv = conventional_to_primitive(plat, ppos, pnum)

    def pattern(R, scale=1.0):
        pl = sample_kinematic(lib, [0], np.asarray(R)[None], k_max=1.6, **SpotSelection().kwargs())[0]
        pl[:, :2] *= scale
        return pl

    return entry, conv, pattern


def test_hnf_basis_2d():
    H = hnf_basis_2d(np.array([[2, 0], [0, 2], [1, 1]]))
    assert abs(round(np.linalg.det(H))) == 2  # index 2 sublattice (centred)


def test_bank_tables_and_subset(bank, tmp_path):
    assert bank.n_phases == 4 and len(bank) > 20
    assert [p["space_group"] for p in bank.phases()] == [225, 227, 136, 186]
    sub = bank.subset([2])
    assert sub.n_phases == 1 and set(sub.phase.tolist()) == {0} and sub.formula[0] == "O2Ti"
    path = bank.save(tmp_path / "b.npz")
    back = TemplateBank.load(path)
    assert len(back) == len(bank) and np.array_equal(back.hk, bank.hk) and list(back.source) == list(bank.source)


@pytest.mark.parametrize("name", ["Au", "TiO2", "ZnO"])
def test_every_stored_axis_matches_itself_at_any_angle(bank, name):
    j = list(_structures()).index(name)
    entry, conv, pattern = _simulator(_structures()[name])
    rows = np.flatnonzero((bank.phase == j) & (bank.kind == 0))
    rng = np.random.default_rng(1)
    pls, axes = [], []
    for r in rows:
        R = zone_axis_rotation(bank.uvw[r], entry.lat_inv, conv, in_plane=rng.uniform(0, 2 * np.pi))
        pl = pattern(R)
        if len(pl) >= 7 and pattern_geometry([pl]).found[0]:  # a systematic row has no 2D net to match
            pls.append(pl)
            axes.append(bank.uvw[r])
    assert len(pls) >= 3
    res = match_patterns(pls, bank)
    assert np.all(res.phase[:, 0] == j), res.phase[:, :2]
    assert np.all(res.score[:, 0] > 0.97)
    # the orientation re-simulates the pattern
    o = match_orientations(res, bank)
    from scipy.spatial import cKDTree

    for i, pl in enumerate(pls):
        again = pattern(o["orientation"][i], res.q_scale[i, 0])
        dist, _ = cKDTree(again[:, :2]).query(pl[:, :2])
        assert np.median(dist) < 1e-3
        # the zone axis is the stored one, up to sign
        assert np.array_equal(np.abs(o["zone_axis"][i]), np.abs(axes[i]))


def test_scaled_pattern_matches_with_fitted_scale(bank):
    entry, conv, pattern = _simulator(_structures()["TiO2"])
    R = zone_axis_rotation([0, 0, 1], entry.lat_inv, conv, in_plane=0.7)
    res = match_patterns([pattern(R, scale=1.015)], bank)
    assert res.phase[0, 0] == 2
    assert res.q_scale[0, 0] == pytest.approx(1.015, abs=1e-3)
    # outside the scale tolerance: no match of that phase
    res = match_patterns([pattern(R, scale=1.10)], bank, MatchConfig(scale_tolerance=0.06))
    assert 2 not in res.phase[0]


def test_user_cif_is_found(tmp_path):
    from ase.io import write

    path = tmp_path / "rutile.cif"
    write(str(path), _structures()["TiO2"])
    user = resolve_bank([str(path), _structures()["Au"]])
    assert user.n_phases == 2 and user.source[0] == "rutile.cif" and user.space_group[0] == 136
    entry, conv, pattern = _simulator(_structures()["TiO2"])
    R = zone_axis_rotation([1, 1, 0], entry.lat_inv, conv, in_plane=2.0)
    res = match_patterns([pattern(R)], user)
    assert res.phase[0, 0] == 0


def test_element_filter(bank):
    only = resolve_bank(bank, elements=["Ti", "O"])
    assert list(only.formula) == ["O2Ti"]
    with pytest.raises(ValueError, match="no phase"):
        resolve_bank(bank, elements=["Xe"])
    assert resolve_bank(None) is None


def test_predict_pointlists_with_phases_and_fallback(bank):
    import py4dstem_gnn as pg

    entry, conv, pattern = _simulator(_structures()["ZnO"])
    R = zone_axis_rotation([0, 0, 1], entry.lat_inv, conv, in_plane=0.3)
    known = pattern(R)
    # a structure that is not in the bank: bcc Fe along [111] (a hexagonal net of another size)
    e2, c2, p2 = _simulator(bulk("W", "bcc", a=3.165))
    unknown = p2(zone_axis_rotation([0, 1, 1], e2.lat_inv, c2, in_plane=0.1))
    pred = pg.predict_pointlists([known, unknown], phases=bank)
    assert pred.phase[0] >= 0 and pred.phases[pred.phase[0]]["formula"] == "OZn"
    assert pred.crystal_system[0] == 5 and pred.space_group[0] == 186
    assert pred.phase[1] == -1  # not in the bank: the network decides
    assert pred.meta["network_ran"][1]
    assert np.array_equal(np.abs(pred.zone_axis[0]), [0, 0, 1])
    off = pg.predict_pointlists([known, unknown], phases=None)
    assert off.phase is None
