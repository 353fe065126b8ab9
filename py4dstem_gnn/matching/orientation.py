"""Orientations from matches: the rotation that carries a template onto the measured pattern.

A template is the zero-order Laue zone of ``[uvw]`` seen in the frame of
:func:`py4dstem_gnn.data.orientations.zone_axis_rotation` (``in_plane = 0``, orientation ``R0``). The
measured net is that template, re-indexed by the correspondence ``U``, scaled, and carried by a 2D
orthogonal map ``Q`` (least squares over the two basis vectors): a rotation about the beam, or a
reflection, which for a zero-order zone is the pattern seen from the other side (a 180° rotation
about an in-plane axis: the beam then runs along ``-[uvw]``). The 3D orientation is
``R = R0 @ Q3.T`` with ``Q3 = diag(Q, det Q)``, in py4DSTEM's ``orientation_matrix`` convention
(``g_lab = g_crystal @ R``; the third column is the beam direction in crystal coordinates).
"""

from __future__ import annotations

import numpy as np

from ..data.orientations import _in_plane_basis, rotation_with_beam_along
from .bank import TemplateBank
from .matcher import UNIMODULAR, MatchResult

__all__ = ["match_orientations"]


def match_orientations(result: MatchResult, bank: TemplateBank, rank: int = 0) -> dict[str, np.ndarray]:
    """Orientation, signed zone axis and in-plane angle of each pattern's ``rank``-th candidate.

    Parameters
    ----------
    result : MatchResult
        From :func:`~py4dstem_gnn.matching.matcher.match_patterns`.
    bank : TemplateBank
        The bank it was matched against.
    rank : int
        Which candidate (0: the best).

    Returns
    -------
    dict
        ``orientation`` (n, 3, 3) float64 (NaN where no candidate), ``zone_axis`` (n, 3) int64
        (conventional, signed along the beam; 0 where none), ``in_plane_angle`` (n,) float64
        radians in ``[0, 2 pi)`` (NaN where none; the angle of
        :func:`~py4dstem_gnn.data.orientations.rotation_with_beam_along`).
    """
    n = len(result)
    out = {"orientation": np.full((n, 3, 3), np.nan), "zone_axis": np.zeros((n, 3), np.int64),
           "in_plane_angle": np.full(n, np.nan)}
    sel = np.flatnonzero(result.row[:, rank] >= 0)
    if len(sel) == 0 or result.basis is None:
        return out
    row = result.row[sel, rank]
    ph = bank.phase[row]
    uvw = bank.uvw[row].astype(np.float64)
    lat_inv = bank.lat_inv[ph].astype(np.float64)
    conv = bank.conv_map[ph].astype(np.float64)
    prim = np.einsum("ni,nij->nj", uvw, conv)
    lat_real = np.linalg.inv(lat_inv).transpose(0, 2, 1)
    d = np.einsum("ni,nij->nj", prim, lat_real)
    R0 = rotation_with_beam_along(d, np.zeros(len(sel)))
    # template basis (rows) in the template frame
    phi, gam = bank.phi[row].astype(np.float64), np.radians(bank.gamma[row].astype(np.float64))
    hand = bank.hand[row].astype(np.float64)
    a, b = bank.a[row].astype(np.float64), bank.b[row].astype(np.float64)
    T = np.stack([np.stack([a * np.cos(phi), a * np.sin(phi)], -1),
                  np.stack([b * np.cos(phi + hand * gam), b * np.sin(phi + hand * gam)], -1)], axis=1)
    U = UNIMODULAR[result.corr[sel, rank]].astype(np.float64)
    UT = np.einsum("nij,njk->nik", U, T)
    M = result.basis[sel, rank].astype(np.float64)  # measured basis rows the candidate was indexed on
    # Q maximising tr(Q^T M^T UT): SVD of M^T UT (a reflection allowed)
    C = np.einsum("nji,njk->nik", M, UT)
    W, _, Vt = np.linalg.svd(C)
    Q = np.einsum("nij,njk->nik", W, Vt)
    detQ = np.sign(np.linalg.det(Q))
    Q3 = np.zeros((len(sel), 3, 3))
    Q3[:, :2, :2] = Q
    Q3[:, 2, 2] = detQ
    R = np.einsum("nij,nkj->nik", R0, Q3)
    beam = R[:, :, 2]
    e1, e2 = _in_plane_basis(beam)
    x = R[:, :, 0]
    theta = np.mod(np.arctan2(np.einsum("ij,ij->i", x, e2), np.einsum("ij,ij->i", x, e1)), 2 * np.pi)
    out["orientation"][sel] = R
    out["zone_axis"][sel] = (bank.uvw[row].astype(np.int64) * detQ[:, None]).astype(np.int64)
    out["in_plane_angle"][sel] = theta
    return out
