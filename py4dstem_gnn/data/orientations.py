"""Crystal orientations for simulation: zone axes, as microscopists (and the paper) record them.

Uniformly random orientations over SO(3) almost never put a zone axis along the beam; their
patterns are scattered cuts through the reciprocal lattice, from which even the crystal system
is hardly recoverable (measured here: a random forest on 12,000 such kinematic patterns reached
26.9 % crystal-system accuracy against a 24.7 % majority class). Microscopists tilt to zone axes,
and the paper's "ten orientations" are zone axes. :func:`zone_axis_rotations` therefore draws a
low-index zone axis ``[uvw]`` of the material's own lattice, a small mis-tilt and a uniformly
random in-plane rotation.

The in-plane rotation matters. py4DSTEM, given only a beam direction, fixes the detector's x
axis to the projection of the crystal's Cartesian ``-z`` (:func:`crystal_frame_x`), so its
patterns carry the crystal's axes in their absolute angles; a real detector does not know
them. ``in_plane="crystal"`` reproduces that convention, for measuring how much it gives away
(``benchmarks/split_leakage.py --in-plane crystal``); training and test data use ``"random"``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["zone_axis_candidates", "zone_axis_rotations", "rotation_with_beam_along", "crystal_frame_x",
           "crystal_frame_angle", "uniform_directions", "IN_PLANE", "check_in_plane"]

#: In-plane conventions: random rotation (as detectors see crystals) or py4DSTEM's default frame.
IN_PLANE = ("random", "crystal")


def check_in_plane(in_plane: str) -> None:
    """Raise ``ValueError`` unless ``in_plane`` is one of :data:`IN_PLANE`."""
    if in_plane not in IN_PLANE:
        raise ValueError(f"in_plane must be one of {IN_PLANE}, got {in_plane!r}")


def zone_axis_candidates(max_index: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Primitive directions ``[uvw]`` (one of each ``±`` pair) with ``max |index| ≤ max_index``.

    Returns
    -------
    uvw : numpy.ndarray
        ``(m, 3)`` int directions.
    weights : numpy.ndarray
        ``(m,)`` sampling probabilities ∝ ``1 / (u² + v² + w²)``: low-index axes, where
        microscopists usually look and where patterns hold the most spots, are drawn more often.
    """
    r = np.arange(-max_index, max_index + 1)
    uvw = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    uvw = uvw[np.any(uvw != 0, axis=1)]
    g = np.gcd.reduce(np.abs(uvw), axis=1)
    uvw = uvw[g == 1]
    first = np.where(uvw[:, 0] != 0, uvw[:, 0], np.where(uvw[:, 1] != 0, uvw[:, 1], uvw[:, 2]))
    uvw = uvw[first > 0]
    w = 1.0 / np.sum(uvw**2, axis=1)
    return uvw, w / w.sum()


def _in_plane_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference axes ``e1, e2`` perpendicular to unit beam directions ``d`` (in-plane angle 0 and π/2)."""
    helper = np.where(np.abs(d[:, [0]]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    e1 = np.cross(helper, d)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(d, e1)


def rotation_with_beam_along(direction: np.ndarray, in_plane: np.ndarray) -> np.ndarray:
    """Orientation matrices whose third column (the beam, lab z) is ``direction``.

    Parameters
    ----------
    direction : numpy.ndarray
        ``(n, 3)`` beam directions in crystal Cartesian axes (need not be normalised).
    in_plane : numpy.ndarray
        ``(n,)`` in-plane rotation angles, radians.

    Returns
    -------
    numpy.ndarray
        ``(n, 3, 3)`` proper rotations in py4DSTEM's ``orientation_matrix`` convention
        (columns: lab x, y, z in crystal Cartesian axes; ``g_lab = g_crystal @ R``).
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    e1, e2 = _in_plane_basis(d)
    c, s = np.cos(in_plane)[:, None], np.sin(in_plane)[:, None]
    x = c * e1 + s * e2
    y = np.cross(d, x)
    return np.stack([x, y, d], axis=-1)


def crystal_frame_x(direction: np.ndarray) -> np.ndarray:
    """py4DSTEM's default detector x axis for beam ``direction`` (crystal Cartesian axes).

    ``Crystal.parse_orientation`` with no ``proj_x`` takes ``[0, 0, -1]`` (or ``[0, 1, 0] ×
    direction`` when the beam runs along ``±z``) and orthogonalises it against the beam.

    Parameters
    ----------
    direction : numpy.ndarray
        ``(n, 3)`` beam directions.

    Returns
    -------
    numpy.ndarray
        ``(n, 3)`` unit vectors perpendicular to ``direction``.
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    along_z = np.abs(d[:, 2]) > 1 - 1e-6
    x = np.where(along_z[:, None], np.cross(np.array([0.0, 1.0, 0.0]), d), np.array([0.0, 0.0, -1.0]))
    x = np.cross(np.cross(d, x), d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def crystal_frame_angle(direction: np.ndarray, frame_of: np.ndarray | None = None) -> np.ndarray:
    """The ``in_plane`` angle of :func:`rotation_with_beam_along` that gives py4DSTEM's default frame.

    Parameters
    ----------
    direction : numpy.ndarray
        ``(n, 3)`` beam directions.
    frame_of : numpy.ndarray, optional
        ``(n, 3)`` directions whose default x axis (:func:`crystal_frame_x`) is projected onto
        the plane normal to ``direction``; default ``direction`` itself. A mis-tilted zone axis
        keeps the frame of the exact axis this way (py4DSTEM's rule jumps near ``±z``).

    Returns
    -------
    numpy.ndarray
        ``(n,)`` angles, radians.
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    e1, e2 = _in_plane_basis(d)
    x = crystal_frame_x(d if frame_of is None else frame_of)
    return np.arctan2(np.einsum("ij,ij->i", x, e2), np.einsum("ij,ij->i", x, e1))


def uniform_directions(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3)`` unit vectors uniform on the sphere."""
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def zone_axis_rotations(
    lat_inv: np.ndarray,
    rng: np.random.Generator,
    max_index: int = 3,
    tilt_deg: float = 1.0,
    distinct: bool = False,
    in_plane: str = "random",
) -> np.ndarray:
    """One zone-axis orientation per lattice.

    Parameters
    ----------
    lat_inv : numpy.ndarray
        ``(n, 3, 3)`` (or ``(3, 3)``) reciprocal bases as rows, 1/Å (py4DSTEM's
        ``Crystal.lat_inv``: ``g = hkl @ lat_inv``).
    rng : numpy.random.Generator
        Source of randomness.
    max_index : int
        Largest Miller index of the zone axes drawn (see :func:`zone_axis_candidates`).
    tilt_deg : float
        Mis-tilt: the beam leaves the zone axis by an angle uniform in ``[0, tilt_deg]`` degrees
        towards a random direction.
    distinct : bool
        Draw the zone axes without replacement (for several views of one material, so that
        each view is a different axis; needs ``n`` ≤ number of candidates).
    in_plane : {"random", "crystal"}
        Uniformly random in-plane rotation (the default: detectors do not know the crystal's
        axes), or py4DSTEM's default frame (:func:`crystal_frame_x`) of the exact zone axis,
        for experiments. The random draws are the same either way.

    Returns
    -------
    numpy.ndarray
        ``(n, 3, 3)`` orientation matrices.
    """
    check_in_plane(in_plane)
    lat_inv = np.asarray(lat_inv, dtype=np.float64)
    if lat_inv.ndim == 2:
        lat_inv = lat_inv[None]
    n = len(lat_inv)
    uvw, w = zone_axis_candidates(max_index)
    pick = uvw[rng.choice(len(uvw), size=n, p=w, replace=not distinct)].astype(np.float64)
    pick *= rng.choice([-1.0, 1.0], size=(n, 1))
    # direct basis (rows a_i with a_i . b_j = delta_ij) = inverse transpose of the reciprocal one
    lat_real = np.linalg.inv(lat_inv).transpose(0, 2, 1)
    d = np.einsum("ni,nij->nj", pick, lat_real)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    axis = d
    if tilt_deg > 0:
        perp = np.cross(d, rng.normal(size=(n, 3)))
        perp /= np.linalg.norm(perp, axis=1, keepdims=True)
        t = np.deg2rad(tilt_deg) * rng.random((n, 1))
        d = np.cos(t) * d + np.sin(t) * perp
    angle = rng.uniform(0, 2 * np.pi, n)
    if in_plane == "crystal":
        angle = crystal_frame_angle(d, frame_of=axis)
    return rotation_with_beam_along(d, angle)
