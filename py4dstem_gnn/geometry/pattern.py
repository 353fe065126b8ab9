"""One call that measures the geometry of a batch of spot patterns: :func:`pattern_geometry`.

Patterns are grouped by spot count into chunks (so that padding wastes little), each chunk goes
through :func:`~py4dstem_gnn.geometry.net.fit_nets`,
:func:`~py4dstem_gnn.geometry.symmetry.symmetry_residuals`,
:func:`~py4dstem_gnn.geometry.symmetry.net_statistics` and
:func:`~py4dstem_gnn.geometry.symmetry.off_net_spots`, and the results are scattered back into
input order: one row per pattern, and per-spot arrays aligned with the rows of the concatenated
input pointlists (``offsets``), so that a caller holding the same pointlists can attach the
``(h, k)`` indices or the canonical-frame coordinates of each spot to its own per-spot features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .cell import NET_TYPES, net_type_scores
from .net import GeometryConfig, NetFit, PaddedSpots, fit_nets, pad_pointlists
from .symmetry import net_statistics, off_net_spots, symmetry_residuals

__all__ = ["PatternGeometry", "pattern_geometry", "canonical_coordinates"]

_TINY = 1e-12


@dataclass
class PatternGeometry:
    """Measured geometry of ``n`` patterns (see the module docstrings of ``net`` and ``symmetry``).

    Per pattern, shape ``(n,)`` unless stated:

    Attributes
    ----------
    n_spots : numpy.ndarray
        Diffracted spots (direct beam excluded), int64.
    found : numpy.ndarray
        bool: a 2D net was found.
    is_row : numpy.ndarray
        bool: all spots on one line through the origin (``a`` is the row vector).
    a, b : numpy.ndarray
        ``(n, 2)`` reduced basis ``a*``, ``b*`` in the lab frame (1/Å); ``|a| <= |b|``,
        ``60 <= gamma* <= 90``; zeros where not found.
    offset : numpy.ndarray
        ``(n, 2)`` fitted net origin (1/Å).
    a_len, b_len, gamma_deg : numpy.ndarray
        ``|a*|``, ``|b*|`` (1/Å), ``gamma*`` (degrees); 0 where not found (``a_len`` is the row
        spacing for rows).
    net_type : numpy.ndarray
        int64 code into :data:`~py4dstem_gnn.geometry.cell.NET_TYPES`, -1 where not found.
    net_scores : numpy.ndarray
        ``(n, 5)`` continuous net-type scores.
    n_indexed, frac_indexed, amp_indexed : numpy.ndarray
        Spots on the net, their share of the spots and of the amplitude ``sqrt(I / I_max)``.
    rms_residual : numpy.ndarray
        RMS distance (1/Å) of the indexed spots from their net points.
    fit_quality : numpy.ndarray
        ``frac_indexed * max(0, 1 - rms_residual / (index_tolerance * a_len))`` in ``[0, 1]``: an
        abstention score (0 where no net).
    frame_angle : numpy.ndarray
        Rotation (radians) bringing ``a*`` onto ``+x``.
    handedness : numpy.ndarray
        Sign of ``a* x b*`` (0 where not found).
    symmetry : numpy.ndarray
        ``(n, 10)`` intensity residuals, columns :data:`~py4dstem_gnn.geometry.symmetry.SYMMETRY_OPERATIONS`.
    lattice_invariant : numpy.ndarray
        ``(n, 10)`` bool: the net itself is invariant under the operation.
    stats : dict
        Output of :func:`~py4dstem_gnn.geometry.symmetry.net_statistics` (per pattern).
    off_net : dict
        Output of :func:`~py4dstem_gnn.geometry.symmetry.off_net_spots` (per pattern).
    offsets : numpy.ndarray
        ``(n + 1,)`` bounds of each pattern in the per-spot arrays (the input rows).
    hk : numpy.ndarray
        ``(S, 2)`` int64 net indices per input row (0 0 for the direct beam and spots off the
        net).
    on_net : numpy.ndarray
        ``(S,)`` bool per input row (False for the direct beam and for spots beyond
        ``max_spots``).
    is_beam : numpy.ndarray
        ``(S,)`` bool: the row is its pattern's direct beam.
    residual : numpy.ndarray
        ``(S,)`` distance (1/Å) from the nearest net point (0 for the beam and unanalysed rows).
    """

    n_spots: np.ndarray
    found: np.ndarray
    is_row: np.ndarray
    a: np.ndarray
    b: np.ndarray
    offset: np.ndarray
    a_len: np.ndarray
    b_len: np.ndarray
    gamma_deg: np.ndarray
    net_type: np.ndarray
    net_scores: np.ndarray
    n_indexed: np.ndarray
    frac_indexed: np.ndarray
    amp_indexed: np.ndarray
    rms_residual: np.ndarray
    fit_quality: np.ndarray
    frame_angle: np.ndarray
    handedness: np.ndarray
    symmetry: np.ndarray
    lattice_invariant: np.ndarray
    stats: dict = field(default_factory=dict)
    off_net: dict = field(default_factory=dict)
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    hk: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    on_net: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    is_beam: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    residual: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return int(len(self.n_spots))

    @property
    def b_over_a(self) -> np.ndarray:
        """``b*/a*`` (>= 1; 0 where not found)."""
        return np.where(self.found, self.b_len / np.maximum(self.a_len, _TINY), 0.0)

    @property
    def net_type_name(self) -> list[str]:
        """Net-type names (``"none"`` where not found)."""
        return [NET_TYPES[t] if t >= 0 else "none" for t in self.net_type]


def _per_pattern(spots: PaddedSpots, fit: NetFit, cfg: GeometryConfig) -> dict[str, np.ndarray]:
    m = spots.mask
    on = fit.on_net
    n = np.maximum(m.sum(axis=1), 1)
    amp = spots.amplitude
    n_idx = on.sum(axis=1)
    rms = np.sqrt((fit.residual**2 * on).sum(axis=1) / np.maximum(n_idx, 1))
    a_len, b_len, gamma = fit.a_len, fit.b_len, fit.gamma_deg
    scores, label = net_type_scores(a_len, b_len, gamma, fit.found, cfg.ratio_tolerance, cfg.angle_tolerance_deg)
    frac = n_idx / n
    quality = frac * np.clip(1 - rms / np.maximum(cfg.index_tolerance * a_len, _TINY), 0, 1)
    sym, inv = symmetry_residuals(spots, fit)
    out = {
        "n_spots": spots.n_spots,
        "found": fit.found,
        "is_row": fit.is_row,
        "a": fit.a,
        "b": fit.b,
        "offset": fit.offset,
        "a_len": np.where(fit.found | fit.is_row, a_len, 0.0),
        "b_len": np.where(fit.found, b_len, 0.0),
        "gamma_deg": gamma,
        "net_type": label,
        "net_scores": scores,
        "n_indexed": n_idx,
        "frac_indexed": np.where(fit.found, frac, 0.0),
        "amp_indexed": np.where(fit.found, (amp * on).sum(axis=1) / np.maximum(amp.sum(axis=1), _TINY), 0.0),
        "rms_residual": np.where(fit.found, rms, 0.0),
        "fit_quality": np.where(fit.found, quality, 0.0),
        "frame_angle": fit.frame_angle,
        "handedness": fit.handedness,
        "symmetry": sym,
        "lattice_invariant": inv,
    }
    out.update({f"stats.{k}": v for k, v in net_statistics(spots, fit).items()})
    out.update({f"off_net.{k}": v for k, v in off_net_spots(spots, fit, cfg).items()})
    return out


def pattern_geometry(
    pointlists: Sequence[np.ndarray],
    config: GeometryConfig | None = None,
    *,
    progress: bool = False,
) -> PatternGeometry:
    """Reduce the net and measure the symmetry of every pattern.

    Parameters
    ----------
    pointlists : sequence of numpy.ndarray
        ``(n_i, 3)`` arrays ``qx, qy`` (1/Å, direct beam near ``q = 0`` included), intensity
        (arbitrary units), as :func:`py4dstem_gnn.predict_pointlists` takes them.
    config : GeometryConfig, optional
        Tolerances and sizes (defaults documented there).
    progress : bool
        Show a tqdm bar over the chunks.

    Returns
    -------
    PatternGeometry
    """
    cfg = config or GeometryConfig()
    n = len(pointlists)
    counts = np.fromiter((len(p) for p in pointlists), dtype=np.int64, count=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    order = np.argsort(counts, kind="stable")
    chunks = [order[s:s + cfg.chunk_size] for s in range(0, n, max(1, cfg.chunk_size))]
    if progress:
        from ..progress import tqdm

        chunks = tqdm(chunks, desc="pattern geometry", unit="chunk")
    rows: dict[str, np.ndarray] = {}
    hk = np.zeros((total, 2), dtype=np.int64)
    on_net = np.zeros(total, dtype=bool)
    is_beam = np.zeros(total, dtype=bool)
    residual = np.zeros(total)
    for idx in chunks:
        spots, beam = pad_pointlists([pointlists[i] for i in idx], cfg)
        fit = fit_nets(spots, cfg)
        res = _per_pattern(spots, fit, cfg)
        for k, v in res.items():
            if k not in rows:
                rows[k] = np.zeros((n,) + v.shape[1:], dtype=v.dtype)
            rows[k][idx] = v
        # per-spot results back to the input rows: chunk row -> global row
        local_off = np.concatenate([[0], np.cumsum(counts[idx])])
        glob = np.repeat(offsets[idx] - local_off[:-1], counts[idx]) + np.arange(local_off[-1])
        is_beam[glob[beam]] = True
        sel = spots.mask
        g = glob[spots.source[sel]]
        hk[g] = np.where(fit.on_net[sel][:, None], fit.hk[sel], 0)
        on_net[g] = fit.on_net[sel]
        residual[g] = fit.residual[sel]
    if n == 0:
        empty = _per_pattern(*_empty_fit(cfg), cfg)
        rows = {k: v[:0] for k, v in empty.items()}
    stats = {k.split(".", 1)[1]: v for k, v in rows.items() if k.startswith("stats.")}
    off = {k.split(".", 1)[1]: v for k, v in rows.items() if k.startswith("off_net.")}
    plain = {k: v for k, v in rows.items() if "." not in k}
    return PatternGeometry(**plain, stats=stats, off_net=off, offsets=offsets, hk=hk, on_net=on_net,
                           is_beam=is_beam, residual=residual)


def _empty_fit(cfg: GeometryConfig) -> tuple[PaddedSpots, NetFit]:
    spots, _ = pad_pointlists([np.zeros((0, 3))], cfg)
    return spots, fit_nets(spots, cfg)


def canonical_coordinates(
    pointlists: Sequence[np.ndarray], geometry: PatternGeometry, *, reflect: bool = False
) -> np.ndarray:
    """Spot positions in each pattern's canonical frame (``a*`` along ``+x``).

    Parameters
    ----------
    pointlists : sequence of numpy.ndarray
        The pointlists ``geometry`` was measured on.
    geometry : PatternGeometry
    reflect : bool
        Also mirror ``y`` where the reduced basis is left-handed, so that ``b*`` has ``y > 0``
        (a mirror, not a rotation: only for inputs that should not see handedness).

    Returns
    -------
    numpy.ndarray
        ``(S, 2)`` float64, aligned with the concatenated input rows; patterns without a net (or
        row) keep their lab coordinates.
    """
    counts = np.diff(geometry.offsets)
    if counts.sum() == 0:
        return np.zeros((0, 2))
    q = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 3)[:, :2] for p in pointlists])
    seg = np.repeat(np.arange(len(counts)), counts)
    t = geometry.frame_angle[seg]
    c, s = np.cos(t), np.sin(t)
    x = c * q[:, 0] - s * q[:, 1]
    y = s * q[:, 0] + c * q[:, 1]
    if reflect:
        y = np.where(geometry.handedness[seg] < 0, -y, y)
    return np.stack([x, y], axis=1)
