"""The matcher: which known phase, which zone axis, at what scale, for each measured pattern.

Three vectorised steps over a batch of patterns (:func:`match_patterns`):

1. **Shortlist by the net.** The measured 2D net of each pattern (:func:`py4dstem_gnn.geometry.pattern_geometry`:
   reduced ``a*, b*, gamma*`` and the ``(h, k)`` of every spot) is looked up in the bank's KD-tree
   over ``(log a*, log b*/a*, gamma*)`` with a box tolerance: one global scale per candidate within
   ``scale_tolerance`` (DFT lattice errors + the user's Q calibration), and a few % on the axial ratio
   and degrees on the angle (DFT c/a errors, ellipticity, detection).
2. **Score on indexed intensities.** The net fixes the correspondence between measured and template
   indices up to the net's own automorphisms (the 2D lattice's point group: 1 for an oblique net, 2
   rectangular, 4 square, 6 hexagonal, mod Friedel's ±1): each is tried. The score is the cosine of
   ``(I / I_max) ** 0.25`` over the measured spots on the net and the template reflections inside the
   measured q range, less a penalty on the metric misfit. The fourth root compresses dynamical
   intensity changes (what survives is which reflections are strong); reflections the template lacks
   but the pattern shows (double diffraction into absent rows, spurious peaks) and template
   reflections the pattern lacks (weak spots lost) lower the score without ruling the candidate out.
3. **Return** the ``top_k`` phases per pattern (best template of each), with score, template row,
   correspondence, fitted scale (measured / template), and the best score reached by any phase of
   each crystal system and each space group (:class:`MatchResult`), for the decision stage.

Orientation (zone axis sign, in-plane angle, a full rotation matrix) is recovered from the best
candidate by :mod:`py4dstem_gnn.matching.orientation`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..geometry.pattern import PatternGeometry, pattern_geometry
from ..labels import N_CRYSTAL_SYSTEMS, N_SPACE_GROUPS
from .bank import TemplateBank

__all__ = ["MatchConfig", "MatchResult", "match_patterns", "estimate_scale", "net_automorphisms", "UNIMODULAR"]

logger = logging.getLogger(__name__)

_TINY = 1e-12
#: Half-width of the measured index grid (indices -G..G on both net axes).
_GRID = 10


def _unimodular() -> np.ndarray:
    """2x2 integer matrices with entries in {-1, 0, 1} and det ±1, one of each ± pair."""
    out = []
    for e in np.array(np.meshgrid(*[[-1, 0, 1]] * 4, indexing="ij")).reshape(4, -1).T:
        U = e.reshape(2, 2)
        if abs(U[0, 0] * U[1, 1] - U[0, 1] * U[1, 0]) != 1:
            continue
        first = U.reshape(-1)[np.flatnonzero(U.reshape(-1))[0]]
        if first > 0:
            out.append(U)
    out.sort(key=lambda U: (np.abs(U - np.eye(2)).sum(), tuple(U.reshape(-1))))  # identity first
    return np.array(out, dtype=np.int64)


#: Candidate index correspondences (identity first).
UNIMODULAR: np.ndarray = _unimodular()
_UNIMODULAR_INV: np.ndarray = np.rint(np.linalg.inv(UNIMODULAR)).astype(np.int64)


@dataclass(frozen=True)
class MatchConfig:
    """Tolerances and sizes of the matcher.

    Attributes
    ----------
    scale_tolerance : float
        Largest ``|q_scale - 1|`` of a candidate (``q_scale`` = measured / template lengths): DFT
        lattice errors (1-3 %) plus the user's Q-calibration error.
    ratio_tolerance : float
        Largest relative difference of ``b*/a*`` (measured vs template).
    angle_tolerance_deg : float
        Largest difference of ``gamma*``, degrees.
    metric_tolerance : float
        Largest misfit of the scaled metric tensors (relative to ``|a*|^2``) for a correspondence.
    metric_weight : float
        Score penalty per unit of ``metric misfit / metric_tolerance``.
    scale_weight : float
        Score penalty per unit of ``((q_scale - 1) / scale_tolerance) ** 2``: between candidates
        that explain a pattern equally well (fcc [001] and bcc [001] of cells whose ``a / sqrt 2``
        agree), the one needing the smaller calibration correction wins.
    scale_centre : float
        Expected ``q_scale`` (measured / template): 1 for a well-calibrated pattern; a scan's own
        estimate (:func:`estimate_scale`) when its Q calibration is off.
    power : float
        Intensities enter the score as ``(I / I_max) ** power`` (templates store ``power = 0.25``
        values and are converted): small powers weigh which reflections are present more than how
        strong they are, which dynamical scattering changes.
    n_measured : int
        The brightest measured spots on the net that enter the score.
    max_candidates : int
        Candidates scored per pattern (closest in ratio and angle first).
    top_k : int
        Phases returned per pattern.
    min_indexed : int
        Patterns with fewer spots on their net are not matched.
    refine_below : float
        Patterns whose best score stays below this are matched again on the three nets twice as
        fine as the measured one (``a*/2``, ``b*/2``, ``(a*+b*)/2`` added): weak reflections lost
        in detection, or too weak for the net measurement to trust, make the measured net coarser
        than the structure's.
    chunk_size : int
        Patterns per vectorised step.
    """

    scale_tolerance: float = 0.06
    ratio_tolerance: float = 0.03
    angle_tolerance_deg: float = 2.5
    metric_tolerance: float = 0.05
    metric_weight: float = 0.15
    scale_weight: float = 0.15
    scale_centre: float = 1.0
    power: float = 0.25
    n_measured: int = 40
    max_candidates: int = 200
    top_k: int = 5
    min_indexed: int = 4
    refine_below: float = 0.75
    chunk_size: int = 256


@dataclass
class MatchResult:
    """Match of ``n`` patterns against a bank (``k = top_k``).

    Attributes
    ----------
    phase : numpy.ndarray
        (n, k) int64 phase (row of the bank's phase table), best first; -1 where fewer candidates.
    score : numpy.ndarray
        (n, k) float32 score (cosine of indexed intensities less the metric penalty); ``-inf``
        where there is no candidate.
    row : numpy.ndarray
        (n, k) int64 template row of the bank.
    corr : numpy.ndarray
        (n, k) int64 index into :data:`UNIMODULAR` of the correspondence (measured index @ U =
        template index).
    q_scale : numpy.ndarray
        (n, k) float32 fitted scale, measured / template (``> 1``: the pattern's spots lie farther
        out than the bank's).
    cs_score, sg_score : numpy.ndarray
        (n, 7) and (n, 230) float32: best score of any candidate of each crystal system / space
        group (``-inf`` where none).
    n_candidates : numpy.ndarray
        (n,) int64 candidates scored.
    basis : numpy.ndarray
        (n, k, 2, 2) float32 the measured net basis (rows ``a*``, ``b*``, lab frame) each candidate
        was indexed on: the measured reduced net, or a twice-finer one (see ``refine_below``).
    geometry : PatternGeometry
        The measured nets.
    """

    phase: np.ndarray
    score: np.ndarray
    row: np.ndarray
    corr: np.ndarray
    q_scale: np.ndarray
    cs_score: np.ndarray
    sg_score: np.ndarray
    n_candidates: np.ndarray
    basis: np.ndarray | None = field(default=None, repr=False)
    geometry: PatternGeometry | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.phase.shape[0])

    @property
    def best_score(self) -> np.ndarray:
        return self.score[:, 0]


def net_automorphisms(a: np.ndarray, b: np.ndarray, tolerance: float) -> np.ndarray:
    """Which correspondences of :data:`UNIMODULAR` keep each measured net (within ``tolerance``).

    Parameters
    ----------
    a, b : numpy.ndarray
        (n, 2) reduced basis vectors.
    tolerance : float
        Largest metric misfit relative to ``|a|^2``.

    Returns
    -------
    numpy.ndarray
        (n, len(UNIMODULAR)) bool; the identity (column 0) is always True.
    """
    G = np.stack([np.stack([np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", a, b)], -1),
                  np.stack([np.einsum("ij,ij->i", a, b), np.einsum("ij,ij->i", b, b)], -1)], axis=1)  # (n,2,2)
    Gu = np.einsum("uij,njk,ulk->nuil", UNIMODULAR.astype(np.float64), G, UNIMODULAR.astype(np.float64))
    err = np.abs(Gu - G[:, None]).max(axis=(2, 3)) / np.maximum(G[:, 0, 0], _TINY)[:, None]
    ok = err <= tolerance
    ok[:, 0] = True
    return ok


def _measured_grids(pointlists_geometry: PatternGeometry, pointlists: Sequence[np.ndarray], idx: np.ndarray,
                    n_measured: int, power: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense ``(2G+1)^2`` grids of ``(I / I_max) ** 0.25`` of each pattern's brightest on-net spots.

    Returns grids (m, (2G+1)^2) float32, their norms (m,), and the largest measured ``|q|`` (m,).
    """
    geo = pointlists_geometry
    side = 2 * _GRID + 1
    grids = np.zeros((len(idx), side * side), np.float32)
    qmax = np.zeros(len(idx))
    for r, i in enumerate(idx):
        s, e = geo.offsets[i], geo.offsets[i + 1]
        pl = np.asarray(pointlists[i])
        on = geo.on_net[s:e]
        hk = geo.hk[s:e][on]
        inten = np.clip(pl[on, 2].astype(np.float64), 0, None)
        beam = geo.is_beam[s:e]
        q = np.hypot(pl[~beam, 0], pl[~beam, 1])
        qmax[r] = q.max() if len(q) else 0.0
        inside = np.abs(hk).max(axis=1) <= _GRID if len(hk) else np.zeros(0, bool)
        hk, inten = hk[inside], inten[inside]
        if len(inten) == 0:
            continue
        order = np.argsort(-inten, kind="stable")[:n_measured]
        hk, inten = hk[order], inten[order]
        v = (inten / max(inten.max(), _TINY)) ** power
        flat = (hk[:, 0] + _GRID) * side + (hk[:, 1] + _GRID)
        np.maximum.at(grids[r], flat, v.astype(np.float32))
    norms = np.sqrt((grids.astype(np.float64) ** 2).sum(axis=1))
    return grids, norms, qmax


def _padded_templates(bank: TemplateBank) -> tuple[np.ndarray, np.ndarray]:
    """(T, S, 2) int16 indices and (T, S) float32 values of every row, zero-padded (cached on the bank)."""
    cached = bank.cache.get("padded")
    if cached is not None:
        return cached
    counts = np.diff(bank.offsets)
    S = int(counts.max()) if len(counts) else 1
    T = len(bank)
    hk = np.zeros((T, S, 2), np.int16)
    val = np.zeros((T, S), np.float32)
    row = np.repeat(np.arange(T), counts)
    col = np.arange(len(bank.value)) - np.repeat(bank.offsets[:-1], counts)
    hk[row, col] = bank.hk
    val[row, col] = bank.value.astype(np.float32) / 255.0
    bank.cache["padded"] = (hk, val)
    return hk, val


def match_patterns(
    pointlists: Sequence[np.ndarray],
    bank: TemplateBank,
    config: MatchConfig | None = None,
    geometry: PatternGeometry | None = None,
    *,
    progress: bool = False,
) -> MatchResult:
    """Match patterns against the templates of a bank.

    Parameters
    ----------
    pointlists : sequence of numpy.ndarray
        ``(n_i, 3)`` spot lists ``qx, qy`` (1/Å, direct beam near 0 included or not), intensity.
    bank : TemplateBank
    config : MatchConfig, optional
    geometry : PatternGeometry, optional
        The measured geometry of ``pointlists`` if already computed.
    progress : bool
        tqdm bar over chunks.

    Returns
    -------
    MatchResult
    """
    cfg = config or MatchConfig()
    n = len(pointlists)
    geo = geometry if geometry is not None else pattern_geometry(pointlists)
    k = cfg.top_k
    res = MatchResult(
        phase=np.full((n, k), -1, np.int64), score=np.full((n, k), -np.inf, np.float32),
        row=np.full((n, k), -1, np.int64), corr=np.zeros((n, k), np.int64), q_scale=np.ones((n, k), np.float32),
        cs_score=np.full((n, N_CRYSTAL_SYSTEMS), -np.inf, np.float32),
        sg_score=np.full((n, N_SPACE_GROUPS), -np.inf, np.float32), n_candidates=np.zeros(n, np.int64),
        geometry=geo,
    )
    if n == 0 or len(bank) == 0:
        return res
    usable = np.flatnonzero(geo.found & (geo.n_indexed >= cfg.min_indexed))
    if len(usable) == 0:
        return res
    scales = np.array([np.log1p(cfg.scale_tolerance), cfg.ratio_tolerance, cfg.angle_tolerance_deg])
    bank_keys = bank.cache.get("keys")
    if bank_keys is None:
        bank_keys = bank.cache["keys"] = bank.keys()
    tree_key = ("tree", tuple(scales.tolist()))
    tree = bank.cache.get(tree_key)
    if tree is None:
        from scipy.spatial import cKDTree

        tree = cKDTree(bank_keys / scales, balanced_tree=False, compact_nodes=False)
        bank.cache[tree_key] = tree
    hk_pad, val_pad = _padded_templates(bank)
    res.basis = np.zeros((n, k, 2, 2), np.float32)
    view = _NetView.of(geo)
    chunks = [usable[s:s + cfg.chunk_size] for s in range(0, len(usable), cfg.chunk_size)]
    if progress:
        from ..progress import tqdm

        chunks = tqdm(chunks, desc="matching", unit="chunk")
    parts = []
    for idx in chunks:
        parts.append(_match_chunk(idx, pointlists, view, bank, bank_keys, tree, scales, hk_pad, val_pad, cfg, res))
    _select_top(parts, res, cfg)
    weak = usable[~(res.score[usable, 0] >= cfg.refine_below)]
    if len(weak):
        parts = []
        for F in _REFINEMENTS:
            finer = view.refined(weak, F)
            ok = np.flatnonzero(finer.found[weak])
            for s0 in range(0, len(ok), cfg.chunk_size):
                idx = weak[ok[s0:s0 + cfg.chunk_size]]
                parts.append(_match_chunk(idx, pointlists, finer, bank, bank_keys, tree, scales, hk_pad, val_pad, cfg, res))
        _select_top(parts, res, cfg, merge=True)
    return res


#: Per-spot arrays of a :class:`PatternGeometry` (rows of the concatenated input pointlists).
_PER_SPOT = ("hk", "on_net", "is_beam", "residual")


def _take_geometry(geo: PatternGeometry, idx: np.ndarray) -> PatternGeometry:
    """The geometry of patterns ``idx`` of ``geo``, as :func:`pattern_geometry` of those patterns lays it out.

    Per-pattern arrays (and the ``stats`` / ``off_net`` dicts) are indexed by ``idx``; per-spot arrays
    keep the rows of the chosen patterns, with new ``offsets``.
    """
    from dataclasses import fields

    idx = np.asarray(idx, np.int64)
    counts = np.diff(geo.offsets)[idx]
    offsets = np.zeros(idx.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    rows = np.repeat(geo.offsets[idx] - offsets[:-1], counts) + np.arange(offsets[-1])
    out = {}
    for f in fields(geo):
        v = getattr(geo, f.name)
        if f.name == "offsets":
            out[f.name] = offsets
        elif f.name in _PER_SPOT:
            out[f.name] = v[rows]
        elif isinstance(v, dict):
            out[f.name] = {k: x[idx] for k, x in v.items()}
        else:
            out[f.name] = v[idx]
    return PatternGeometry(**out)


#: Twice-finer nets: new basis rows in units of the measured (a*, b*).
_REFINEMENTS = (np.array([[0.5, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 0.5]]), np.array([[0.5, 0.5], [0.0, 1.0]]))


@dataclass
class _NetView:
    """The measured nets the matcher indexes on (the measured ones, or refined copies)."""

    found: np.ndarray
    a: np.ndarray
    b: np.ndarray
    a_len: np.ndarray
    b_len: np.ndarray
    gamma_deg: np.ndarray
    hk: np.ndarray
    on_net: np.ndarray
    is_beam: np.ndarray
    offsets: np.ndarray

    @classmethod
    def of(cls, geo: PatternGeometry) -> "_NetView":
        return cls(geo.found, geo.a, geo.b, geo.a_len, geo.b_len, geo.gamma_deg, geo.hk, geo.on_net, geo.is_beam, geo.offsets)

    def refined(self, rows: np.ndarray, F: np.ndarray) -> "_NetView":
        """A copy whose nets at ``rows`` are refined to the basis ``F @ (a*, b*)`` (then reduced)."""
        from ..geometry.cell import gauss_reduce

        a, b, hk = self.a.copy(), self.b.copy(), self.hk.copy()
        old = np.stack([self.a[rows], self.b[rows]], axis=1)  # (m, 2, 2) rows
        new = np.einsum("ij,mjk->mik", F, old)
        na, nb = gauss_reduce(new[:, 0], new[:, 1])
        N = np.stack([na, nb], axis=1)
        det = N[:, 0, 0] * N[:, 1, 1] - N[:, 0, 1] * N[:, 1, 0]
        Ninv = np.stack([np.stack([N[:, 1, 1], -N[:, 0, 1]], -1), np.stack([-N[:, 1, 0], N[:, 0, 0]], -1)], 1) / det[:, None, None]
        C = np.rint(np.einsum("mij,mjk->mik", old, Ninv)).astype(np.int64)  # old index -> new index
        a[rows], b[rows] = na, nb
        for r, i in enumerate(rows):
            s, e = self.offsets[i], self.offsets[i + 1]
            if e > s:
                hk[s:e] = hk[s:e] @ C[r]
        a_len, b_len = np.hypot(a[:, 0], a[:, 1]), np.hypot(b[:, 0], b[:, 1])
        cosg = np.einsum("ij,ij->i", a, b) / np.maximum(a_len * b_len, _TINY)
        gamma = np.where(self.found, np.degrees(np.arccos(np.clip(cosg, -1, 1))), 0.0)
        return _NetView(self.found & (a_len > _TINY), a, b, a_len, b_len, gamma, hk, self.on_net, self.is_beam, self.offsets)


def _select_top(parts: list, res: MatchResult, cfg: MatchConfig, merge: bool = False) -> None:
    """Fill the top-k of ``res`` from candidate tuples (best template of each phase per pattern)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return
    gi, ph, score, tr, tu, sc, basis = (np.concatenate([p[j] for p in parts]) for j in range(7))
    if merge:  # the current top-k competes with the new candidates
        g0, r0 = np.nonzero(res.phase >= 0)
        gi = np.concatenate([g0, gi])
        ph = np.concatenate([res.phase[g0, r0], ph])
        score = np.concatenate([res.score[g0, r0], score])
        tr = np.concatenate([res.row[g0, r0], tr])
        tu = np.concatenate([res.corr[g0, r0], tu])
        sc = np.concatenate([res.q_scale[g0, r0], sc])
        basis = np.concatenate([res.basis[g0, r0], basis])
    order = np.lexsort((-score, ph, gi))
    gi, ph, score, tr, tu, sc, basis = gi[order], ph[order], score[order], tr[order], tu[order], sc[order], basis[order]
    first = np.ones(len(gi), bool)
    first[1:] = (gi[1:] != gi[:-1]) | (ph[1:] != ph[:-1])
    gi, ph, score, tr, tu, sc, basis = gi[first], ph[first], score[first], tr[first], tu[first], sc[first], basis[first]
    order = np.lexsort((-score, gi))
    gi, ph, score, tr, tu, sc, basis = gi[order], ph[order], score[order], tr[order], tu[order], sc[order], basis[order]
    start = np.r_[0, np.flatnonzero(gi[1:] != gi[:-1]) + 1]
    rank = np.arange(len(gi)) - np.repeat(start, np.diff(np.r_[start, len(gi)]))
    keep = rank < cfg.top_k
    g, r = gi[keep], rank[keep]
    if merge:
        touched = np.unique(g)
        res.phase[touched] = -1
        res.score[touched] = -np.inf
    res.phase[g, r] = ph[keep]
    res.score[g, r] = score[keep]
    res.row[g, r] = tr[keep]
    res.corr[g, r] = tu[keep]
    res.q_scale[g, r] = sc[keep]
    res.basis[g, r] = basis[keep]


def _match_chunk(idx, pointlists, geo, bank, bank_keys, tree, scales, hk_pad, val_pad, cfg: MatchConfig, res: MatchResult):
    """Score the candidates of patterns ``idx``; returns candidate tuples (best template per phase)."""
    a_len, b_len, gam = geo.a_len[idx], geo.b_len[idx], geo.gamma_deg[idx]
    mkeys = np.stack([np.log(a_len / cfg.scale_centre), np.log(b_len / a_len), gam], axis=1)
    lists = tree.query_ball_point(mkeys / scales, r=1.0, p=np.inf)
    counts = np.fromiter((len(x) for x in lists), np.int64, len(lists))
    if counts.sum() == 0:
        return None
    pat = np.repeat(np.arange(len(idx)), counts)
    row = np.fromiter((j for x in lists for j in x), np.int64, int(counts.sum()))
    # keep the closest max_candidates in ratio and angle per pattern
    d = np.abs(bank_keys[row, 1] - mkeys[pat, 1]) / scales[1] + np.abs(bank_keys[row, 2] - mkeys[pat, 2]) / scales[2]
    if counts.max() > cfg.max_candidates:
        order = np.lexsort((d, pat))
        pat, row, d = pat[order], row[order], d[order]
        rank = np.arange(len(pat)) - np.repeat(np.cumsum(counts) - counts, counts)
        keep = rank < cfg.max_candidates
        pat, row = pat[keep], row[keep]
    res.n_candidates[idx] += np.bincount(pat, minlength=len(idx))
    # correspondences: the automorphisms of each measured net
    aut = net_automorphisms(geo.a[idx], geo.b[idx], cfg.metric_tolerance)
    pi, ui = np.nonzero(aut[pat])  # expand pairs x automorphisms
    tp, tr, tu = pat[pi], row[pi], ui
    # metric misfit of the scaled template under the correspondence (scale fitted on the trace)
    A = geo.a[idx][tp]
    B = geo.b[idx][tp]
    Gm = np.stack([np.einsum("ij,ij->i", A, A), np.einsum("ij,ij->i", A, B), np.einsum("ij,ij->i", B, B)], 1)
    ta, tb = bank.a[tr].astype(np.float64), bank.b[tr].astype(np.float64)
    tc = np.cos(np.radians(bank.gamma[tr].astype(np.float64)))
    Gt = np.stack([ta * ta, ta * tb * tc, tb * tb], 1)
    U = UNIMODULAR[tu].astype(np.float64)
    # measured basis ~ s Q (U T): metric U Gt U^T
    g00 = U[:, 0, 0] ** 2 * Gt[:, 0] + 2 * U[:, 0, 0] * U[:, 0, 1] * Gt[:, 1] + U[:, 0, 1] ** 2 * Gt[:, 2]
    g11 = U[:, 1, 0] ** 2 * Gt[:, 0] + 2 * U[:, 1, 0] * U[:, 1, 1] * Gt[:, 1] + U[:, 1, 1] ** 2 * Gt[:, 2]
    g01 = U[:, 0, 0] * U[:, 1, 0] * Gt[:, 0] + (U[:, 0, 0] * U[:, 1, 1] + U[:, 0, 1] * U[:, 1, 0]) * Gt[:, 1] + U[:, 0, 1] * U[:, 1, 1] * Gt[:, 2]
    s2 = (Gm[:, 0] + Gm[:, 2]) / np.maximum(g00 + g11, _TINY)
    mis = np.maximum.reduce([np.abs(Gm[:, 0] - s2 * g00), np.abs(Gm[:, 1] - s2 * g01), np.abs(Gm[:, 2] - s2 * g11)]) / np.maximum(Gm[:, 0], _TINY)
    scale = np.sqrt(s2)
    ok = (mis <= cfg.metric_tolerance) & (np.abs(scale / cfg.scale_centre - 1) <= cfg.scale_tolerance)
    tp, tr, tu, scale, mis = tp[ok], tr[ok], tu[ok], scale[ok], mis[ok]
    if len(tp) == 0:
        return
    # intensities: template reflections mapped onto the measured grid
    grids, gnorm, qmax = _measured_grids(geo, pointlists, idx, cfg.n_measured, cfg.power)
    side = 2 * _GRID + 1
    hk_t = hk_pad[tr].astype(np.int64)  # (m, S, 2)
    v_t = val_pad[tr] if cfg.power == 0.25 else np.where(val_pad[tr] > 0, val_pad[tr] ** (cfg.power / 0.25), 0.0)
    Uinv = _UNIMODULAR_INV[tu]  # measured index = template index @ U^-1
    hm = np.einsum("msi,mij->msj", hk_t, Uinv)
    inside = (np.abs(hm).max(axis=2) <= _GRID) & (v_t > 0)
    # template reflections beyond the measured q range do not count (q_t * scale <= qmax)
    ta, tb = bank.a[tr].astype(np.float64), bank.b[tr].astype(np.float64)
    tcg = np.cos(np.radians(bank.gamma[tr].astype(np.float64)))
    h, kk = hk_t[..., 0].astype(np.float64), hk_t[..., 1].astype(np.float64)
    qt = np.sqrt(np.maximum(h * h * ta[:, None] ** 2 + kk * kk * tb[:, None] ** 2 + 2 * h * kk * (ta * tb * tcg)[:, None], 0))
    inside &= qt * scale[:, None] <= qmax[tp][:, None] * 1.02 + 1e-3
    flat_p = (hm[..., 0] + _GRID) * side + (hm[..., 1] + _GRID)
    flat_m = (-hm[..., 0] + _GRID) * side + (-hm[..., 1] + _GRID)
    flat_p = np.where(inside, flat_p, 0)
    flat_m = np.where(inside, flat_m, 0)
    gp = grids[tp[:, None], flat_p]
    gm = grids[tp[:, None], flat_m]
    w = np.where(inside, v_t, 0.0)
    dot = (w * (gp + gm)).sum(axis=1)
    tnorm = np.sqrt(2 * (w.astype(np.float64) ** 2).sum(axis=1))
    cos = dot / np.maximum(tnorm * gnorm[tp], _TINY)
    score = (cos - cfg.metric_weight * mis / cfg.metric_tolerance
             - cfg.scale_weight * ((scale / cfg.scale_centre - 1) / cfg.scale_tolerance) ** 2).astype(np.float32)
    # per pattern: best per class, then the best template of each phase, top_k
    gi = idx[tp]
    ph = bank.phase[tr].astype(np.int64)
    np.maximum.at(res.cs_score, (gi, bank.crystal_system[ph].astype(np.int64)), score)
    np.maximum.at(res.sg_score, (gi, bank.space_group[ph].astype(np.int64) - 1), score)
    order = np.lexsort((-score, ph, tp))
    tp, ph, score, tr, tu, scale = tp[order], ph[order], score[order], tr[order], tu[order], scale[order]
    first = np.ones(len(tp), bool)
    first[1:] = (tp[1:] != tp[:-1]) | (ph[1:] != ph[:-1])
    tp, ph, score, tr, tu, scale = tp[first], ph[first], score[first], tr[first], tu[first], scale[first]
    basis = np.stack([geo.a[idx][tp], geo.b[idx][tp]], axis=1).astype(np.float32)
    return idx[tp], ph, score, tr, tu, scale.astype(np.float32), basis


def estimate_scale(pointlists: Sequence[np.ndarray], bank: TemplateBank, config: MatchConfig | None = None,
                   geometry: PatternGeometry | None = None, max_patterns: int = 2000, min_score: float = 0.85,
                   min_count: int = 20, seed: int = 0) -> float | None:
    """The scale a whole scan's spots need to fit the bank: its Q-calibration error, from the data.

    All positions of a scan share one Q calibration, so a first pass with a weak scale prior over (a
    sample of) the positions, keeping the confident matches, measures it: the median of their
    fitted ``q_scale``. A second pass centred there (:attr:`MatchConfig.scale_centre`) then keeps the
    strong prior that separates phases whose cells differ by a few %.

    Parameters
    ----------
    pointlists : sequence of numpy.ndarray
        ``(n_i, 3)`` spot lists of the scan's positions (as for :func:`match_patterns`).
    bank : TemplateBank
    config : MatchConfig, optional
        The tolerances of the match that follows (its scale prior is weakened here).
    geometry : PatternGeometry, optional
        The measured geometry of all of ``pointlists`` (:func:`py4dstem_gnn.geometry.pattern_geometry`),
        when the caller measures it anyway for the match that follows: the sampled positions' nets
        are taken from it instead of being measured a second time.
    max_patterns : int
        Positions sampled (at random, ``seed``) from larger scans.
    min_score : float
        Best-match score from which a match counts as confident.
    min_count : int
        Fewest confident matches for an estimate.
    seed : int

    Returns
    -------
    float or None
        The median ``q_scale`` (measured / template), or ``None`` with fewer than ``min_count``
        confident matches.
    """
    from dataclasses import replace

    cfg = config or MatchConfig()
    n = len(pointlists)
    idx = np.arange(n)
    if n > max_patterns:
        idx = np.sort(np.random.default_rng(seed).choice(n, max_patterns, replace=False))
    sub = [pointlists[i] for i in idx]
    sub_geo = None if geometry is None else (geometry if idx.size == n else _take_geometry(geometry, idx))
    weak = replace(cfg, scale_weight=min(cfg.scale_weight, 0.05), scale_centre=1.0, refine_below=0.0)
    res = match_patterns(sub, bank, weak, sub_geo)
    ok = np.isfinite(res.score[:, 0]) & (res.score[:, 0] >= min_score)
    if ok.sum() < min_count:
        return None
    return float(np.median(res.q_scale[ok, 0]))
