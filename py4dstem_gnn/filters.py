"""Filters on the label maps: minimum spot count, confidence threshold, spatial majority filter.

The last stage before the maps (:func:`py4dstem_gnn.classify_braggvectors`): positions with fewer than
``min_spots`` diffracted spots or a confidence below the threshold are invalid; a ``k x k`` majority
filter over the *valid* neighbours then relabels each valid position (invalid positions neither vote
nor get filled); space groups are filtered within the filtered crystal system, phases within the
phases of that crystal system.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .labels import INVALID, SG_TO_CS

__all__ = ["majority_filter", "filter_maps", "valid_positions"]


def valid_positions(ran: np.ndarray, n_spots: np.ndarray, confidence: np.ndarray, min_spots: int,
                    threshold: float) -> np.ndarray:
    """Positions that keep their labels: classified, enough spots, confident enough."""
    return np.asarray(ran, bool) & (np.asarray(n_spots) >= min_spots) & (np.asarray(confidence) >= threshold)




def _box_count(mask: np.ndarray, size: int) -> np.ndarray:
    """Number of True pixels in the ``size`` × ``size`` window around each pixel."""
    counts = ndimage.uniform_filter(mask.astype(np.float32), size=size, mode="constant", cval=0.0)
    return np.rint(counts * (size * size)).astype(np.int32)


def majority_filter(
    labels: np.ndarray,
    valid: np.ndarray,
    size: int,
    within: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Spatial majority filter over valid neighbours.

    Each valid pixel takes the label held by most valid pixels of the ``size`` ×
    ``size`` window centred on it; ties are resolved in favour of the pixel's own
    label, then the smallest label. Invalid pixels are not voted on and stay
    ``-1``.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (Rx, Ry)
        Label map (values at invalid pixels are ignored).
    valid : numpy.ndarray of bool, shape (Rx, Ry)
    size : int
        Window side (pixels). ``1`` returns the labels unchanged at valid pixels.
    within : numpy.ndarray of int, shape (Rx, Ry), optional
        Restrict the winning label at each pixel to labels ``l`` with
        ``groups[l] == within[pixel]`` (used to keep space groups inside the
        filtered crystal system).
    groups : numpy.ndarray, optional
        Group of each label value (indexable by label), needed with ``within``.

    Returns
    -------
    numpy.ndarray of int64, shape (Rx, Ry)
        Filtered labels, ``-1`` at invalid pixels.
    """
    labels = np.asarray(labels)
    valid = np.asarray(valid, bool)
    out = np.full(labels.shape, INVALID, np.int64)
    if not valid.any():
        return out
    size = int(size)
    if size <= 1:
        out[valid] = labels[valid]
        return out
    best_score = np.full(labels.shape, -1.0, np.float32)
    best = np.full(labels.shape, INVALID, np.int64)
    for lab in np.unique(labels[valid]):
        is_lab = valid & (labels == lab)
        score = _box_count(is_lab, size).astype(np.float32) + 0.5 * is_lab
        better = score > best_score
        if within is not None:
            better &= within == groups[lab]
        best_score[better] = score[better]
        best[better] = lab
    out[valid] = best[valid]
    return out


def filter_maps(
    cs: np.ndarray, sg: np.ndarray, valid: np.ndarray, size: int | None,
    phase: np.ndarray | None = None, phase_cs: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """Majority-filter the crystal-system map, then the space groups (and phases) within it.

    Parameters
    ----------
    cs, sg : numpy.ndarray
        (Rx, Ry) crystal-system and space-group labels.
    valid : numpy.ndarray
        (Rx, Ry) bool.
    size : int or None
        Window side; ``None`` or 1: no filter (labels kept at valid positions).
    phase : numpy.ndarray, optional
        (Rx, Ry) phase index (-1 none): filtered among valid positions that name a phase, within
        the filtered crystal system (``phase_cs`` gives each phase's crystal system).

    Returns
    -------
    tuple of numpy.ndarray
        ``(cs, sg)`` or ``(cs, sg, phase)``, -1 at invalid positions.
    """
    if size is None or int(size) <= 1:
        out = (np.where(valid, cs, INVALID), np.where(valid, sg, INVALID))
        return out + ((np.where(valid, phase, INVALID),) if phase is not None else ())
    cs_f = majority_filter(cs, valid, int(size))
    sg_groups = np.concatenate([[INVALID - 1], SG_TO_CS])  # index by space-group number
    sg_f = majority_filter(sg, valid, int(size), within=cs_f, groups=sg_groups)
    if phase is None:
        return cs_f, sg_f
    named = valid & (phase >= 0)
    ph_f = majority_filter(phase, named, int(size), within=cs_f, groups=np.asarray(phase_cs))
    return cs_f, sg_f, ph_f
