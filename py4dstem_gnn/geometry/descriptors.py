"""A fixed-length, rotation-invariant, NaN-free lattice descriptor per pattern.

:func:`lattice_descriptors` is the entry point for the gradient-boosting reference
(:mod:`py4dstem_gnn.baselines.reference`) and for a lattice token of the network: it turns each
pointlist into ``len(descriptor_names())`` float32 numbers measured by
:func:`~py4dstem_gnn.geometry.pattern.pattern_geometry`. The order below is fixed (append new
entries at the end, never reorder: trained models depend on it). Quantities that do not exist for
a pattern (no net, no Laue layer) are 0 and an explicit flag says so; nothing is NaN or infinite.
All entries are invariant under an in-plane rotation of the pattern and under a permutation of its
spots (the frame angle is not a descriptor).

===========================  =========  ===============================================================
name                         unit       meaning
===========================  =========  ===============================================================
n_spots                      count      diffracted spots (direct beam excluded)
net_found                    flag       a 2D net was found (>= 3 spots indexed, not collinear)
row_only                     flag       all spots on one line through the origin
a_star                       1/Å        ``|a*|`` of the reduced cell (row spacing for rows)
b_star                       1/Å        ``|b*|``
gamma_star                   deg        angle between ``a*`` and ``b*``, 60..90
b_over_a                     1          ``b*/a*`` >= 1
cos_gamma                    1          ``cos gamma*``
cell_area                    1/Å²       ``|a* x b*|``
d_a                          Å          ``1 / a*`` (0 if none)
d_b                          Å          ``1 / b*``
real_area                    Å²         ``1 / |a* x b*|``: projected real-space cell area
score_<type>                 1          continuous net-type score, 5 types (cell.NET_TYPES)
is_<type>                    flag       hard net-type label (one-hot, all 0 without a net)
frac_indexed                 1          share of spots on the net
amp_indexed                  1          share of the amplitude ``sqrt(I/I_max)`` on the net
rms_residual                 1/Å        RMS distance of indexed spots from their net points
rms_residual_rel             1          ``rms_residual / a*``
fit_quality                  1          abstention score in [0, 1] (pattern.PatternGeometry)
origin_offset                1/Å        ``|c|`` of the fit ``q = h a* + k b* + c``
net_fill                     1          distinct indexed spots / net points within r_cut
r_cut                        1/Å        97 % of the largest indexed ``|q|``
q_max                        1/Å        largest ``|q|`` of any diffracted spot
q_median                     1/Å        median ``|q|`` of the diffracted spots
sym_<op>                     1          intensity residual under each op of symmetry.SYMMETRY_OPERATIONS
centring_h, _k, _hk          1          amplitude share with h, k, h + k even
row_odd_<t>, row_even_<t>    1          occupancy of odd / even orders along rows a, b, a+b, a-b
frac_off_net                 1          share of spots off the net
amp_off_net                  1          share of the amplitude off the net
layer_found                  flag       a coherent group of >= 3 off-net spots (a Laue layer)
layer_spots                  count      size of the largest coherent off-net group
layer_radius                 1/Å        its RMS ``|q|``
layer_spacing                1/Å        ``H = lambda G^2 / 2`` (300 kV by default)
layer_repeat                 Å          ``1 / H``
===========================  =========  ===============================================================
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .cell import NET_TYPES
from .net import GeometryConfig
from .pattern import PatternGeometry, pattern_geometry
from .symmetry import ROW_DIRECTIONS, SYMMETRY_OPERATIONS

__all__ = ["descriptor_names", "descriptor_units", "lattice_descriptors", "descriptors_from_geometry"]

_TINY = 1e-12
_ROW_NAMES = ("a", "b", "a+b", "a-b")


def _spec() -> list[tuple[str, str]]:
    spec = [
        ("n_spots", "count"), ("net_found", "flag"), ("row_only", "flag"),
        ("a_star", "1/A"), ("b_star", "1/A"), ("gamma_star", "deg"), ("b_over_a", "1"), ("cos_gamma", "1"),
        ("cell_area", "1/A^2"), ("d_a", "A"), ("d_b", "A"), ("real_area", "A^2"),
    ]
    spec += [(f"score_{t}", "1") for t in NET_TYPES]
    spec += [(f"is_{t}", "flag") for t in NET_TYPES]
    spec += [
        ("frac_indexed", "1"), ("amp_indexed", "1"), ("rms_residual", "1/A"), ("rms_residual_rel", "1"),
        ("fit_quality", "1"), ("origin_offset", "1/A"), ("net_fill", "1"), ("r_cut", "1/A"),
        ("q_max", "1/A"), ("q_median", "1/A"),
    ]
    spec += [(f"sym_{op}", "1") for op in SYMMETRY_OPERATIONS]
    spec += [("centring_h", "1"), ("centring_k", "1"), ("centring_hk", "1")]
    assert len(_ROW_NAMES) == len(ROW_DIRECTIONS)
    spec += [(f"row_odd_{r}", "1") for r in _ROW_NAMES]
    spec += [(f"row_even_{r}", "1") for r in _ROW_NAMES]
    spec += [
        ("frac_off_net", "1"), ("amp_off_net", "1"), ("layer_found", "flag"), ("layer_spots", "count"),
        ("layer_radius", "1/A"), ("layer_spacing", "1/A"), ("layer_repeat", "A"),
    ]
    return spec


_SPEC = _spec()


def descriptor_names() -> list[str]:
    """Names of the columns of :func:`lattice_descriptors`, in order (see the module table)."""
    return [name for name, _ in _SPEC]


def descriptor_units() -> list[str]:
    """Units of the columns of :func:`lattice_descriptors` (``"1"``: dimensionless)."""
    return [unit for _, unit in _SPEC]


def _radial(pointlists: Sequence[np.ndarray], geometry: PatternGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``q_max`` and ``q_median`` of the diffracted spots (0 for empty patterns)."""
    n = len(geometry)
    counts = np.diff(geometry.offsets)
    if counts.sum() == 0:
        return np.zeros(n), np.zeros(n)
    q = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 3)[:, :2] for p in pointlists])
    r = np.hypot(q[:, 0], q[:, 1])
    seg = np.repeat(np.arange(n), counts)
    keep = ~geometry.is_beam
    r, seg = r[keep], seg[keep]
    nd = np.bincount(seg, minlength=n)
    q_max = np.zeros(n)
    np.maximum.at(q_max, seg, r)
    order = np.lexsort((r, seg))
    start = np.concatenate([[0], np.cumsum(nd)[:-1]])
    lo = start + np.maximum(nd - 1, 0) // 2
    hi = start + nd // 2
    rs = r[order]
    med = np.where(nd > 0, 0.5 * (rs[np.minimum(lo, len(rs) - 1)] + rs[np.minimum(hi, len(rs) - 1)]), 0.0)
    return q_max, med


def descriptors_from_geometry(pointlists: Sequence[np.ndarray], geometry: PatternGeometry) -> np.ndarray:
    """The descriptor matrix of an already measured :class:`PatternGeometry`.

    Parameters
    ----------
    pointlists : sequence of numpy.ndarray
        The pointlists ``geometry`` was measured on (for the radial statistics).
    geometry : PatternGeometry

    Returns
    -------
    numpy.ndarray
        ``(n, len(descriptor_names()))`` float32, finite.
    """
    g = geometry
    found = g.found.astype(np.float64)
    a, b = g.a_len, g.b_len
    area = np.abs(g.a[:, 0] * g.b[:, 1] - g.a[:, 1] * g.b[:, 0]) * found
    cos_g = np.where(g.found, np.cos(np.radians(g.gamma_deg)), 0.0)
    onehot = np.zeros((len(g), len(NET_TYPES)))
    has = g.net_type >= 0
    onehot[np.flatnonzero(has), g.net_type[has]] = 1.0
    q_max, q_med = _radial(pointlists, g)
    st, off = g.stats, g.off_net

    def inv(x):
        return np.where(x > _TINY, 1.0 / np.maximum(x, _TINY), 0.0)

    cols = [
        g.n_spots, found, g.is_row, a, b, g.gamma_deg, g.b_over_a, cos_g, area, inv(a), inv(b), inv(area),
        *g.net_scores.T, *onehot.T,
        g.frac_indexed, g.amp_indexed, g.rms_residual, np.where(a > 0, g.rms_residual / np.maximum(a, _TINY), 0.0),
        g.fit_quality, np.hypot(g.offset[:, 0], g.offset[:, 1]), st["fill"], st["r_cut"] * found, q_max, q_med,
        *g.symmetry.T, *st["centring"].T, *st["row_odd"].T, *st["row_even"].T,
        off["frac_off"], off["amp_off"], off["layer_found"], off["layer_spots"], off["layer_radius"],
        off["layer_spacing"], off["layer_repeat"],
    ]
    X = np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1)
    X = np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)
    assert X.shape[1] == len(_SPEC)
    return X.astype(np.float32)


def lattice_descriptors(
    pointlists: Sequence[np.ndarray],
    config: GeometryConfig | None = None,
    *,
    progress: bool = False,
    return_geometry: bool = False,
) -> np.ndarray | tuple[np.ndarray, PatternGeometry]:
    """Fixed-length lattice descriptors of spot patterns.

    Parameters
    ----------
    pointlists : sequence of numpy.ndarray
        ``(n_i, 3)`` arrays ``qx, qy`` (1/Å, direct beam near ``q = 0`` included), intensity
        (arbitrary units).
    config : GeometryConfig, optional
        Tolerances of the net reduction.
    progress : bool
        Show a tqdm bar.
    return_geometry : bool
        Also return the :class:`PatternGeometry` (per-spot indices, canonical frame).

    Returns
    -------
    descriptors : numpy.ndarray
        ``(n, d)`` float32, columns :func:`descriptor_names`, finite.
    geometry : PatternGeometry
        Only if ``return_geometry``.
    """
    geom = pattern_geometry(pointlists, config, progress=progress)
    X = descriptors_from_geometry(pointlists, geom)
    return (X, geom) if return_geometry else X
