"""Robust reduction of the 2D reciprocal net of a spot pattern, vectorised over a batch.

A zone-axis pattern is a section of the reciprocal lattice: the zero-order Laue zone (ZOLZ) is a
2D net ``q = h a* + k b*`` through the direct beam, with a few spots off it (higher-order Laue
zones, spurious detections). This module finds that net from the positions alone:

1. **Padding** (:func:`pad_pointlists`): the direct beam (the spot nearest ``q = 0`` within
   ``beam_tolerance``, as :func:`py4dstem_gnn.features.split_direct_beam`) is removed and the
   diffracted spots of each pattern are padded into ``(B, N)`` arrays sorted by ``|q|``.
2. **Candidate net vectors**: every difference of two spots of the ZOLZ is a net vector, and
   the direct beam (``q = 0``) is a net point, so all pairwise differences of the ``n_inner``
   spots nearest the origin (origin included), with one sign (both near the ``y`` axis, so that
   no cluster is split at the half-plane boundary), are binned on a grid of
   pitch ``grid_fraction`` times the pattern's median nearest-neighbour distance. Net vectors
   come back from many pairs, a spurious spot's differences from one: the local maxima of the
   3 x 3-smoothed bin counts are the candidates, scored by their support.
3. **Basis choice**: for every pair of the ``n_candidates`` best candidates, the ``n_eval``
   inner spots with integer fractional coordinates (within ``index_tolerance`` on both axes) are
   counted, each weighted by ``(I / I_max) ** weight_power`` (strong spots decide; weak ones,
   often higher-Laue-zone or spurious, count less). A finer net indexes at least as much as the
   true one, a coarser one (a sub-lattice) loses about half or more, so the pair spanning the
   *largest* cell among those within ``fraction_slack`` (of the total weight) of the best count
   is taken: the net of the reflections present, tolerant to a few spurious and missing spots.
4. **Refinement**: the basis is Lagrange-Gauss reduced, spots are indexed out to growing radii
   and ``q = h a* + k b* + c`` is fitted by least squares (a small origin offset ``c`` absorbs a
   mis-centred direct beam), three times.
5. **Conventions**: the reduced cell has ``|a*| <= |b*|`` and ``a*.b* >= 0``, i.e.
   ``60 deg <= gamma* <= 90 deg``; the common sign of ``(a*, b*)`` puts the intensity-weighted
   centroid of the spots on the ``+(a* + b*)`` side (Friedel-symmetric patterns: arbitrary).
   The *canonical frame* rotates ``a*`` onto ``+x`` (:attr:`NetFit.frame_angle`);
   :attr:`NetFit.handedness` is the sign of ``a* x b*`` (a mirror image has the other sign).
   For square and hexagonal nets the choice among the equivalent shortest vectors is arbitrary.

The net type and its scores are read from the reduced cell (:mod:`~py4dstem_gnn.geometry.cell`).

Calibration: an isotropic scale error changes ``a*, b*`` but not the ratios, the angle or the
indices; an ellipticity ``e`` changes ``b*/a*`` by up to ``2 e`` and ``gamma*`` by up to ``e``
radians. Patterns whose spots all lie on one line (a systematic row) get ``found = False`` and
``is_row = True`` with ``a*`` the row spacing.

Limits: where higher-Laue-zone spots interleave with the zero-order net (a layer spacing below the
excitation-error window, common along long axes), positions alone cannot tell the layers apart and
a finer net that indexes both may be returned; a single weak reflection on a finer net is not
enough to refine it (it cannot be told from a spurious spot). ``benchmarks/lattice_reduction.py``
measures both on Bloch-wave patterns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..features import DEFAULT_BEAM_TOLERANCE
from .cell import ANGLE_TOLERANCE_DEG, RATIO_TOLERANCE, gauss_reduce

__all__ = [
    "GeometryConfig",
    "PaddedSpots",
    "NetFit",
    "pad_pointlists",
    "fit_nets",
]

_TINY = 1e-12


@dataclass(frozen=True)
class GeometryConfig:
    """Parameters of the pattern-geometry analysis.

    Attributes
    ----------
    beam_tolerance : float
        Distance (1/Å) within which the spot nearest ``q = 0`` is the direct beam.
    max_spots : int
        At most this many diffracted spots (the nearest to the origin) are analysed per pattern.
    n_inner : int
        Spots nearest the origin whose pairwise differences give the candidate net vectors.
    n_eval : int
        Spots nearest the origin on which candidate bases are scored.
    n_candidates : int
        Candidate vectors kept per pattern (``n (n - 1) / 2`` bases are scored).
    grid_fraction : float
        Bin pitch of the difference vectors, as a fraction of the median nearest-neighbour
        distance (clipped to ``[grid_min, grid_max]`` 1/Å).
    grid_min, grid_max : float
        Limits of the bin pitch, 1/Å.
    index_tolerance : float
        A spot is on the net if both fractional coordinates are within this of an integer.
    fraction_slack : float
        Bases whose weighted count of indexed inner spots is at least ``best - fraction_slack``
        times the total weight compete on cell area.
    weight_power : float
        Inner spots weigh ``(I / I_max) ** weight_power`` in that count: strong spots decide,
        weak ones (often higher-Laue-zone or spurious) count less.
    min_sine : float
        Smallest ``|sin|`` of the angle between two basis vectors.
    ratio_tolerance : float
        Relative tolerance on ``b*/a* = 1`` (and ``2 r cos gamma* = 1``) for the net type.
    angle_tolerance_deg : float
        Tolerance on ``gamma*`` (degrees) for the net type.
    row_tolerance : float
        Spots lie on one row if their RMS distance from the best line is below this fraction of
        their RMS radius.
    chunk_size : int
        Patterns analysed per vectorised step (patterns of similar size are grouped).
    voltage : float
        Accelerating voltage (V), for the Laue-layer spacing ``H = lambda G**2 / 2``.
    """

    beam_tolerance: float = DEFAULT_BEAM_TOLERANCE
    max_spots: int = 256
    n_inner: int = 16
    n_eval: int = 24
    n_candidates: int = 8
    grid_fraction: float = 0.15
    grid_min: float = 0.002
    grid_max: float = 0.02
    index_tolerance: float = 0.2
    fraction_slack: float = 0.1
    weight_power: float = 0.25
    min_sine: float = 0.2
    ratio_tolerance: float = RATIO_TOLERANCE
    angle_tolerance_deg: float = ANGLE_TOLERANCE_DEG
    row_tolerance: float = 0.02
    chunk_size: int = 1024
    voltage: float = 300e3


@dataclass
class PaddedSpots:
    """Diffracted spots of ``B`` patterns padded to ``N``, sorted by ``|q|`` within each pattern.

    Attributes
    ----------
    q : numpy.ndarray
        ``(B, N, 2)`` float64 positions (1/Å); zero at padded slots.
    intensity : numpy.ndarray
        ``(B, N)`` float64 intensities clipped at 0; zero at padded slots.
    mask : numpy.ndarray
        ``(B, N)`` bool, True for real spots.
    source : numpy.ndarray
        ``(B, N)`` int64 row of each spot in the concatenated input (``-1`` at padded slots).
    n_spots : numpy.ndarray
        ``(B,)`` number of diffracted spots (before the ``max_spots`` cap).
    """

    q: np.ndarray
    intensity: np.ndarray
    mask: np.ndarray
    source: np.ndarray
    n_spots: np.ndarray

    @property
    def radius(self) -> np.ndarray:
        """``(B, N)`` ``|q|`` (1/Å)."""
        return np.hypot(self.q[..., 0], self.q[..., 1])

    @property
    def amplitude(self) -> np.ndarray:
        """``(B, N)`` ``sqrt(I / I_max)`` per pattern (0 at padded slots)."""
        imax = np.max(np.where(self.mask, self.intensity, 0.0), axis=1, keepdims=True)
        return np.sqrt(self.intensity / np.maximum(imax, _TINY)) * self.mask


def _flatten(pointlists: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    counts = np.fromiter((len(p) for p in pointlists), dtype=np.int64, count=len(pointlists))
    if counts.sum() == 0:
        return np.zeros((0, 3)), counts
    flat = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in pointlists])
    return flat, counts


def pad_pointlists(
    pointlists: Sequence[np.ndarray], config: GeometryConfig | None = None
) -> tuple[PaddedSpots, np.ndarray]:
    """Remove the direct beam and pad the diffracted spots (vectorised over all spots).

    Parameters
    ----------
    pointlists : sequence of numpy.ndarray
        ``(n_i, 3)`` arrays ``qx, qy`` (1/Å, origin at the direct beam), intensity.
    config : GeometryConfig, optional
        ``beam_tolerance`` and ``max_spots`` are used.

    Returns
    -------
    spots : PaddedSpots
        ``source`` indexes the concatenation of ``pointlists``.
    is_beam : numpy.ndarray
        ``(S,)`` bool over the concatenated input rows: True for each pattern's direct beam.
    """
    cfg = config or GeometryConfig()
    flat, counts = _flatten(pointlists)
    B = len(counts)
    seg = np.repeat(np.arange(B), counts)
    r2 = flat[:, 0] ** 2 + flat[:, 1] ** 2 if len(flat) else np.zeros(0)
    order = np.lexsort((r2, seg))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if B else np.zeros(0, np.int64)
    is_beam = np.zeros(len(flat), dtype=bool)
    has = counts > 0
    first = order[starts[has]]
    is_beam[first] = r2[first] <= cfg.beam_tolerance**2
    keep = order[~is_beam[order]]  # diffracted spots, by pattern then radius
    kseg = seg[keep]
    n_diff = np.bincount(kseg, minlength=B).astype(np.int64)
    kstart = np.concatenate([[0], np.cumsum(n_diff)[:-1]]) if B else np.zeros(0, np.int64)
    rank = np.arange(len(keep)) - np.repeat(kstart, n_diff)
    N = int(max(1, min(cfg.max_spots, n_diff.max() if B else 1)))
    sel = rank < N
    q = np.zeros((B, N, 2))
    inten = np.zeros((B, N))
    mask = np.zeros((B, N), dtype=bool)
    source = np.full((B, N), -1, dtype=np.int64)
    rows, cols, src = kseg[sel], rank[sel], keep[sel]
    q[rows, cols] = flat[src, :2]
    inten[rows, cols] = np.clip(flat[src, 2], 0.0, None)
    mask[rows, cols] = True
    source[rows, cols] = src
    return PaddedSpots(q, inten, mask, source, n_diff), is_beam


def _candidates(spots: PaddedSpots, cfg: GeometryConfig) -> tuple[np.ndarray, np.ndarray]:
    """Candidate net vectors ``(B, K, 2)`` and their support ``(B, K)`` (0 where none)."""
    B = spots.q.shape[0]
    M = min(cfg.n_inner, spots.q.shape[1])
    pts = np.concatenate([np.zeros((B, 1, 2)), spots.q[:, :M]], axis=1)  # origin first
    pm = np.concatenate([np.ones((B, 1), bool), spots.mask[:, :M]], axis=1)
    iu, ju = np.triu_indices(M + 1, 1)
    d_all = pts[:, ju] - pts[:, iu]  # (B, P, 2)
    ok_all = pm[:, iu] & pm[:, ju]
    dist = np.hypot(d_all[..., 0], d_all[..., 1])
    # grid pitch from the median nearest-neighbour distance of the inner points
    dm = np.full((B, M + 1, M + 1), np.inf)
    dm[:, iu, ju] = np.where(ok_all, dist, np.inf)
    nn = np.minimum(dm.min(axis=2), dm.min(axis=1))
    n_pts = pm.sum(axis=1)
    nn_sorted = np.sort(nn, axis=1)
    scale = nn_sorted[np.arange(B), np.maximum(n_pts - 1, 0) // 2]
    scale = np.where(np.isfinite(scale), scale, 0.1)
    h = np.clip(cfg.grid_fraction * scale, cfg.grid_min, cfg.grid_max)
    bi, pi = np.nonzero(ok_all)
    d = d_all[bi, pi]
    # one sign per pair (x >= 0); vectors near the y axis are entered with both signs
    d = np.where((d[:, 0] < 0)[:, None], -d, d)
    edge = d[:, 0] < 2 * h[bi]
    d = np.concatenate([d, -d[edge]])
    bi = np.concatenate([bi, bi[edge]])
    K = cfg.n_candidates
    out = np.zeros((B, K, 2))
    sup = np.zeros((B, K))
    if len(d) == 0:
        return out, sup
    ix = np.floor(d[:, 0] / h[bi]).astype(np.int64)
    iy = np.floor(d[:, 1] / h[bi]).astype(np.int64)
    off = 1 << 20
    width = 1 << 21
    key = (bi.astype(np.int64) * width + (ix + off)) * width + (iy + off)
    order = np.argsort(key)
    key = key[order]
    d = d[order]
    new = np.concatenate([[True], key[1:] != key[:-1]])
    starts = np.flatnonzero(new)
    ukey = key[starts]
    cnt = np.diff(np.append(starts, len(key))).astype(np.float64)
    sx = np.add.reduceat(d[:, 0], starts)
    sy = np.add.reduceat(d[:, 1], starts)
    nu = len(ukey)
    c3 = cnt.copy()
    sx3 = sx.copy()
    sy3 = sy.copy()
    # 3 x 3 neighbourhood: keys are sorted by (pattern, ix, iy), so the cells (ix + dx, iy - 1 .. iy + 1)
    # follow one another from the first key >= (ix + dx, iy - 1)
    nb_idx = []
    for dx in (-1, 0, 1):
        base = np.searchsorted(ukey, ukey + dx * width - 1) if dx else np.arange(nu) - 1
        for step, dy in enumerate((-1, 0, 1)):
            if not (dx or dy):
                continue
            k2 = ukey + dx * width + dy
            pos = np.clip(base + step, 0, nu - 1) if dx == 0 else None
            if dx:
                # (ix + dx, iy - 1), (ix + dx, iy), (ix + dx, iy + 1) are at base, base + 1, base + 2 at most
                pos = np.clip(base, 0, nu - 1)
                for _ in range(step):
                    nxt = np.minimum(pos + 1, nu - 1)
                    pos = np.where(ukey[pos] < k2, nxt, pos)
            hit = ukey[pos] == k2
            c3 += np.where(hit, cnt[pos], 0)
            sx3 += np.where(hit, sx[pos], 0.0)
            sy3 += np.where(hit, sy[pos], 0.0)
            nb_idx.append(np.where(hit, pos, -1))
    # unique score: smoothed count, own count, then key order
    score = (c3 * 4096 + cnt) * nu + (nu - np.arange(nu))
    peak = np.ones(nu, dtype=bool)
    for pos in nb_idx:
        peak &= (pos < 0) | (score > score[np.maximum(pos, 0)])
    vx, vy = sx3 / c3, sy3 / c3
    ub = ukey // (width * width)
    peak &= np.hypot(vx, vy) > 2 * h[ub]
    idx = np.flatnonzero(peak)
    # per pattern: best support first, shorter first on ties
    length = np.hypot(vx[idx], vy[idx])
    order = np.lexsort((length, -c3[idx], ub[idx]))
    idx = idx[order]
    pb = ub[idx]
    nper = np.bincount(pb, minlength=B)
    start = np.concatenate([[0], np.cumsum(nper)[:-1]])
    rank = np.arange(len(idx)) - np.repeat(start, nper)
    K2 = 2 * K  # peaks near the y axis come with both signs: take twice as many, then drop mates
    sel = rank < K2
    cv = np.zeros((B, K2, 2))
    cs = np.zeros((B, K2))
    cv[pb[sel], rank[sel], 0] = vx[idx[sel]]
    cv[pb[sel], rank[sel], 1] = vy[idx[sel]]
    cs[pb[sel], rank[sel]] = c3[idx[sel]]
    flip = (cv[..., 0] < 0) | ((cv[..., 0] == 0) & (cv[..., 1] < 0))
    cv = np.where(flip[..., None], -cv, cv)
    dd = cv[:, :, None, :] - cv[:, None, :, :]
    close = (dd[..., 0] ** 2 + dd[..., 1] ** 2) < (2 * h[:, None, None]) ** 2
    earlier = np.tril(np.ones((K2, K2), dtype=bool), -1)  # [i, j]: j ranks before i
    dup = (close & earlier & (cs[:, None, :] > 0)).any(axis=2)
    keep = (cs > 0) & ~dup
    r2 = np.cumsum(keep, axis=1) - 1
    sel = keep & (r2 < K)
    bb, kk = np.nonzero(sel)
    out[bb, r2[sel]] = cv[bb, kk]
    sup[bb, r2[sel]] = cs[bb, kk]
    return out, sup


def _inverse_2x2(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``(..., 2, 2)`` matrices (rows are basis vectors) and their determinants."""
    det = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    safe = np.where(np.abs(det) > _TINY, det, 1.0)
    inv = np.empty_like(m)
    inv[..., 0, 0] = m[..., 1, 1] / safe
    inv[..., 0, 1] = -m[..., 0, 1] / safe
    inv[..., 1, 0] = -m[..., 1, 0] / safe
    inv[..., 1, 1] = m[..., 0, 0] / safe
    return inv, det


def _weights(spots: PaddedSpots, E: int, cfg: GeometryConfig) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(B, E)`` of the inner spots in the basis choice and the slack ``(B,)``."""
    m = spots.mask[:, :E]
    inten = spots.intensity[:, :E]
    imax = np.maximum(inten.max(axis=1, keepdims=True), _TINY)
    w = np.where(m, (inten / imax) ** cfg.weight_power, 0.0) if cfg.weight_power else m.astype(np.float64)
    slack = cfg.fraction_slack * w.sum(axis=1)
    return w, slack


def _choose_basis(spots: PaddedSpots, cand: np.ndarray, sup: np.ndarray, cfg: GeometryConfig):
    """Best candidate pair per pattern: ``(B, 2, 2)`` basis and ``(B,)`` validity."""
    B, K, _ = cand.shape
    iu, ju = np.triu_indices(K, 1)
    basis = np.stack([cand[:, iu], cand[:, ju]], axis=2)  # (B, P, 2, 2)
    ok = (sup[:, iu] > 0) & (sup[:, ju] > 0)
    inv, det = _inverse_2x2(basis)
    la = np.hypot(cand[:, iu, 0], cand[:, iu, 1])
    lb = np.hypot(cand[:, ju, 0], cand[:, ju, 1])
    area = np.abs(det)
    ok &= area > cfg.min_sine * la * lb
    E = min(cfg.n_eval, spots.q.shape[1])
    qx, qy, me = spots.q[:, None, :E, 0], spots.q[:, None, :E, 1], spots.mask[:, :E]
    # q = f @ basis  ->  f = q @ inv, one component at a time (cheaper than einsum)
    f0 = qx * inv[:, :, 0, 0, None] + qy * inv[:, :, 1, 0, None]
    f1 = qx * inv[:, :, 0, 1, None] + qy * inv[:, :, 1, 1, None]
    tol = cfg.index_tolerance
    on = (np.abs(f0 - np.round(f0)) < tol) & (np.abs(f1 - np.round(f1)) < tol) & me[:, None, :]
    w, slack = _weights(spots, E, cfg)
    f = np.einsum("bpn,bn->bp", on.astype(np.float64), w)
    f = np.where(ok, f, -1.0)
    best = f.max(axis=1, keepdims=True)
    elig = ok & (f >= best - slack[:, None])
    amax = np.where(elig, area, 0.0).max(axis=1, keepdims=True)
    elig2 = elig & (area >= 0.9 * amax)
    # among those: most spots indexed, then the most compact pair
    key = np.where(elig2, f * 1e3 - (la + lb) / np.maximum(la + lb, _TINY).max(axis=1, keepdims=True), -np.inf)
    p = np.argmax(key, axis=1)
    valid = np.isfinite(key[np.arange(B), p])
    return basis[np.arange(B), p], valid


def _index(q: np.ndarray, basis: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fractional coordinates, integer indices and the largest fractional residual."""
    inv, _ = _inverse_2x2(basis)
    x = q[..., 0] - offset[:, 0, None]
    y = q[..., 1] - offset[:, 1, None]
    frac = np.empty_like(q)
    frac[..., 0] = x * inv[:, 0, 0, None] + y * inv[:, 1, 0, None]
    frac[..., 1] = x * inv[:, 0, 1, None] + y * inv[:, 1, 1, None]
    hk = np.round(frac)
    res = np.abs(frac - hk)
    return frac, hk, np.maximum(res[..., 0], res[..., 1])


def _least_squares(q, hk, on, basis, offset, ridge_offset=1.0):
    """Fit ``q = h a + k b + c`` on the spots ``on`` (ridge towards the previous solution)."""
    B = q.shape[0]
    w = on.astype(np.float64)
    h, k = hk[..., 0] * w, hk[..., 1] * w
    cols = (h, k, w)
    XtX = np.empty((B, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            XtX[:, i, j] = XtX[:, j, i] = np.einsum("bn,bn->b", cols[i], cols[j])
    XtY = np.empty((B, 3, 2))
    for i in range(3):
        XtY[:, i, 0] = np.einsum("bn,bn->b", cols[i], q[..., 0])
        XtY[:, i, 1] = np.einsum("bn,bn->b", cols[i], q[..., 1])
    prev = np.concatenate([basis, offset[:, None, :]], axis=1)  # (B, 3, 2)
    scale = np.maximum(XtX[:, 0, 0] + XtX[:, 1, 1], 1.0)
    lam = np.empty((B, 3))
    lam[:, :2] = 1e-6 * scale[:, None]
    lam[:, 2] = ridge_offset
    A = XtX + lam[:, :, None] * np.eye(3)
    rhs = XtY + lam[:, :, None] * prev
    sol = np.linalg.solve(A, rhs)
    return sol[:, :2], sol[:, 2]


def _row_fit(spots: PaddedSpots, cfg: GeometryConfig) -> tuple[np.ndarray, np.ndarray]:
    """Which patterns are one systematic row (with the origin), and the row direction."""
    q, m = spots.q, spots.mask
    S = np.einsum("bni,bnj->bij", q * m[..., None], q)  # second moment about the origin
    w, v = np.linalg.eigh(S)
    n = np.maximum(m.sum(axis=1), 1)
    rms_perp = np.sqrt(np.maximum(w[:, 0], 0) / n)
    rms_all = np.sqrt(np.maximum(w.sum(axis=1), 0) / n)
    is_row = (m.sum(axis=1) >= 2) & (rms_perp <= cfg.row_tolerance * np.maximum(rms_all, _TINY))
    return is_row, v[:, :, 1]


@dataclass
class NetFit:
    """The reduced net of each pattern of a padded batch (arrays over patterns ``B``, spots ``N``).

    Attributes
    ----------
    a, b : numpy.ndarray
        ``(B, 2)`` reduced basis vectors (1/Å), lab frame; zero where not found.
    offset : numpy.ndarray
        ``(B, 2)`` fitted origin of the net (1/Å).
    found : numpy.ndarray
        ``(B,)`` bool, a 2D net was found (>= 3 spots indexed, not all on one line).
    is_row : numpy.ndarray
        ``(B,)`` bool, the spots lie on one line through the origin; ``a`` is the row vector.
    hk : numpy.ndarray
        ``(B, N, 2)`` int64 indices (meaningful where ``on_net``).
    frac : numpy.ndarray
        ``(B, N, 2)`` fractional coordinates.
    on_net : numpy.ndarray
        ``(B, N)`` bool, spot within ``index_tolerance`` of a net point.
    residual : numpy.ndarray
        ``(B, N)`` distance (1/Å) of each spot from its nearest net point.
    """

    a: np.ndarray
    b: np.ndarray
    offset: np.ndarray
    found: np.ndarray
    is_row: np.ndarray
    hk: np.ndarray
    frac: np.ndarray
    on_net: np.ndarray
    residual: np.ndarray

    @property
    def a_len(self) -> np.ndarray:
        return np.hypot(self.a[:, 0], self.a[:, 1])

    @property
    def b_len(self) -> np.ndarray:
        return np.hypot(self.b[:, 0], self.b[:, 1])

    @property
    def gamma_deg(self) -> np.ndarray:
        """``(B,)`` angle between ``a*`` and ``b*`` (degrees, 60..90); 0 where not found."""
        c = np.einsum("bi,bi->b", self.a, self.b) / np.maximum(self.a_len * self.b_len, _TINY)
        return np.where(self.found, np.degrees(np.arccos(np.clip(c, -1, 1))), 0.0)

    @property
    def frame_angle(self) -> np.ndarray:
        """``(B,)`` rotation (radians) that brings ``a*`` onto ``+x``: ``-atan2(a_y, a_x)``."""
        return np.where(self.found | self.is_row, -np.arctan2(self.a[:, 1], self.a[:, 0]), 0.0)

    @property
    def handedness(self) -> np.ndarray:
        """``(B,)`` sign of ``a* x b*`` (+1, -1; 0 where not found)."""
        cross = self.a[:, 0] * self.b[:, 1] - self.a[:, 1] * self.b[:, 0]
        return np.where(self.found, np.sign(cross), 0.0)


def fit_nets(spots: PaddedSpots, config: GeometryConfig | None = None) -> NetFit:
    """Find and refine the reduced 2D net of every pattern of a padded batch.

    Parameters
    ----------
    spots : PaddedSpots
        From :func:`pad_pointlists`.
    config : GeometryConfig, optional

    Returns
    -------
    NetFit
    """
    cfg = config or GeometryConfig()
    B, N = spots.mask.shape
    q, m = spots.q, spots.mask
    cand, sup = _candidates(spots, cfg)
    basis, valid = _choose_basis(spots, cand, sup, cfg)
    a, b = gauss_reduce(basis[:, 0], basis[:, 1])
    basis = np.stack([a, b], axis=1)
    offset = np.zeros((B, 2))
    r = spots.radius
    E = min(cfg.n_eval, N)
    r_eval = np.where(m[:, :E], r[:, :E], 0.0).max(axis=1)
    for lim in (1.0, 2.0, np.inf):
        frac, hk, res = _index(q, basis, offset)
        inside = (r <= lim * r_eval[:, None] + _TINY) if np.isfinite(lim) else m
        on = m & (res < cfg.index_tolerance) & inside & valid[:, None]
        basis, offset = _least_squares(q, hk, on, basis, offset)
        a, b = gauss_reduce(basis[:, 0], basis[:, 1])
        basis = np.stack([a, b], axis=1)
    frac, hk, res = _index(q, basis, offset)
    on = m & (res < cfg.index_tolerance) & valid[:, None]
    # found: >= 3 indexed spots whose indices are not all collinear
    hkm = hk * on[..., None]
    M2 = np.einsum("bni,bnj->bij", hkm, hkm)
    det = M2[:, 0, 0] * M2[:, 1, 1] - M2[:, 0, 1] ** 2
    found = valid & (on.sum(axis=1) >= 3) & (det > 0.5)
    is_row, row_dir = _row_fit(spots, cfg)
    is_row &= ~found | (det <= 0.5)
    found &= ~is_row
    # common sign: intensity centroid on the +(a + b) side
    s = np.einsum("bn,bni,bi->b", spots.intensity * on, q, basis[:, 0] + basis[:, 1])
    sign = np.where(s < 0, -1.0, 1.0)
    basis = basis * sign[:, None, None]
    frac, hk, res = _index(q, basis, offset)
    near = np.einsum("bni,bij->bnj", hk, basis) + offset[:, None, :]
    dist = np.hypot(*(q - near).transpose(2, 0, 1))
    on = m & (res < cfg.index_tolerance) & found[:, None]
    # rows: a = shortest spacing along the row, from the smallest |q| projected on the row
    row_a = _row_vector(spots, row_dir, cfg)
    a = np.where(found[:, None], basis[:, 0], np.where(is_row[:, None], row_a, 0.0))
    b = np.where(found[:, None], basis[:, 1], 0.0)
    offset = np.where(found[:, None], offset, 0.0)
    return NetFit(a, b, offset, found, is_row, hk.astype(np.int64), frac, on, np.where(m, dist, 0.0))


def _row_vector(spots: PaddedSpots, direction: np.ndarray, cfg: GeometryConfig) -> np.ndarray:
    """Row spacing vector: refine ``t`` along ``direction`` from the spot projections."""
    t = np.einsum("bni,bi->bn", spots.q, direction)
    at = np.where(spots.mask & (np.abs(t) > 2 * cfg.grid_min), np.abs(t), np.inf)
    t0 = at.min(axis=1)
    t0 = np.where(np.isfinite(t0), t0, 0.0)
    # least squares on integer multiples of t0 (spots whose multiple is unambiguous)
    n = np.round(t / np.maximum(t0, _TINY)[:, None])
    ok = spots.mask & (np.abs(t / np.maximum(t0, _TINY)[:, None] - n) < cfg.index_tolerance) & (n != 0)
    num = np.einsum("bn,bn->b", n * ok, t)
    den = np.einsum("bn,bn->b", n * ok, n)
    spacing = np.where(den > 0, num / np.maximum(den, _TINY), t0)
    return direction * spacing[:, None]
