"""Zone axes named in the conventional cell, simulated in the primitive one."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("spglib")

from _crystals import au, mg  # noqa: E402

from py4dstem_gnn.data.conventional import ConventionalTable, conventional_to_primitive  # noqa: E402
from py4dstem_gnn.data.kinematic import kinematic_pattern_py4dstem  # noqa: E402
from py4dstem_gnn.data.orientations import axis_lengths, zone_axis_candidates, zone_axis_rotation, zone_axis_rotations  # noqa: E402
from py4dstem_gnn.data.structures import StructureCell, standard_cell  # noqa: E402


def _primitive(cell: StructureCell) -> StructureCell:
    out = standard_cell(cell.lattice, cell.positions, cell.numbers, primitive=True)
    assert out is not None
    return out


def _pattern(prim: StructureCell, uvw, conv_map) -> np.ndarray:
    crystal = prim.to_crystal()
    crystal.calculate_structure_factors(2.0)
    R = zone_axis_rotation(uvw, crystal.lat_inv, conv_map, in_plane=0.3)
    pl = kinematic_pattern_py4dstem(crystal, R)
    pl = pl[np.hypot(pl[:, 0], pl[:, 1]) > 1e-6]
    return pl[pl[:, 2] > 1e-3 * pl[:, 2].max()]


def _fold(pl: np.ndarray, n: int, tol: float = 2e-3) -> float:
    """Share of spots that an n-fold rotation maps onto a spot."""
    a = 2 * np.pi / n
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    q = pl[:, :2] @ rot.T
    d = np.min(np.linalg.norm(q[:, None, :] - pl[None, :, :2], axis=-1), axis=1)
    return float(np.mean(d < tol))


def test_fcc_001_is_four_fold_in_the_conventional_cell():
    prim = _primitive(au())
    M = conventional_to_primitive(prim.lattice, prim.positions, prim.numbers)
    pl = _pattern(prim, [0, 0, 1], M)
    assert len(pl) >= 8
    assert _fold(pl, 4) == 1.0
    # the same indices read in the primitive cell are a <110>-type axis: not four-fold
    pl_prim = _pattern(prim, [0, 0, 1], None)
    assert _fold(pl_prim, 4) < 0.5


def test_fcc_111_and_hcp_0001_are_six_fold():
    prim = _primitive(au())
    M = conventional_to_primitive(prim.lattice, prim.positions, prim.numbers)
    assert _fold(_pattern(prim, [1, 1, 1], M), 6) == 1.0
    prim = _primitive(mg())
    M = conventional_to_primitive(prim.lattice, prim.positions, prim.numbers)
    pl = _pattern(prim, [0, 0, 1], M)
    assert len(pl) >= 6 and _fold(pl, 6) == 1.0


def test_monoclinic_010_is_the_unique_axis():
    beta = np.deg2rad(104.0)
    lat = np.array([[4.0, 0, 0], [0, 5.0, 0], [6.0 * np.cos(beta), 0, 6.0 * np.sin(beta)]])
    cell = StructureCell(lat, np.array([[0.0, 0, 0], [0.5, 0.5, 0.0]]), np.array([26, 26]))  # C2/m
    prim = _primitive(cell)
    M = conventional_to_primitive(prim.lattice, prim.positions, prim.numbers)
    conv = M @ prim.lattice  # conventional vectors (rows) in the simulation frame
    b = conv[1]
    # b is the unique axis: 5 A long and perpendicular to a and c
    assert np.linalg.norm(b) == pytest.approx(5.0, rel=1e-6)
    assert abs(b @ conv[0]) < 1e-8 and abs(b @ conv[2]) < 1e-8
    crystal = prim.to_crystal()
    R = zone_axis_rotation([0, 1, 0], crystal.lat_inv, M)
    assert abs(R[:, 2] @ b / np.linalg.norm(b)) == pytest.approx(1.0, abs=1e-9)


def test_rhombohedral_cell_in_hexagonal_setting():
    # As-like R-3m: hexagonal setting a = 3.76, c = 10.55, atoms at (0, 0, +-z) plus R centring
    a, c, z = 3.76, 10.55, 0.227
    lat = np.array([[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, c]])
    base = np.array([[0, 0, z], [0, 0, -z]])
    shifts = np.array([[0, 0, 0], [2 / 3, 1 / 3, 1 / 3], [1 / 3, 2 / 3, 2 / 3]])
    pos = np.mod((base[None] + shifts[:, None]).reshape(-1, 3), 1.0)
    prim = _primitive(StructureCell(lat, pos, np.full(len(pos), 33)))
    assert len(prim.numbers) == 2  # the rhombohedral primitive cell
    M = conventional_to_primitive(prim.lattice, prim.positions, prim.numbers)
    conv = M @ prim.lattice
    assert np.linalg.norm(conv[2]) == pytest.approx(c, rel=1e-3)  # [001]_hex is the long c axis
    pl = _pattern(prim, [0, 0, 1], M)
    assert _fold(pl, 6) == 1.0  # 3-fold axis; kinematic zero-order patterns add Friedel's 2-fold


def test_sampler_weights_favour_short_axes_and_record_the_axis():
    uvw, _ = zone_axis_candidates(3)
    L = np.eye(3)[None] * 4.0
    lengths = axis_lengths(uvw, np.eye(3)[None], L)[0]
    assert lengths.min() == pytest.approx(4.0)
    prim = _primitive(au())
    M = conventional_to_primitive(prim.lattice, prim.positions, prim.numbers)
    crystal = prim.to_crystal()
    n = 4000
    R, axes = zone_axis_rotations(np.repeat(crystal.lat_inv[None], n, 0), np.random.default_rng(0),
                                  conv_map=np.repeat(M[None], n, 0), tilt_deg=0.0, return_axes=True)
    # the beam runs along the recorded conventional axis
    d = axes @ M @ prim.lattice
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    assert np.allclose(np.abs(np.einsum("ij,ij->i", d, R[:, :, 2])), 1.0, atol=1e-9)
    fam = np.sort(np.abs(axes), axis=1)
    share = np.mean([tuple(f) in {(0, 0, 1), (0, 1, 1), (1, 1, 1)} for f in fam])
    assert 0.3 < share < 0.6  # low-index axes dominate (p = 2 weights; measured ~0.4 for fcc)


def test_table_round_trip(tmp_path):
    table = ConventionalTable(np.array([3, 7]), np.stack([np.eye(3), np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0.0]])]))
    path = table.write(tmp_path / "conv.npz")
    back = ConventionalTable.load(path)
    assert back.has(7) and not back.has(4)
    assert np.array_equal(back.matrices([7, 3]), table.matrix[[1, 0]])
