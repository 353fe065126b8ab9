"""Pointlists → model input.

A *pointlist* is a float array of shape ``(n, 3)`` holding ``qx, qy`` (1/Å, origin at the direct
beam) and an intensity (arbitrary units), exactly as a calibrated py4DSTEM ``BraggVectors`` holds
the spots of one probe position. This module removes the direct beam, pads lists of diffracted
spots into a batch with a mask, and turns spot coordinates into the per-spot polar features that
the model consumes.

The polar featurisation itself (:func:`polar_features`) runs inside the model, so that the
weights file and its card fully define what the network sees.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = [
    "DEFAULT_BEAM_TOLERANCE",
    "N_POLAR_FEATURES",
    "as_pointlist",
    "split_direct_beam",
    "select_brightest",
    "collate",
    "polar_features",
]

#: Default distance (1/Å) within which the spot nearest q = 0 is taken as the direct beam.
DEFAULT_BEAM_TOLERANCE: float = 0.05

#: Channels produced by :func:`polar_features`: r, cos θ, sin θ, I/I_max, log10(I/I_max).
N_POLAR_FEATURES: int = 5

_LOG_FLOOR = 1e-4


def as_pointlist(pointlist: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Return a pointlist as a float32 array of shape ``(n, 3)``.

    Parameters
    ----------
    pointlist : array_like
        ``(n, 3)`` array of ``qx, qy, intensity``; ``(0, 3)`` and ``(0,)`` are accepted as empty.

    Returns
    -------
    numpy.ndarray
        Float32 ``(n, 3)`` array.

    Raises
    ------
    ValueError
        If the shape is not ``(n, 3)``.
    """
    arr = np.asarray(pointlist, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, 3), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(
            f"a pointlist must have shape (n, 3) with columns qx, qy, intensity; got shape {arr.shape}"
        )
    return arr


def split_direct_beam(
    pointlist: np.ndarray, tolerance: float = DEFAULT_BEAM_TOLERANCE
) -> tuple[np.ndarray, bool]:
    """Remove the direct beam from a pointlist by its position.

    The direct beam is the spot nearest ``q = 0``, provided it lies within ``tolerance``; its
    brightness plays no role (in thick or strongly diffracting regions a Bragg spot can be
    brighter than the transmitted beam).

    Parameters
    ----------
    pointlist : numpy.ndarray
        ``(n, 3)`` array of ``qx, qy, intensity`` (1/Å, origin at the direct beam).
    tolerance : float
        Largest distance from the origin (1/Å) at which a spot counts as the direct beam.

    Returns
    -------
    spots : numpy.ndarray
        ``(m, 3)`` diffracted spots, ``m = n - 1`` if a beam was removed, else ``m = n``.
    removed : bool
        Whether a direct beam was found and removed.
    """
    pl = as_pointlist(pointlist)
    if len(pl) == 0:
        return pl, False
    r2 = pl[:, 0] ** 2 + pl[:, 1] ** 2
    i = int(np.argmin(r2))
    if r2[i] <= tolerance**2:
        return np.delete(pl, i, axis=0), True
    return pl, False


def select_brightest(spots: np.ndarray, max_spots: int) -> np.ndarray:
    """Keep the ``max_spots`` brightest spots, independent of the input order.

    Ties in intensity are broken by radius then angle, so that the kept set does not depend on
    how the spots were listed.
    """
    if len(spots) <= max_spots:
        return spots
    r = np.hypot(spots[:, 0], spots[:, 1])
    theta = np.arctan2(spots[:, 1], spots[:, 0])
    order = np.lexsort((theta, r, -spots[:, 2]))
    return spots[np.sort(order[:max_spots])]


def collate(
    spot_lists: Sequence[np.ndarray], max_spots: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad lists of diffracted spots into a batch.

    Parameters
    ----------
    spot_lists : sequence of numpy.ndarray
        Each ``(m_i, 3)``: ``qx, qy, intensity`` of the diffracted spots (direct beam removed).
    max_spots : int
        Padding cap; longer lists keep their ``max_spots`` brightest spots.

    Returns
    -------
    spots : torch.Tensor
        ``(B, N, 3)`` float32, zero at padded slots; ``N = max(1, min(max_spots, max m_i))``.
    mask : torch.Tensor
        ``(B, N)`` bool, True for real spots. A row may be all False (no diffracted spot).
    """
    kept = [select_brightest(as_pointlist(s), max_spots) for s in spot_lists]
    n = max([1] + [len(s) for s in kept])
    out = np.zeros((len(kept), n, 3), dtype=np.float32)
    mask = np.zeros((len(kept), n), dtype=bool)
    for b, s in enumerate(kept):
        out[b, : len(s)] = s
        mask[b, : len(s)] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


def polar_features(spots: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-spot polar features ``[r, cos θ, sin θ, I/I_max, log10(I/I_max)]``.

    The paper feeds ``[r, θ, I]``; θ is given here as ``(cos θ, sin θ)`` so that the feature is
    continuous across ±π, and the intensity is taken relative to the brightest diffracted spot of
    the pattern (arbitrary detector units cancel), both linearly and logarithmically (floored at
    1e-4) so that weak spots are not invisible.

    Parameters
    ----------
    spots : torch.Tensor
        ``(B, N, 3)`` ``qx, qy, intensity``.
    mask : torch.Tensor
        ``(B, N)`` bool, True for real spots.

    Returns
    -------
    torch.Tensor
        ``(B, N, 5)`` features, zero at padded slots.
    """
    qx, qy, inten = spots.unbind(-1)
    r = torch.sqrt(qx * qx + qy * qy)
    safe_r = torch.where(r > 0, r, torch.ones_like(r))
    cos_t = torch.where(r > 0, qx / safe_r, torch.ones_like(r))
    sin_t = torch.where(r > 0, qy / safe_r, torch.zeros_like(r))
    inten = torch.where(mask, inten.clamp_min(0.0), torch.zeros_like(inten))
    i_max = inten.amax(dim=1, keepdim=True).clamp_min(torch.finfo(inten.dtype).tiny)
    i_rel = inten / i_max
    log_i = torch.log10(i_rel.clamp_min(_LOG_FLOOR))
    feats = torch.stack([r, cos_t, sin_t, i_rel, log_i], dim=-1)
    return feats * mask.unsqueeze(-1).to(feats.dtype)
