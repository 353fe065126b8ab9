"""Reduced 2D cells: Lagrange-Gauss reduction and the net type with continuous scores.

Conventions of the package's reduced cell: ``|a*| <= |b*|``, ``|a*.b*| <= |a*|^2 / 2`` and
``a*.b* >= 0``, i.e. ``60 deg <= gamma* <= 90 deg`` (a hexagonal net has ``gamma* = 60``).

The **net type** (oblique, rectangular, centred rectangular, square, hexagonal) is read from the
reduced cell with ``r = b*/a* >= 1`` and ``gamma*``: rectangular ``gamma* = 90``; centred
rectangular ``r = 1`` (rhombic cell) or ``2 r cos gamma* = 1``; square both ``r = 1`` and
``gamma* = 90``; hexagonal ``r = 1`` and ``gamma* = 60``. Each condition's deviation is measured
in units of the tolerances ``ratio_tolerance`` (relative length, default 2.5 %) and
``angle_tolerance_deg`` (default 1.5 deg; both absorb a 1 % ellipticity of the calibration) and
the score of a type is ``exp(-d**2 / 2)`` for the largest normalised deviation ``d`` of its
conditions (1 for an ideal net, 0.61 at the tolerance); the oblique score is ``1 -`` the largest
rectangular or centred-rectangular score. The hard label is the most symmetric type within the
tolerances (``d <= 1``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["NET_TYPES", "RATIO_TOLERANCE", "ANGLE_TOLERANCE_DEG", "gauss_reduce", "net_type_scores"]

#: Net-type codes, in this order (the index is the code).
NET_TYPES: tuple[str, ...] = ("oblique", "rectangular", "centred_rectangular", "square", "hexagonal")
#: Default relative tolerance of the net-type conditions on lengths.
RATIO_TOLERANCE: float = 0.025
#: Default tolerance of the net-type conditions on ``gamma*`` (degrees).
ANGLE_TOLERANCE_DEG: float = 1.5

_TINY = 1e-12


def gauss_reduce(a: np.ndarray, b: np.ndarray, max_iter: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Lagrange-Gauss reduction of 2D bases, vectorised, with this package's conventions.

    Parameters
    ----------
    a, b : numpy.ndarray
        ``(..., 2)`` basis vectors (not collinear, except where the result does not matter).
    max_iter : int
        Iteration cap (the reduction converges in ``O(log)`` steps).

    Returns
    -------
    a, b : numpy.ndarray
        The reduced basis of the same lattice: ``|a| <= |b|``, ``|a.b| <= |a|^2 / 2`` and
        ``a.b >= 0`` (``60 <= gamma <= 90`` degrees).
    """
    a = np.array(a, dtype=np.float64, copy=True)
    b = np.array(b, dtype=np.float64, copy=True)
    shape = np.broadcast_shapes(a.shape, b.shape)
    a = np.broadcast_to(a, shape).reshape(-1, 2).copy()
    b = np.broadcast_to(b, shape).reshape(-1, 2).copy()
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    scale = np.hypot(a[:, 0], a[:, 1]) * np.hypot(b[:, 0], b[:, 1])
    # collinear, zero or vanishing (< 1e-6) vectors have no reduced cell: leave them alone (the
    # iteration would not converge in floating point)
    shortest = np.minimum(np.hypot(a[:, 0], a[:, 1]), np.hypot(b[:, 0], b[:, 1]))
    active = np.flatnonzero((np.abs(cross) > 1e-9 * np.maximum(scale, _TINY)) & (shortest > 1e-6))
    for _ in range(max_iter):
        if len(active) == 0:
            break
        x, y = a[active], b[active]
        xx, yy = (x * x).sum(1), (y * y).sum(1)
        swap = yy < xx * (1 - 1e-12)
        x, y = np.where(swap[:, None], y, x), np.where(swap[:, None], x, y)
        mu = np.round((x * y).sum(1) / np.maximum((x * x).sum(1), _TINY))
        y = y - mu[:, None] * x
        a[active], b[active] = x, y
        active = active[(mu != 0) | swap]
    flip = (a * b).sum(1) < 0
    b = np.where(flip[:, None], -b, b)
    return a.reshape(shape), b.reshape(shape)


def net_type_scores(
    a_len: np.ndarray, b_len: np.ndarray, gamma_deg: np.ndarray, found: np.ndarray,
    ratio_tolerance: float = RATIO_TOLERANCE, angle_tolerance_deg: float = ANGLE_TOLERANCE_DEG,
) -> tuple[np.ndarray, np.ndarray]:
    """Continuous scores per net type and the hard label (see the module docstring).

    Parameters
    ----------
    a_len, b_len, gamma_deg : numpy.ndarray
        ``(B,)`` reduced cell (``|a*| <= |b*|``, ``60 <= gamma* <= 90``).
    found : numpy.ndarray
        ``(B,)`` bool; patterns without a net get all-zero scores and label ``-1``.
    ratio_tolerance : float
        Relative tolerance on ``b*/a* = 1`` and on ``2 r cos gamma* = 1``.
    angle_tolerance_deg : float
        Tolerance on ``gamma*`` (degrees).

    Returns
    -------
    scores : numpy.ndarray
        ``(B, 5)`` in ``[0, 1]``, columns in :data:`NET_TYPES` order.
    label : numpy.ndarray
        ``(B,)`` int64 net-type code (index into :data:`NET_TYPES`), ``-1`` where not found.
    """
    rt, at = ratio_tolerance, angle_tolerance_deg
    r = b_len / np.maximum(a_len, _TINY)
    cg = np.cos(np.radians(gamma_deg))
    d_rhomb = np.abs(r - 1) / rt
    d_rect = np.abs(90 - gamma_deg) / at
    d_cent = np.minimum(d_rhomb, np.abs(2 * r * cg - 1) / rt)
    d_square = np.maximum(d_rhomb, d_rect)
    d_hex = np.maximum(d_rhomb, np.abs(gamma_deg - 60) / at)

    def score(d):
        return np.exp(-0.5 * d**2)

    s_rect, s_cent = score(d_rect), score(d_cent)
    scores = np.stack([1 - np.maximum(s_rect, s_cent), s_rect, s_cent, score(d_square), score(d_hex)], axis=1)
    label = np.zeros(len(r), dtype=np.int64)
    label = np.where(d_cent <= 1, 2, label)
    label = np.where(d_rect <= 1, 1, label)
    label = np.where(d_square <= 1, 3, label)
    label = np.where(d_hex <= 1, 4, label)
    label = np.where(found, label, -1)
    return np.where(found[:, None], scores, 0.0), label
