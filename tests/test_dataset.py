"""PatternSet: construction, atomic HDF5 round trip, subsets."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from py4dstem_gnn.data.dataset import PatternSet


def _set(n=5, seed=0):
    rng = np.random.default_rng(seed)
    pls = [rng.normal(size=(int(k), 3)).astype(np.float32) for k in rng.integers(0, 7, n)]
    sg = rng.integers(1, 231, n)
    R = np.stack([np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(n)])
    return PatternSet.from_pointlists(pls, np.arange(n) * 10, sg, orientation=R, attrs={"method": "test", "k": 2.0}), pls


def test_from_pointlists_and_access():
    ps, pls = _set()
    assert len(ps) == 5
    for a, b in zip(ps.pointlists, pls):
        assert np.array_equal(a, b)
    assert np.array_equal(ps[3], pls[3]) and np.array_equal(ps[-1], pls[-1])
    assert ps.crystal_system.dtype == np.int8 and ps.space_group.dtype == np.int16
    assert np.array_equal(ps.n_spots, [len(p) for p in pls])


def test_hdf5_roundtrip_follows_contract(tmp_path):
    ps, _ = _set(7)
    path = ps.to_hdf5(tmp_path / "set.h5")
    assert not list(tmp_path.glob("*.tmp*"))
    with h5py.File(path) as h:
        g = h["patterns"]
        assert g["spots"].dtype == np.float32 and g["spots"].shape[1] == 3
        assert g["offsets"].dtype == np.int64 and g["offsets"].shape == (8,)
        assert g["material"].dtype == np.int64
        assert g["space_group"].dtype == np.int16 and g["crystal_system"].dtype == np.int8
        assert g["orientation"].shape == (7, 3, 3) and g["orientation"].dtype == np.float32
    r = PatternSet.from_hdf5(path)
    for name in ("spots", "offsets", "material", "space_group", "crystal_system", "orientation"):
        assert np.array_equal(getattr(r, name), getattr(ps, name)), name
    assert r.attrs == {"method": "test", "k": 2.0}


@pytest.mark.parametrize("idx", [[4, 0, 2], np.array([True, False, True, False, True]), slice(1, 4), []])
def test_subset(idx):
    ps, pls = _set()
    sub = ps.subset(idx)
    sel = np.arange(5)[idx] if not isinstance(idx, list) else np.array(idx, dtype=int)
    assert len(sub) == len(sel)
    for k, i in enumerate(sel):
        assert np.array_equal(sub[k], pls[i])
        assert sub.material[k] == ps.material[i]
        assert np.array_equal(sub.orientation[k], ps.orientation[i])


def test_concatenate_and_bad_offsets():
    a, pa = _set(3, 1)
    b, pb = _set(2, 2)
    c = PatternSet.concatenate([a, b])
    assert len(c) == 5
    for x, y in zip(c.pointlists, pa + pb):
        assert np.array_equal(x, y)
    with pytest.raises(ValueError):
        PatternSet(np.zeros((3, 3)), np.array([0, 2]), [0], [1], [0])


@pytest.mark.parametrize(
    "name, split",
    [("bloch_test.h5", "test"), ("bloch_val.h5", "val"), ("bloch_val_large.h5", "val"), ("bloch_train.h5", "train")],
)
def test_committed_bloch_sets_are_consistent(name, split):
    from pathlib import Path

    from py4dstem_gnn.labels import crystal_system_of_space_group
    from py4dstem_gnn.data.structures import load_manifest

    path = Path(__file__).resolve().parents[1] / "data" / name
    if not path.exists():
        pytest.skip(f"{name} not built")
    ps = PatternSet.from_hdf5(path)
    m = load_manifest()
    assert len(ps) > 0
    assert np.all(m["split"][ps.material] == split)
    assert np.array_equal(ps.space_group, m["space_group"][ps.material])
    assert np.array_equal(ps.crystal_system, crystal_system_of_space_group(ps.space_group.astype(int)))
    R = ps.orientation.astype(np.float64)
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-5)
    first = ps.spots[ps.offsets[:-1]]
    assert np.allclose(first[:, :2], 0)  # direct beam first, at q = 0
    assert np.all(ps.spots[:, 2] > 0) and np.all(ps.spots[:, 2] <= 1.0)
    assert ps.attrs["method"] == "bloch" and ps.attrs["thickness"] == 200.0
    assert not set(ps.attrs["skipped_materials"]) & set(ps.material)


def test_validation_sets_keep_only_the_held_out_materials():
    from pathlib import Path

    from py4dstem_gnn.data.dataset import PatternSet
    from py4dstem_gnn.data.sources import load_validation_sets

    path = Path(__file__).parents[1] / "data" / "bloch_val.h5"
    ps = PatternSet.from_hdf5(path)
    keep = np.unique(ps.material)[:3]
    full = load_validation_sets([f"v={path}"])["v"]
    part = load_validation_sets([f"v={path}"], materials=keep)["v"]
    mask = np.isin(ps.material, keep)
    assert len(full[0]) == len(ps) and len(part[0]) == int(mask.sum()) > 0
    np.testing.assert_array_equal(part[2], ps.space_group[mask])
    np.testing.assert_array_equal(part[0][0], ps.pointlists[int(np.flatnonzero(mask)[0])])


def test_stored_source_joins_sets_and_keeps_only_allowed_materials(tmp_path):
    from py4dstem_gnn.data.sources import StoredSource

    a, _ = _set(n=6, seed=1)  # materials 0, 10, ..., 50
    b, _ = _set(n=4, seed=2)  # materials 0, 10, 20, 30
    a.to_hdf5(tmp_path / "a.h5")
    b.to_hdf5(tmp_path / "b.h5")
    both = StoredSource([tmp_path / "a.h5", tmp_path / "b.h5"], augment=False)
    assert len(both) == 10 and both.n_excluded == 0
    assert [p["n_patterns"] for p in both.describe()["parts"]] == [6, 4]
    kept = StoredSource([tmp_path / "a.h5", tmp_path / "b.h5"], augment=False, materials=[10, 50])
    assert len(kept) == 3 and kept.n_excluded == 7
    assert kept.describe()["n_excluded_patterns"] == 7
    _, _, sg = kept.sample(np.random.default_rng(0), 200)
    allowed_sg = set(a.space_group[[1, 5]].tolist()) | {int(b.space_group[1])}
    assert set(sg.tolist()) <= allowed_sg
    with pytest.raises(ValueError, match="training"):
        StoredSource(tmp_path / "b.h5", augment=False, materials=[50])
