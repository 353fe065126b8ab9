"""The stored off-pool Bloch-wave sets (``benchmarks/offpool_sets.py``): present, small and consistent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from py4dstem_gnn.data.dataset import ZONE_AXIS, PatternSet
from py4dstem_gnn.data.structures import label_cell, load_manifest, standard_cell
from py4dstem_gnn.labels import crystal_system_of_space_group

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTAL = ROOT / "data" / "bloch_experimental_za.h5"
PERTURBED = ROOT / "data" / "bloch_perturbed_za.h5"


@pytest.fixture(scope="module")
def experimental():
    return PatternSet.from_hdf5(EXPERIMENTAL)


@pytest.fixture(scope="module")
def perturbed():
    return PatternSet.from_hdf5(PERTURBED)


def _common_checks(s: PatternSet, path: Path):
    assert path.stat().st_size < 3e6
    assert len(s) > 300
    assert np.all(s.regime == ZONE_AXIS)
    assert np.all(np.abs(s.uvw).sum(axis=1) > 0)
    assert np.array_equal(s.crystal_system, crystal_system_of_space_group(s.space_group.astype(np.int64)))
    assert np.all(np.isfinite(s.orientation))
    assert s.n_spots.min() >= 2
    assert s.attrs["command"].startswith("python benchmarks/offpool_sets.py")
    assert s.attrs["tilt_deg"] == 0.5 and s.attrs["method"] == "bloch"


def _rebuilt(name: str):
    """Three structures rebuilt here independently of the script (ASE + literature constants)."""
    from ase.build import bulk
    from ase.spacegroup import crystal

    if name == "Au":
        return bulk("Au")
    if name == "TiO2-rutile":
        return crystal(["Ti", "O"], basis=[(0, 0, 0), (0.3048, 0.3048, 0)], spacegroup=136,
                       cellpar=[4.5937, 4.5937, 2.9587, 90, 90, 90])
    if name == "ZnO":
        return crystal(["Zn", "O"], basis=[(1 / 3, 2 / 3, 0), (1 / 3, 2 / 3, 0.3819)], spacegroup=186,
                       cellpar=[3.2498, 3.2498, 5.2066, 90, 90, 120])
    raise KeyError(name)


def test_experimental_set(experimental):
    s = experimental
    _common_checks(s, EXPERIMENTAL)
    entries = json.loads(s.attrs["structures"])
    sidx = np.array(json.loads(s.attrs["structure_index"]))
    assert len(sidx) == len(s)
    assert len({e["name"] for e in entries}) == len(entries) >= 50
    assert {e["crystal_system"] for e in entries if e["n_patterns"]} >= {1, 2, 3, 4, 5, 6}
    manifest = load_manifest()
    for k, e in enumerate(entries):
        rows = sidx == k
        assert rows.sum() == e["n_patterns"]
        if not rows.any():
            continue
        assert np.all(s.space_group[rows] == e["space_group"])
        assert np.all(s.material[rows] == e["pool_material"])
        if e["pool_material"] >= 0:
            m = e["pool_material"]
            assert manifest["formula"][m] == e["formula"] and manifest["space_group"][m] == e["space_group"]
    by_name = {e["name"]: (k, e) for k, e in enumerate(entries)}
    for name, sg in (("Au", 225), ("TiO2-rutile", 136), ("ZnO", 186)):
        k, e = by_name[name]
        a = _rebuilt(name)
        cell = standard_cell(a.cell.array, a.get_scaled_positions(), a.numbers, primitive=True)
        assert label_cell(cell.lattice, cell.positions, cell.numbers) == sg == e["space_group"]
        assert np.all(s.space_group[sidx == k] == sg)
        assert e["n_patterns"] == 6


def test_perturbed_set(perturbed):
    s = perturbed
    _common_checks(s, PERTURBED)
    source = PatternSet.from_hdf5(ROOT / s.attrs["source_set"])
    mats = np.unique(s.material)
    assert np.all(np.isin(mats, source.material)) and len(mats) >= 150
    manifest = load_manifest()
    assert np.array_equal(s.space_group, manifest["space_group"][s.material])
    entries = {e["material"]: e for e in json.loads(s.attrs["perturbation"])}
    assert set(mats) <= set(entries)
    for m in mats:
        e = entries[int(m)]
        assert 0.01 <= abs(e["scale"] - 1) <= 0.03
        assert abs(e["c_strain"]) <= 0.02
        assert (e["c_strain"] == 0) == (e["crystal_system"] == 6)
        assert e["space_group_after"] == e["space_group"]
        assert np.sum(s.material == m) == e["n_patterns"] == 3
