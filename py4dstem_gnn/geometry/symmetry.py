"""Intensity symmetry, centring, missing rows and off-net (higher-Laue-zone) spots of a fitted net.

Everything here acts on a padded batch (:class:`~py4dstem_gnn.geometry.net.PaddedSpots`) and its
fitted nets (:class:`~py4dstem_gnn.geometry.net.NetFit`), vectorised over patterns and spots: the
indexed spots of all patterns are keyed by ``(pattern, h, k)`` in one sorted array and every
symmetry image is found with one binary search.

Physics that decides how these numbers should be read
-----------------------------------------------------
* **Friedel's law.** Kinematic zero-order patterns are centrosymmetric, ``I(g) = I(-g)``: a
  3-fold axis looks 6-fold and ``3m`` looks like ``6mm``, so from the zero-order intensities alone
  trigonal and hexagonal crystals are told apart only where dynamical scattering breaks Friedel's
  law (the 2-fold residual :data:`SYMMETRY_OPERATIONS` ``"2"`` measures it) or through
  higher-Laue-zone spots.
* **Higher Laue zones.** Layer ``n`` of the reciprocal lattice, a height ``n H`` above the
  zero-order plane (``H = 1 / t``, ``t`` the lattice repeat along the beam), meets the Ewald sphere
  at ``G ~ sqrt(2 n H / lambda)``: ``H ~ lambda G**2 / 2``. At 300 kV (``lambda = 0.0197 Å``) and
  ``k_max = 2 1/Å`` a first-order ring falls on the detector only for ``t`` above ~25 Å at an exact
  zone axis, and down to ~10 Å once the excitation-error window (a few 0.01 1/Å) and a small
  mis-tilt are counted. Off-net spots that share one fractional offset from the net (a shifted copy
  of the net, as a Laue layer projects) are taken as a Laue layer; their RMS radius gives ``H``.
  Scattered spurious spots do not share an offset.
* **Absences are soft.** Glide planes and screw axes extinguish rows of reflections kinematically,
  but double diffraction fills them in Bloch-wave (and real) patterns whenever the forbidden
  reflection is reached by a sum of allowed ones. Row occupancies and centring fractions are
  therefore continuous features, not rules. (The package's stored Bloch-wave sets take their
  beams from the kinematic reflections with ``|F|^2 > 1e-5``, so kinematically forbidden
  reflections are never beams there and stay absent; real patterns are not so clean.)

Intensity residuals use amplitudes ``A = sqrt(I / I_max)`` of the indexed spots within the radius
``r_cut`` (97 % of the largest indexed ``|q|``; isometries keep a spot inside it):
``R = sum_j |A_j - A(op g_j)| / sum_j (A_j + A(op g_j))`` with ``A = 0`` for an absent image. 0
is a perfect symmetry, 1 no overlap. Where the net itself is not invariant under the operation
(its index-space matrix is not integral within :data:`LATTICE_TOLERANCE`), or no net was found,
the residual is 1.
"""

from __future__ import annotations

import numpy as np

from ..data.kinematic import electron_wavelength
from .net import GeometryConfig, NetFit, PaddedSpots

__all__ = [
    "SYMMETRY_OPERATIONS",
    "ROW_DIRECTIONS",
    "LATTICE_TOLERANCE",
    "symmetry_residuals",
    "net_statistics",
    "off_net_spots",
]

#: Operations whose intensity residuals are measured: rotations by 360/n degrees and mirrors whose
#: line runs along (or perpendicular to) ``a*``, ``b*`` and the diagonals ``a* + b*``, ``a* - b*``.
SYMMETRY_OPERATIONS: tuple[str, ...] = (
    "2", "3", "4", "6", "m_a", "m_perp_a", "m_b", "m_perp_b", "m_a+b", "m_a-b",
)
#: Rows through the origin whose odd and even orders are counted, as (h, k) steps.
ROW_DIRECTIONS: tuple[tuple[int, int], ...] = ((1, 0), (0, 1), (1, 1), (1, -1))
#: Largest deviation of an operation's index-space matrix from integers for the net to be invariant.
LATTICE_TOLERANCE: float = 0.05

_TINY = 1e-12
_W = 1 << 14
_OFF = 1 << 13


def _op_matrices(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(B, n_ops, 2, 2)`` Cartesian matrices (acting on column vectors) of the operations."""
    B = len(a)
    ops = np.empty((B, len(SYMMETRY_OPERATIONS), 2, 2))
    for i, n in enumerate((2, 3, 4, 6)):
        t = 2 * np.pi / n
        ops[:, i] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    lines = [a, a, b, b, a + b, a - b]
    perp = [False, True, False, True, False, False]
    for j, (v, p) in enumerate(zip(lines, perp)):
        phi = np.arctan2(v[:, 1], v[:, 0]) + (np.pi / 2 if p else 0.0)
        c, s = np.cos(2 * phi), np.sin(2 * phi)
        ops[:, 4 + j, 0, 0], ops[:, 4 + j, 0, 1] = c, s
        ops[:, 4 + j, 1, 0], ops[:, 4 + j, 1, 1] = s, -c
    return ops


def _keys(hk: np.ndarray) -> np.ndarray:
    B = hk.shape[0]
    h = np.clip(hk[..., 0], -_OFF + 1, _OFF - 1) + _OFF
    k = np.clip(hk[..., 1], -_OFF + 1, _OFF - 1) + _OFF
    return (np.arange(B)[:, None] * _W + h) * _W + k


class _IndexedSet:
    """The distinct indexed spots of a batch: sorted keys ``(pattern, h, k)`` with amplitudes."""

    def __init__(self, hk: np.ndarray, use: np.ndarray, amp: np.ndarray):
        keys = _keys(hk)
        flat = np.flatnonzero(use.ravel())
        k, a = keys.ravel()[flat], amp.ravel()[flat]
        order = np.lexsort((-a, k))  # brightest first among duplicates
        k, a, flat = k[order], a[order], flat[order]
        first = np.concatenate([[True], k[1:] != k[:-1]]) if len(k) else np.zeros(0, bool)
        self.keys, self.amp = k[first], a[first]
        distinct = np.zeros(use.size, dtype=bool)
        distinct[flat[first]] = True
        self.distinct = distinct.reshape(use.shape)  # one spot per (pattern, h, k)

    def lookup(self, hk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Amplitude at ``hk`` (``(B, N, 2)``) and whether a spot is there."""
        if len(self.keys) == 0:
            return np.zeros(hk.shape[:-1]), np.zeros(hk.shape[:-1], bool)
        k = _keys(hk)
        pos = np.minimum(np.searchsorted(self.keys, k), len(self.keys) - 1)
        hit = self.keys[pos] == k
        return np.where(hit, self.amp[pos], 0.0), hit


def _cut_radius(spots: PaddedSpots, fit: NetFit) -> np.ndarray:
    r = spots.radius
    return 0.97 * np.where(fit.on_net, r, 0.0).max(axis=1)


def symmetry_residuals(spots: PaddedSpots, fit: NetFit) -> tuple[np.ndarray, np.ndarray]:
    """Intensity residuals under :data:`SYMMETRY_OPERATIONS`.

    Parameters
    ----------
    spots : PaddedSpots
    fit : NetFit

    Returns
    -------
    residual : numpy.ndarray
        ``(B, n_ops)`` in ``[0, 1]`` (1 where the net is not invariant or no net was found).
    lattice_invariant : numpy.ndarray
        ``(B, n_ops)`` bool, the net maps onto itself under the operation.
    """
    B = len(fit.a)
    n_ops = len(SYMMETRY_OPERATIONS)
    if B == 0:
        return np.zeros((0, n_ops)), np.zeros((0, n_ops), bool)
    amp = spots.amplitude
    use = fit.on_net & (spots.radius <= _cut_radius(spots, fit)[:, None])
    table = _IndexedSet(fit.hk, fit.on_net, amp)
    basis = np.stack([fit.a, fit.b], axis=1)  # rows a, b
    det = basis[:, 0, 0] * basis[:, 1, 1] - basis[:, 0, 1] * basis[:, 1, 0]
    safe = np.where(np.abs(det) > _TINY, det, 1.0)
    inv = np.stack([np.stack([basis[:, 1, 1], -basis[:, 0, 1]], -1),
                    np.stack([-basis[:, 1, 0], basis[:, 0, 0]], -1)], axis=1) / safe[:, None, None]
    ops = _op_matrices(fit.a, fit.b)
    # row vectors: q' = q @ R^T, q = hk @ basis  ->  hk' = hk @ (basis @ R^T @ inv)
    T = np.einsum("bij,bokj,bkl->boil", basis, ops, inv)
    Ti = np.round(T)
    invariant = (np.abs(T - Ti).max(axis=(2, 3)) < LATTICE_TOLERANCE) & fit.found[:, None]
    hk = fit.hk.astype(np.int64)
    a_use = amp * use
    resid = np.ones((B, n_ops))
    Ti = Ti.astype(np.int64)
    h, k = hk[..., 0], hk[..., 1]
    for o in range(n_ops):
        t = Ti[:, o, :, :, None]  # (B, 2, 2, 1)
        img = np.stack([h * t[:, 0, 0] + k * t[:, 1, 0], h * t[:, 0, 1] + k * t[:, 1, 1]], axis=-1)
        a_img, _ = table.lookup(img)
        a_img = a_img * use
        num = np.abs(a_use - a_img).sum(axis=1)
        den = (a_use + a_img).sum(axis=1)
        resid[:, o] = np.where(invariant[:, o] & (den > 0), num / np.maximum(den, _TINY), 1.0)
    return resid, invariant


def net_statistics(spots: PaddedSpots, fit: NetFit) -> dict[str, np.ndarray]:
    """Centring fractions, row occupancies and how completely the net is filled.

    Returns
    -------
    dict
        ``"centring"`` ``(B, 3)``: amplitude-weighted fraction of the distinct indexed spots with
        ``h`` even, ``k`` even, ``h + k`` even (a net whose odd rows are systematically missing
        scores 1 on one of them; the reduced net of the reflections present is generated by
        them, so values near 1 mean a few stray spots forced a finer net);
        ``"row_odd"``, ``"row_even"`` ``(B, 4)``: fraction of the odd and even orders ``n t``
        (``t`` in :data:`ROW_DIRECTIONS`, ``|n t| <= r_cut``) where a spot is indexed (0 where
        the row has no such order; glide and screw absences empty the odd orders of one row);
        ``"fill"`` ``(B,)``: distinct indexed spots over the net points within ``r_cut``
        (origin excluded), clipped to ``[0, 2]``; ``"r_cut"`` ``(B,)`` (1/Å).
    """
    B = len(fit.a)
    amp = spots.amplitude
    r_cut = _cut_radius(spots, fit)
    table = _IndexedSet(fit.hk, fit.on_net, amp)
    distinct = table.distinct & (spots.radius <= r_cut[:, None])
    h, k = fit.hk[..., 0], fit.hk[..., 1]
    w = amp * distinct
    wsum = np.maximum(w.sum(axis=1), _TINY)
    centring = np.stack([
        (w * (h % 2 == 0)).sum(axis=1) / wsum,
        (w * (k % 2 == 0)).sum(axis=1) / wsum,
        (w * ((h + k) % 2 == 0)).sum(axis=1) / wsum,
    ], axis=1)
    centring = np.where(fit.found[:, None], centring, 0.0)
    row_odd = np.zeros((B, len(ROW_DIRECTIONS)))
    row_even = np.zeros((B, len(ROW_DIRECTIONS)))
    for i, (th, tk) in enumerate(ROW_DIRECTIONS):
        on_row = distinct & (h * tk - k * th == 0)
        n = (h * th + k * tk) // (th * th + tk * tk)
        step = np.hypot(*(th * fit.a + tk * fit.b).T)
        n_max = np.floor(r_cut / np.maximum(step, _TINY))
        e_odd = 2 * np.ceil(n_max / 2)
        e_even = 2 * np.floor(n_max / 2)
        p_odd = (on_row & (n % 2 != 0)).sum(axis=1)
        p_even = (on_row & (n % 2 == 0) & (n != 0)).sum(axis=1)
        row_odd[:, i] = np.where(e_odd > 0, p_odd / np.maximum(e_odd, 1), 0.0)
        row_even[:, i] = np.where(e_even > 0, p_even / np.maximum(e_even, 1), 0.0)
    area = np.abs(fit.a[:, 0] * fit.b[:, 1] - fit.a[:, 1] * fit.b[:, 0])
    expected = np.pi * r_cut**2 / np.maximum(area, _TINY) - 1
    fill = np.where(fit.found & (expected > 0), distinct.sum(axis=1) / np.maximum(expected, 1), 0.0)
    found = fit.found[:, None]
    return {
        "centring": centring,
        "row_odd": np.where(found, np.clip(row_odd, 0, 1), 0.0),
        "row_even": np.where(found, np.clip(row_even, 0, 1), 0.0),
        "fill": np.clip(fill, 0.0, 2.0),
        "r_cut": r_cut,
    }


def off_net_spots(
    spots: PaddedSpots, fit: NetFit, config: GeometryConfig | None = None,
    coherence_tolerance: float = 0.1, min_layer_spots: int = 3, max_off: int = 32,
) -> dict[str, np.ndarray]:
    """Spots off the net and the Laue-layer spacing a coherent group of them implies.

    Parameters
    ----------
    spots : PaddedSpots
    fit : NetFit
    config : GeometryConfig, optional
        ``voltage`` sets the wavelength.
    coherence_tolerance : float
        Two off-net spots share a layer if their fractional offsets from the net agree within
        this (per axis, modulo 1).
    min_layer_spots : int
        Smallest coherent group taken as a Laue layer.
    max_off : int
        At most this many off-net spots (nearest the origin) per pattern are grouped.

    Returns
    -------
    dict
        ``"n_off"`` ``(B,)`` off-net spots (all spots where no net was found);
        ``"frac_off"``, ``"amp_off"`` their share of the spots and of the amplitude;
        ``"layer_spots"`` size of the largest coherent group (0 where no net);
        ``"layer_found"`` bool, ``layer_spots >= min_layer_spots``;
        ``"layer_radius"`` RMS ``|q|`` of that group (1/Å, 0 if none);
        ``"layer_spacing"`` ``H = lambda G^2 / 2`` (1/Å, 0 if none);
        ``"layer_repeat"`` ``1 / H`` (Å, 0 if none).
    """
    cfg = config or GeometryConfig()
    lam = electron_wavelength(cfg.voltage)
    m = spots.mask
    off = m & ~fit.on_net
    n = np.maximum(m.sum(axis=1), 1)
    amp = spots.amplitude
    n_off = off.sum(axis=1)
    out = {
        "n_off": n_off.astype(np.float64),
        "frac_off": n_off / n,
        "amp_off": (amp * off).sum(axis=1) / np.maximum(amp.sum(axis=1), _TINY),
    }
    B = len(fit.a)
    L = int(min(max_off, max(1, n_off.max() if B else 1)))
    # compact the off-net spots of each pattern (they are sorted by radius already)
    order = np.argsort(~off, axis=1, kind="stable")[:, :L]
    sel = np.take_along_axis(off, order, axis=1) & fit.found[:, None]
    phi = np.take_along_axis(fit.frac, order[..., None], axis=1)
    phi = phi - np.round(phi)
    r = np.take_along_axis(spots.radius, order, axis=1)
    dphi = phi[:, :, None, :] - phi[:, None, :, :]
    dphi = np.abs(dphi - np.round(dphi)).max(axis=-1)
    adj = (dphi < coherence_tolerance) & sel[:, :, None] & sel[:, None, :]
    size = adj.sum(axis=2)
    best = np.argmax(size, axis=1)
    group = adj[np.arange(B), best]
    n_layer = group.sum(axis=1)
    found = n_layer >= min_layer_spots
    r_rms = np.sqrt((r**2 * group).sum(axis=1) / np.maximum(n_layer, 1))
    H = lam * r_rms**2 / 2
    out.update(
        layer_spots=n_layer.astype(np.float64),
        layer_found=found,
        layer_radius=np.where(found, r_rms, 0.0),
        layer_spacing=np.where(found, H, 0.0),
        layer_repeat=np.where(found & (H > 0), 1.0 / np.maximum(H, _TINY), 0.0),
    )
    return out
