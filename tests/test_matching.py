"""The match stage: templates, bank, matcher, orientations, user phases and the decision."""

from __future__ import annotations

import numpy as np
import pytest

spglib = pytest.importorskip("spglib")
ase = pytest.importorskip("ase")

from ase.build import bulk  # noqa: E402
from ase.spacegroup import crystal  # noqa: E402

from _crystals import kinematic_simulator  # noqa: E402
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


_simulator = kinematic_simulator


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


def test_scale_estimate_takes_the_nets_measured_for_the_match(bank):
    """estimate_scale with the scan's geometry (what scan.match_scan passes) = measuring its sample again."""
    from py4dstem_gnn.matching.matcher import _take_geometry, estimate_scale

    rng = np.random.default_rng(3)
    pls = []
    for name, axes in (("Au", ([0, 0, 1], [0, 1, 1])), ("TiO2", ([0, 0, 1], [1, 0, 0])), ("ZnO", ([0, 0, 1], [1, 0, 0]))):
        entry, conv, pattern = _simulator(_structures()[name])
        for uvw in axes:
            for _ in range(3):
                R = zone_axis_rotation(uvw, entry.lat_inv, conv, in_plane=rng.uniform(0, 2 * np.pi))
                pls.append(pattern(R, scale=1.03))
    geo = pattern_geometry(pls)
    idx = np.sort(rng.choice(len(pls), 11, replace=False))
    sub, taken = pattern_geometry([pls[i] for i in idx]), _take_geometry(geo, idx)
    # what the matcher reads is the same (other fields may differ in the last bit: other padding)
    for name in ("found", "n_indexed", "a", "b", "a_len", "b_len", "gamma_deg", "offsets", "hk", "on_net", "is_beam"):
        np.testing.assert_array_equal(getattr(taken, name), getattr(sub, name), err_msg=name)
    assert set(taken.stats) == set(sub.stats) and len(taken) == idx.size
    for max_patterns in (len(pls), 11):  # all positions, and a sample of them
        kw = dict(max_patterns=max_patterns, min_count=3)
        alone = estimate_scale(pls, bank, **kw)
        assert alone == pytest.approx(1.03, abs=5e-3)
        assert estimate_scale(pls, bank, geometry=geo, **kw) == alone
    res = match_patterns(pls, bank, geometry=geo)
    np.testing.assert_array_equal(res.phase, match_patterns(pls, bank).phase)


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


@pytest.fixture(scope="module")
def au_scan_bv():
    from py4dstem_gnn.data.synthetic import au_nanoparticle_scan, detect_braggvectors

    scan = au_nanoparticle_scan(scan_shape=(20, 20), seed=3)
    return detect_braggvectors(scan.datacube, disk_radius=2.5, q_pixel_size=0.021)


def test_classify_braggvectors_phase_maps(au_scan_bv):
    import py4dstem_gnn as pg

    maps = pg.classify_braggvectors(au_scan_bv, phases=[_structures()["Au"], _structures()["Si"]], progress=False,
                                    confidence_threshold=0)
    for label in ("phase", "match_score", "zone_axis_u", "zone_axis_v", "zone_axis_w", "in_plane_angle", "q_scale"):
        assert label in maps.slicelabels
    table = pg.phase_table(maps)
    assert table and table[0]["formula"] == "Au" and table[0]["space_group"] == 225
    phase = maps.get_slice("phase").data
    named = phase >= 0
    assert named.sum() > 20
    assert np.all(phase[named] == 0)  # Au everywhere a phase is named (Si never)
    assert np.all(maps.get_slice("crystal_system").data[named] == 6)
    q = maps.get_slice("q_scale").data[named]
    assert np.nanmedian(q) == pytest.approx(1.0, abs=0.02)


def test_q_pixel_size_off_is_reported(au_scan_bv):
    import copy
    import warnings

    import py4dstem_gnn as pg

    bv = copy.deepcopy(au_scan_bv)
    bv.calibration.set_Q_pixel_size(0.021 * 1.04)
    bv.setcal()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = pg.classify_braggvectors(bv, phases=[_structures()["Au"]], progress=False, confidence_threshold=0)
    q = maps.get_slice("q_scale").data
    assert np.nanmedian(q) == pytest.approx(1.04, abs=0.015)
    assert any("Q pixel size" in str(w.message) for w in caught)


def test_exported_orientation_reproduces_the_pattern(bank):
    """Zone axis + in-plane angle + the phase's lattice stored with the maps give back the pattern."""
    from py4dstem_gnn.data.synthetic import braggvectors_from_pointlists
    from py4dstem_gnn.interop import orientation_matrices
    from scipy.spatial import cKDTree
    import py4dstem_gnn as pg

    entry, conv, pattern = _simulator(_structures()["TiO2"])
    rng = np.random.default_rng(5)
    pls = []
    for uvw in ([0, 0, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]):
        pls.append(pattern(zone_axis_rotation(uvw, entry.lat_inv, conv, in_plane=rng.uniform(0, 6.28))))
    px = [np.column_stack([p[:, :2] / 0.015 + 128.0, p[:, 2]]) for p in pls]
    bv = braggvectors_from_pointlists(px, scan_shape=(2, 2), qshape=(256, 256))
    maps = pg.classify_braggvectors(bv, phases=bank, progress=False, median_filter=None, confidence_threshold=0,
                                    raw_vectors=True, q_pixel_size=0.015, origin=(128.0, 128.0), min_spots=3)
    R = orientation_matrices(maps)
    phase = maps.get_slice("phase").data
    for rx in range(2):
        for ry in range(2):
            assert phase[rx, ry] >= 0
            again = pattern(R[rx, ry])
            measured = pls[2 * rx + ry]
            dist, _ = cKDTree(again[:, :2]).query(measured[:, :2])
            assert np.median(dist) < 2e-3
    orix = pytest.importorskip("orix")
    from py4dstem_gnn.interop import to_crystal_map

    xmap = to_crystal_map(maps)
    assert xmap.phases.size >= 1 and "O2Ti" in xmap.phases.names[0]
    del orix


def test_phase_maps_save_and_read_back(au_scan_bv, tmp_path):
    """The phase table and lattices travel in the metadata: py4DSTEM.read alone gets them back."""
    import py4DSTEM

    import py4dstem_gnn as pg
    from py4dstem_gnn.interop import orientation_matrices

    maps = pg.classify_braggvectors(au_scan_bv, phases=[_structures()["Au"]], progress=False, confidence_threshold=0)
    path = tmp_path / "maps.h5"
    py4DSTEM.save(str(path), maps, mode="o")
    back = py4DSTEM.read(str(path))
    assert pg.phase_table(back) == pg.phase_table(maps)
    np.testing.assert_array_equal(back.get_slice("phase").data, maps.get_slice("phase").data)
    a, b = orientation_matrices(maps), orientation_matrices(back)
    np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], atol=1e-6)
