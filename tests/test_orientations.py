"""Zone-axis orientations and the in-plane frame convention (py4DSTEM's default frame)."""

from __future__ import annotations

import numpy as np
import pytest

from py4dstem_gnn.data.orientations import (
    crystal_frame_x,
    rotation_with_beam_along,
    uniform_directions,
    zone_axis_candidates,
    zone_axis_rotations,
)

from _crystals import mg


def _is_rotation(R: np.ndarray) -> bool:
    eye = np.einsum("nji,njk->nik", R, R)
    return np.allclose(eye, np.eye(3), atol=1e-10) and np.allclose(np.linalg.det(R), 1.0)


def test_crystal_frame_matches_py4dstem_parse_orientation():
    py4d = pytest.importorskip("py4DSTEM")
    cell = mg()
    crystal = py4d.process.diffraction.Crystal(cell.positions, cell.numbers, cell.lattice)
    rng = np.random.default_rng(0)
    dirs = np.vstack([uniform_directions(20, rng), [[0, 0, 1.0], [0, 0, -1.0], [1.0, 0, 0]]])
    x = crystal_frame_x(dirs)
    for d, xi in zip(dirs, x):
        ref = crystal.parse_orientation(zone_axis_cartesian=d)
        np.testing.assert_allclose(xi, ref[:, 0], atol=1e-10)
    R = rotation_with_beam_along(dirs, np.zeros(len(dirs)))
    assert _is_rotation(R)


def test_zone_axis_rotations_put_a_zone_axis_on_the_beam_and_share_draws():
    lat_inv = np.linalg.inv(mg().lattice).T[None].repeat(200, 0)  # rows b_i with a_i . b_j = delta_ij
    R_rand = zone_axis_rotations(lat_inv, np.random.default_rng(1), tilt_deg=0.0)
    R_crys = zone_axis_rotations(lat_inv, np.random.default_rng(1), tilt_deg=0.0, in_plane="crystal")
    assert _is_rotation(R_rand) and _is_rotation(R_crys)
    np.testing.assert_allclose(R_rand[:, :, 2], R_crys[:, :, 2], atol=1e-12)  # same beams
    # the beam is a lattice direction [uvw] with max |index| <= 3
    uvw = R_rand[:, :, 2] @ np.linalg.inv(mg().lattice)
    uvw /= np.abs(uvw).max(axis=1, keepdims=True)
    cands, _ = zone_axis_candidates(3)
    unit = cands / np.abs(cands).max(axis=1, keepdims=True)
    dist = np.min(np.minimum(np.abs(uvw[:, None] - unit[None]).sum(-1), np.abs(uvw[:, None] + unit[None]).sum(-1)), 1)
    assert dist.max() < 1e-8
    # crystal frame: detector x is py4DSTEM's; random frame: x spreads around the beam
    np.testing.assert_allclose(R_crys[:, :, 0], crystal_frame_x(R_crys[:, :, 2]), atol=1e-10)
    cos = np.einsum("ni,ni->n", R_rand[:, :, 0], crystal_frame_x(R_rand[:, :, 2]))
    assert cos.min() < -0.5 and cos.max() > 0.5
    with pytest.raises(ValueError):
        zone_axis_rotations(lat_inv[:2], np.random.default_rng(0), in_plane="lab")
