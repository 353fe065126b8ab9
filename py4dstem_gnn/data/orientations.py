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

from typing import Sequence

import numpy as np

__all__ = ["zone_axis_candidates", "zone_axis_rotations", "rotation_with_beam_along", "crystal_frame_x",
           "crystal_frame_angle", "uniform_directions", "IN_PLANE", "check_in_plane", "axis_lengths", "zone_axis_rotation",
           "AXIS_WEIGHT_POWER"]

#: Exponent ``p`` of the zone-axis weights ``|t_uvw|^-p`` (conventional axes). The areal density
#: of zero-order Laue-zone spots is ``∝ 1/|t_uvw|``; ``p = 2`` weighs axes by the square of it, which
#: concentrates draws on the low-index axes microscopists tilt to (cubic P, max index 3: ⟨100⟩,
#: ⟨110⟩ and ⟨111⟩ together get 37 % of draws, against 19 % with ``p = 1``).
AXIS_WEIGHT_POWER: float = 2.0

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


def axis_lengths(uvw: np.ndarray, conv_map: np.ndarray, lat_real: np.ndarray) -> np.ndarray:
    """Length (Å) of the shortest lattice vector along each conventional axis of each material.

    Parameters
    ----------
    uvw : numpy.ndarray
        ``(c, 3)`` int conventional directions.
    conv_map : numpy.ndarray
        ``(n, 3, 3)`` conventional -> primitive index maps (:mod:`py4dstem_gnn.data.conventional`).
    lat_real : numpy.ndarray
        ``(n, 3, 3)`` primitive direct bases (rows, Å).

    Returns
    -------
    numpy.ndarray
        ``(n, c)`` lengths ``|t_uvw|``: a centred lattice has lattice points half-way (or a third of
        the way) along some conventional axes, e.g. fcc [110], and those count.
    """
    prim = np.einsum("ci,nij->ncj", uvw.astype(np.float64), conv_map)  # primitive indices, integral
    pint = np.rint(prim).astype(np.int64)
    g = np.gcd.reduce(np.abs(pint), axis=-1)
    g = np.where(g == 0, 1, g)
    t = np.einsum("nci,nij->ncj", pint / g[..., None], lat_real)
    return np.linalg.norm(t, axis=-1)


def _tilted(d: np.ndarray, tilt_deg: float, rng: np.random.Generator) -> np.ndarray:
    """Beam directions leaving unit vectors ``d`` by an angle uniform in ``[0, tilt_deg]``, random azimuth."""
    if tilt_deg <= 0:
        return d
    n = len(d)
    perp = np.cross(d, rng.normal(size=(n, 3)))
    perp /= np.linalg.norm(perp, axis=1, keepdims=True)
    t = np.deg2rad(tilt_deg) * rng.random((n, 1))
    return np.cos(t) * d + np.sin(t) * perp


def zone_axis_rotation(uvw: Sequence[int] | np.ndarray, lat_inv: np.ndarray, conv_map: np.ndarray | None = None,
                       in_plane: float = 0.0) -> np.ndarray:
    """The orientation matrix that puts the beam exactly along one named zone axis.

    Parameters
    ----------
    uvw : sequence of int
        The axis, in indices of the conventional standard cell when ``conv_map`` is given (e.g.
        ``[0, 0, 1]`` of fcc gold), else of the simulated cell.
    lat_inv : numpy.ndarray
        ``(3, 3)`` reciprocal basis (rows, 1/Å) of the simulated cell.
    conv_map : numpy.ndarray, optional
        ``(3, 3)`` conventional -> primitive index map (:mod:`py4dstem_gnn.data.conventional`).
    in_plane : float
        In-plane rotation angle, radians.

    Returns
    -------
    numpy.ndarray
        ``(3, 3)`` py4DSTEM orientation matrix (third column: the beam direction).
    """
    idx = np.asarray(uvw, dtype=np.float64).reshape(3)
    if conv_map is not None:
        idx = idx @ np.asarray(conv_map, dtype=np.float64)
    lat_real = np.linalg.inv(np.asarray(lat_inv, dtype=np.float64)).T
    return rotation_with_beam_along((idx @ lat_real)[None], np.array([float(in_plane)]))[0]


def zone_axis_rotations(
    lat_inv: np.ndarray,
    rng: np.random.Generator,
    max_index: int = 3,
    tilt_deg: float = 1.0,
    distinct: bool = False,
    in_plane: str = "random",
    conv_map: np.ndarray | None = None,
    weight_power: float = AXIS_WEIGHT_POWER,
    return_axes: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One zone-axis orientation per lattice.

    Parameters
    ----------
    lat_inv : numpy.ndarray
        ``(n, 3, 3)`` (or ``(3, 3)``) reciprocal bases as rows, 1/Å, of the cells the patterns are
        simulated in (py4DSTEM's ``Crystal.lat_inv``: ``g = hkl @ lat_inv``).
    rng : numpy.random.Generator
        Source of randomness.
    max_index : int
        Largest index of the zone axes drawn.
    tilt_deg : float
        Mis-tilt: the beam leaves the zone axis by an angle uniform in ``[0, tilt_deg]`` degrees
        towards a random direction.
    distinct : bool
        Draw the zone axes without replacement (for several views of one material, so that
        each view is a different axis; needs ``n`` ≤ number of candidates).
    in_plane : {"random", "crystal"}
        Uniformly random in-plane rotation (the default: detectors do not know the crystal's
        axes), or py4DSTEM's default frame (:func:`crystal_frame_x`) of the exact zone axis,
        for experiments.
    conv_map : numpy.ndarray, optional
        ``(n, 3, 3)`` (or ``(3, 3)``) conventional -> primitive index maps
        (:class:`py4dstem_gnn.data.conventional.ConventionalTable`). Given, the axes are ``[uvw]``
        of the **conventional** standard cell, drawn with probability ∝ ``|t_uvw|^-weight_power``
        (:func:`axis_lengths`), as microscopists record patterns. Without it, the legacy rule:
        ``[uvw]`` of the simulated (primitive) cell with probability ∝ ``1/(u² + v² + w²)``.
    weight_power : float
        Exponent of the axis weights ``|t_uvw|^-p`` (conventional axes only); see
        :data:`AXIS_WEIGHT_POWER`.
    return_axes : bool
        Also return the drawn axes (conventional indices when ``conv_map`` is given).

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        ``(n, 3, 3)`` orientation matrices; with ``return_axes``, also ``(n, 3)`` int axes (sign as
        drawn).
    """
    check_in_plane(in_plane)
    lat_inv = np.asarray(lat_inv, dtype=np.float64)
    if lat_inv.ndim == 2:
        lat_inv = lat_inv[None]
    n = len(lat_inv)
    # direct basis (rows a_i with a_i . b_j = delta_ij) = inverse transpose of the reciprocal one
    lat_real = np.linalg.inv(lat_inv).transpose(0, 2, 1)
    uvw, w = zone_axis_candidates(max_index)
    if conv_map is None:
        pick_idx = (rng.choice(len(uvw), size=n, p=w, replace=not distinct) if distinct
                    else rng.choice(len(uvw), size=n, p=w))
        axes = uvw[pick_idx]
        prim = axes.astype(np.float64)
    else:
        conv_map = np.broadcast_to(np.asarray(conv_map, dtype=np.float64), (n, 3, 3))
        weights = axis_lengths(uvw, conv_map, lat_real) ** -float(weight_power)  # (n, c)
        logw = np.log(weights / weights.sum(axis=1, keepdims=True))
        if distinct:
            # Gumbel top-k: the first n of the sorted perturbed keys of material 0 (one lattice, n views)
            if not np.allclose(conv_map, conv_map[:1]) or not np.allclose(lat_real, lat_real[:1]):
                raise ValueError("distinct=True draws several views of one lattice: pass one lattice n times")
            keys = logw[0] + rng.gumbel(size=logw.shape[1])
            pick_idx = np.argsort(-keys)[:n]
        else:
            gum = logw + rng.gumbel(size=logw.shape)
            pick_idx = np.argmax(gum, axis=1)
        axes = uvw[pick_idx]
        prim = np.einsum("ni,nij->nj", axes.astype(np.float64), conv_map)
    sign = rng.choice([-1, 1], size=(n, 1))
    axes = axes * sign
    d = np.einsum("ni,nij->nj", prim * sign, lat_real)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    axis = d
    d = _tilted(d, tilt_deg, rng)
    angle = rng.uniform(0, 2 * np.pi, n)
    if in_plane == "crystal":
        angle = crystal_frame_angle(d, frame_of=axis)
    rot = rotation_with_beam_along(d, angle)
    return (rot, axes.astype(np.int64)) if return_axes else rot
