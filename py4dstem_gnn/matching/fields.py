"""Per-pattern match fields for the user: named phase (in a compact phase table), zone axis, angle, scale."""

from __future__ import annotations

from typing import Any

import numpy as np

from .bank import TemplateBank
from .matcher import MatchResult
from .orientation import match_orientations

__all__ = ["match_fields"]


def match_fields(match: MatchResult, bank: TemplateBank, phase: np.ndarray, rank: np.ndarray) -> dict[str, Any]:
    """What the maps and predictions report of the match stage.

    Parameters
    ----------
    match : MatchResult
    bank : TemplateBank
    phase : numpy.ndarray
        (n,) bank phase named by the decision (-1 none).
    rank : numpy.ndarray
        (n,) its rank among the match's candidates (-1 none).

    Returns
    -------
    dict
        ``phase`` (n,) int64 index into ``phases`` (-1 none); ``phases`` list of dicts (formula,
        space_group, crystal_system, source; one per phase named, in order of first appearance);
        ``zone_axis`` (n, 3) int64 (0 where no phase); ``in_plane_angle`` (n,) float32 degrees (NaN
        where none); ``bank_index`` (m,) the bank phase of each table row; ``orientation`` (n, 3, 3) float64 (NaN where none); ``match_score`` (n,) float32
        best score of any candidate (NaN where no candidate); ``q_scale`` (n,) float32 fitted scale
        measured / template of the named phase (NaN where none).
    """
    n = len(match)
    named = np.flatnonzero(phase >= 0)
    uniq, first = np.unique(phase[named], return_index=True)
    order = uniq[np.argsort(first)]  # order of first appearance
    new_of = {int(p): i for i, p in enumerate(order)}
    compact = np.full(n, -1, np.int64)
    compact[named] = [new_of[int(p)] for p in phase[named]]
    zone = np.zeros((n, 3), np.int64)
    angle = np.full(n, np.nan, np.float32)
    orient = np.full((n, 3, 3), np.nan)
    scale = np.full(n, np.nan, np.float32)
    for r in np.unique(rank[named]):
        rows = named[rank[named] == r]
        o = match_orientations(match, bank, rank=int(r))
        zone[rows] = o["zone_axis"][rows]
        angle[rows] = np.degrees(o["in_plane_angle"][rows])
        orient[rows] = o["orientation"][rows]
        scale[rows] = match.q_scale[rows, r]
    best = np.where(np.isfinite(match.score[:, 0]), match.score[:, 0], np.nan).astype(np.float32)
    return {"phase": compact, "phases": bank.phases(order), "bank_index": order, "zone_axis": zone, "in_plane_angle": angle,
            "orientation": orient, "match_score": best, "q_scale": scale}
