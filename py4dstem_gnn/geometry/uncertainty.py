"""Net types that carry the position uncertainty of the spots.

:func:`~py4dstem_gnn.geometry.cell.net_type_scores` judges a reduced cell against fixed tolerances
(2.5 % on lengths, 1.5 deg on ``gamma*``). Detected spots are off by a fraction of a detector pixel
(0.1-0.4 px median, up to ~1 px at low dose, see ``benchmarks/results/detection.md``): on a 128-pixel
detector at 0.025 1/Å per pixel that is 1-2 % of a 0.5 1/Å spacing, enough to turn a square net into
a rectangle under the fixed tolerance. The functions here widen each condition by the uncertainty that
the position error propagates into the measured cell, and return the *set* of net types compatible
with the measurement: a nearly square net within the error is "square or rectangular", not
"rectangular".

Propagation (first order, one spot per basis vector, the conservative case): a position error of
``sigma`` (1/Å, per coordinate) on ``a*`` changes ``|a*|`` by ``sigma`` and its direction by
``sigma / |a*|`` radians, so

    sigma(b*/a*) / (b*/a*) = sqrt((sigma / a*)**2 + (sigma / b*)**2)
    sigma(gamma*)          = sqrt((sigma / a*)**2 + (sigma / b*)**2)   [radians]

A net fitted to many spots is better determined than that: ``n_effective > 1`` divides the
variance, and :func:`fit_n_effective` gives it for a least-squares fit of all indexed spots
(``1 / [(H^T H)^-1]_00``: a spot of order ``h`` pins ``a*`` ``h`` times better). Each condition's tolerance becomes ``sqrt(tol**2 + (k * sigma)**2)`` with ``k`` standard
deviations (default 2).

These are new functions: the outputs of the existing geometry functions and of
:func:`~py4dstem_gnn.geometry.descriptors.lattice_descriptors` (which the trained network reads) are
unchanged.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .cell import ANGLE_TOLERANCE_DEG, RATIO_TOLERANCE, net_type_scores

__all__ = [
    "fit_n_effective",
    "net_parameter_sigma",
    "net_type_scores_uncertain",
    "compatible_net_types",
    "net_type_sets",
]

_TINY = 1e-12


def net_parameter_sigma(
    a_len: np.ndarray, b_len: np.ndarray, position_sigma: float | np.ndarray, n_effective: float | np.ndarray = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Standard deviations of ``b*/a*`` (relative) and of ``gamma*`` (degrees) from a position error.

    Parameters
    ----------
    a_len, b_len : numpy.ndarray
        ``(B,)`` reduced-cell lengths (1/Å).
    position_sigma : float or numpy.ndarray
        Per-coordinate position error of a spot (1/Å), scalar or ``(B,)``.
    n_effective : float or numpy.ndarray
        Independent spots that determine each basis vector (1: one spot, the conservative case).

    Returns
    -------
    ratio_sigma : numpy.ndarray
        ``(B,)`` relative standard deviation of ``b*/a*``.
    gamma_sigma_deg : numpy.ndarray
        ``(B,)`` standard deviation of ``gamma*`` in degrees.
    """
    a = np.maximum(np.asarray(a_len, np.float64), _TINY)
    b = np.maximum(np.asarray(b_len, np.float64), _TINY)
    s = np.asarray(position_sigma, np.float64) / np.sqrt(np.maximum(np.asarray(n_effective, np.float64), 1.0))
    rel = np.sqrt((s / a) ** 2 + (s / b) ** 2)
    return rel, np.degrees(rel)


def _tolerances(a_len, b_len, position_sigma, n_effective, k, ratio_tolerance, angle_tolerance_deg):
    rs, gs = net_parameter_sigma(a_len, b_len, position_sigma, n_effective)
    rt = np.sqrt(ratio_tolerance**2 + (k * rs) ** 2)
    at = np.sqrt(angle_tolerance_deg**2 + (k * gs) ** 2)
    return rt, at


def net_type_scores_uncertain(
    a_len: np.ndarray, b_len: np.ndarray, gamma_deg: np.ndarray, found: np.ndarray,
    position_sigma: float | np.ndarray, n_effective: float | np.ndarray = 1.0, k: float = 2.0,
    ratio_tolerance: float = RATIO_TOLERANCE, angle_tolerance_deg: float = ANGLE_TOLERANCE_DEG,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~py4dstem_gnn.geometry.cell.net_type_scores` with tolerances widened by the position error.

    Parameters
    ----------
    a_len, b_len, gamma_deg : numpy.ndarray
        ``(B,)`` reduced cell (``|a*| <= |b*|``, ``60 <= gamma* <= 90``).
    found : numpy.ndarray
        ``(B,)`` bool.
    position_sigma : float or numpy.ndarray
        Per-coordinate spot position error (1/Å), scalar or ``(B,)``; 0 gives back the fixed-tolerance
        scores.
    n_effective : float or numpy.ndarray
        See :func:`net_parameter_sigma`.
    k : float
        Standard deviations added (in quadrature) to each tolerance.
    ratio_tolerance, angle_tolerance_deg : float
        The fixed tolerances (defaults those of :func:`~py4dstem_gnn.geometry.cell.net_type_scores`).

    Returns
    -------
    scores : numpy.ndarray
        ``(B, 5)`` in ``[0, 1]``, columns :data:`~py4dstem_gnn.geometry.cell.NET_TYPES`.
    label : numpy.ndarray
        ``(B,)`` the most symmetric type within the widened tolerances (-1 where not found).
    """
    rt, at = _tolerances(a_len, b_len, position_sigma, n_effective, k, ratio_tolerance, angle_tolerance_deg)
    return net_type_scores(np.asarray(a_len, np.float64), np.asarray(b_len, np.float64),
                           np.asarray(gamma_deg, np.float64), np.asarray(found, bool), rt, at)


def compatible_net_types(
    a_len: np.ndarray, b_len: np.ndarray, gamma_deg: np.ndarray, found: np.ndarray,
    position_sigma: float | np.ndarray, n_effective: float | np.ndarray = 1.0, k: float = 2.0,
    ratio_tolerance: float = RATIO_TOLERANCE, angle_tolerance_deg: float = ANGLE_TOLERANCE_DEG,
) -> np.ndarray:
    """Net types whose conditions hold within the widened tolerances.

    A net of a type also belongs to every type of lower symmetry (a square net is rectangular,
    centred rectangular and oblique; a hexagonal net is centred rectangular and oblique): the mask
    includes them, so "square or rectangular" reads ``mask[:, [1, 3]]``. Oblique is always compatible
    where a net was found.

    Parameters
    ----------
    See :func:`net_type_scores_uncertain`.

    Returns
    -------
    numpy.ndarray
        ``(B, 5)`` bool, columns :data:`~py4dstem_gnn.geometry.cell.NET_TYPES`; all False where not found.
    """
    rt, at = _tolerances(a_len, b_len, position_sigma, n_effective, k, ratio_tolerance, angle_tolerance_deg)
    a = np.maximum(np.asarray(a_len, np.float64), _TINY)
    g = np.asarray(gamma_deg, np.float64)
    r = np.asarray(b_len, np.float64) / a
    cg = np.cos(np.radians(g))
    d_rhomb = np.abs(r - 1) / rt
    d_rect = np.abs(90 - g) / at
    d_cent = np.minimum(d_rhomb, np.abs(2 * r * cg - 1) / rt)
    d_square = np.maximum(d_rhomb, d_rect)
    d_hex = np.maximum(d_rhomb, np.abs(g - 60) / at)
    found = np.asarray(found, bool)
    mask = np.stack([np.ones_like(r, bool), d_rect <= 1, d_cent <= 1, d_square <= 1, d_hex <= 1], axis=1)
    mask[:, 1] |= mask[:, 3]  # square -> rectangular
    mask[:, 2] |= mask[:, 3] | mask[:, 4]  # square, hexagonal -> centred rectangular
    return mask & found[:, None]


def fit_n_effective(geometry) -> np.ndarray:
    """Effective number of spots behind each fitted basis vector (least squares over the indexed spots).

    A net fitted by least squares to spots ``q = h a* + k b*`` with per-coordinate error ``sigma`` has
    ``cov(a*) = sigma**2 [(H^T H)^-1]_00`` (``H`` the ``(h, k)`` rows of the indexed spots): high orders
    pin the basis far better than one first-order spot. Returns ``1 / max([(H^T H)^-1]_00, [..]_11)``,
    at least 1 (0 where no net was found).

    Parameters
    ----------
    geometry : PatternGeometry
        From :func:`~py4dstem_gnn.geometry.pattern.pattern_geometry` (uses ``hk``, ``on_net``, ``offsets``).

    Returns
    -------
    numpy.ndarray
        ``(B,)`` float.
    """
    counts = np.diff(geometry.offsets)
    B = counts.size
    seg = np.repeat(np.arange(B), counts)
    on = np.asarray(geometry.on_net, bool)
    h = np.asarray(geometry.hk, np.float64)[on]
    sg = seg[on]
    m00 = np.bincount(sg, h[:, 0] ** 2, minlength=B)
    m11 = np.bincount(sg, h[:, 1] ** 2, minlength=B)
    m01 = np.bincount(sg, h[:, 0] * h[:, 1], minlength=B)
    det = m00 * m11 - m01**2
    ok = det > 1e-9
    inv00 = np.where(ok, m11 / np.where(ok, det, 1.0), 1.0)
    inv11 = np.where(ok, m00 / np.where(ok, det, 1.0), 1.0)
    n_eff = np.maximum(1.0 / np.maximum(np.maximum(inv00, inv11), _TINY), 1.0)
    return np.where(np.asarray(geometry.found, bool), n_eff, 0.0)


def net_type_sets(
    pointlists: Sequence[np.ndarray], position_sigma: float | np.ndarray, k: float = 2.0,
    use_fit_residual: bool = True, least_squares: bool = True,
) -> dict[str, np.ndarray]:
    """Measure the nets of pointlists and their uncertain net types in one call.

    Parameters
    ----------
    pointlists : sequence of numpy.ndarray
        ``(n_i, 3)`` ``qx, qy`` (1/Å, direct beam included) and intensity.
    position_sigma : float or numpy.ndarray
        Per-coordinate spot position error (1/Å): e.g. the measured detection error of the detector
        (``benchmarks/results/detection.md``), scalar or per pattern.
    k : float
        Standard deviations added to each tolerance.
    use_fit_residual : bool
        Use ``max(position_sigma, rms_residual / sqrt(2))`` per pattern, so that a net that fits its
        spots worse than the stated error widens its own tolerances.
    least_squares : bool
        Propagate the error through the least-squares fit of all indexed spots
        (:func:`fit_n_effective`); False: one spot per basis vector (conservative).

    Returns
    -------
    dict
        ``net_type`` (fixed-tolerance label, as :func:`~py4dstem_gnn.geometry.pattern.pattern_geometry`),
        ``net_type_uncertain`` (most symmetric compatible type), ``compatible`` ``(B, 5)`` bool,
        ``scores`` ``(B, 5)``, ``a_len``, ``b_len``, ``gamma_deg``, ``found``, ``position_sigma``.
    """
    from .pattern import pattern_geometry

    g = pattern_geometry(pointlists)
    sigma = np.broadcast_to(np.asarray(position_sigma, np.float64), g.a_len.shape).copy()
    if use_fit_residual:
        sigma = np.maximum(sigma, np.asarray(g.rms_residual, np.float64) / np.sqrt(2.0))
    n_eff = np.maximum(fit_n_effective(g), 1.0) if least_squares else 1.0
    scores, label = net_type_scores_uncertain(g.a_len, g.b_len, g.gamma_deg, g.found, sigma, n_eff, k=k)
    mask = compatible_net_types(g.a_len, g.b_len, g.gamma_deg, g.found, sigma, n_eff, k=k)
    return {"net_type": g.net_type, "net_type_uncertain": label, "compatible": mask, "scores": scores,
            "a_len": g.a_len, "b_len": g.b_len, "gamma_deg": g.gamma_deg, "found": g.found,
            "position_sigma": sigma, "n_effective": n_eff * np.ones_like(sigma)}


