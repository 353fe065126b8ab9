"""Export of the maps to an orix CrystalMap."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from py4dstem_gnn import interop


def _maps(with_sets: bool = True) -> dict[str, np.ndarray]:
    sg = np.array([[225, 225, -1], [221, 225, 194]])
    maps = {
        "space_group": sg,
        "crystal_system": np.array([[6, 6, -1], [6, 6, 5]]),
        "confidence": np.array([[0.9, 0.8, 0.0], [0.5, 0.95, 0.7]], np.float32),
        "n_spots": np.array([[20, 18, 0], [12, 25, 9]]),
    }
    if with_sets:
        maps["cs_set_size"] = np.array([[1, 2, -1], [1, 1, 3]])
    return maps


def test_missing_orix_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "orix", None)
    monkeypatch.setitem(sys.modules, "orix.crystal_map", None)
    with pytest.raises(ImportError, match=r"py4dstem-gnn\[orix\]"):
        interop.to_crystal_map(_maps())


def test_phases_not_indexed_properties_and_placeholders():
    pytest.importorskip("orix")
    xmap = interop.to_crystal_map(_maps())
    assert xmap.shape == (2, 3)
    # one phase per predicted space group, id = number, name = Hermann-Mauguin symbol; -1 not indexed
    ids = sorted(int(i) for i in xmap.phases.ids)
    assert ids == [-1, 194, 221, 225]
    assert xmap.phases[225].name == "Fm-3m" and xmap.phases[225].space_group.number == 225
    assert xmap.phases[194].name == "P6_3/mmc" and xmap.phases[194].point_group.name == "6/mmm"
    assert xmap.phases[-1].name == "not_indexed"
    np.testing.assert_array_equal(xmap.get_map_data("phase_id"), _maps()["space_group"])
    np.testing.assert_allclose(xmap.get_map_data("confidence"), _maps()["confidence"], rtol=1e-6)
    np.testing.assert_array_equal(xmap.get_map_data("cs_set_size"), _maps()["cs_set_size"])
    assert "sg_set_size" not in xmap.prop  # absent slices are left out
    # identity rotations: placeholders, the model gives no orientation
    np.testing.assert_allclose(xmap.rotations.data, np.tile([1.0, 0, 0, 0], (6, 1)))
    assert xmap.scan_unit == "px" and xmap.dx == 1.0


def test_without_set_slices_and_all_invalid():
    pytest.importorskip("orix")
    xmap = interop.to_crystal_map(_maps(with_sets=False))
    assert "cs_set_size" not in xmap.prop and "confidence" in xmap.prop
    empty = interop.to_crystal_map({"space_group": -np.ones((2, 2), int)})
    assert [int(i) for i in empty.phases.ids] == [-1]


def test_realslice_step_from_calibration_and_explicit():
    pytest.importorskip("orix")
    py4DSTEM = pytest.importorskip("py4DSTEM")
    m = _maps()
    labels = list(m)
    rs = py4DSTEM.RealSlice(data=np.stack([m[k].astype(np.float32) for k in labels]), slicelabels=labels)
    rs.calibration.set_R_pixel_size(25.0)
    rs.calibration.set_R_pixel_units("A")
    xmap = interop.to_crystal_map(rs)
    assert xmap.scan_unit == "nm" and xmap.dx == pytest.approx(2.5) and xmap.dy == pytest.approx(2.5)
    np.testing.assert_array_equal(xmap.get_map_data("phase_id"), m["space_group"])
    xmap = interop.to_crystal_map(rs, step=0.1, unit="um")
    assert xmap.scan_unit == "um" and xmap.dx == pytest.approx(0.1)


def test_bad_input():
    pytest.importorskip("orix")
    with pytest.raises(KeyError, match="space_group"):
        interop.to_crystal_map({"crystal_system": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="outside 1..230"):
        interop.to_crystal_map({"space_group": np.array([[0, 225]])})
    with pytest.raises(TypeError, match="RealSlice"):
        interop.to_crystal_map(np.zeros((2, 2)))
