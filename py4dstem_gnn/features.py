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
    "collate_padded",
    "polar_features",
    "neighbour_features",
    "spot_features",
    "FEATURE_SETS",
    "feature_names",
]

#: Default distance (1/Å) within which the spot nearest q = 0 is taken as the direct beam.
DEFAULT_BEAM_TOLERANCE: float = 0.05

#: Channels produced by :func:`polar_features`: r, cos θ, sin θ, I/I_max, log10(I/I_max).
N_POLAR_FEATURES: int = 5

#: Angular orders of the neighbour harmonics in :func:`neighbour_features`.
NEIGHBOUR_ORDERS: tuple[int, ...] = (2, 3, 4, 6)

#: Channels produced by :func:`neighbour_features`: d₁, coordination, one harmonic per order.
N_NEIGHBOUR_FEATURES: int = 2 + len(NEIGHBOUR_ORDERS)

#: Feature sets the model can be built with, and their number of channels.
FEATURE_SETS: dict[str, int] = {"polar": N_POLAR_FEATURES, "polar+neighbours": N_POLAR_FEATURES + N_NEIGHBOUR_FEATURES}

_LOG_FLOOR = 1e-4


def _check_feature_set(feature_set: str) -> None:
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose one of {sorted(FEATURE_SETS)}")


def feature_names(feature_set: str) -> list[str]:
    """Names (with units) of the input channels of a feature set, in model order.

    Parameters
    ----------
    feature_set : str
        A key of :data:`FEATURE_SETS`.

    Returns
    -------
    list of str
        One name per channel; ``len == FEATURE_SETS[feature_set]``.
    """
    _check_feature_set(feature_set)
    names = ["r (1/A)", "cos theta", "sin theta", "I/I_max", f"log10(max(I/I_max, {_LOG_FLOOR:g}))"]
    if feature_set == "polar+neighbours":
        names += ["nearest-neighbour distance d1 (1/A)", "first-shell coordination"]
        names += [f"first-shell angular harmonic |<exp({n} i phi)>|" for n in NEIGHBOUR_ORDERS]
    return names


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


def collate_padded(
    spots: torch.Tensor,
    mask: torch.Tensor,
    max_spots: int,
    tolerance: float = DEFAULT_BEAM_TOLERANCE,
    pad_to: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model input from padded pointlists, on their device: :func:`split_direct_beam` + :func:`collate`.

    The torch twin of ``collate([split_direct_beam(p)[0] for p in pointlists], max_spots)`` for
    patterns already padded into one tensor (e.g. by
    :func:`py4dstem_gnn.data.kinematic_torch.sample_kinematic_torch`): per pattern, the real spot
    nearest ``q = 0`` is removed if it lies within ``tolerance``, and the ``max_spots`` brightest of
    the others are kept. The kept spots come brightest first (the model does not depend on their
    order); ties in intensity, which :func:`select_brightest` breaks by radius and angle, are broken
    arbitrarily here.

    Parameters
    ----------
    spots : torch.Tensor
        ``(B, C, 3)`` ``qx, qy, intensity`` with the direct beam among them.
    mask : torch.Tensor
        ``(B, C)`` bool, True for real spots.
    max_spots : int
        Padding cap.
    tolerance : float
        Largest distance (1/A) from the origin at which a spot counts as the direct beam.
    pad_to : int, optional
        Fixed width of the output (e.g. ``max_spots``, for compiled models); default as
        :func:`collate`: ``max(1, min(max_spots, longest list))``.

    Returns
    -------
    spots : torch.Tensor
        ``(B, N, 3)`` float32, zero at padded slots.
    mask : torch.Tensor
        ``(B, N)`` bool.
    """
    b, c = mask.shape
    spots = spots.float()
    r2 = spots[..., 0] ** 2 + spots[..., 1] ** 2
    r2 = torch.where(mask, r2, torch.full_like(r2, float("inf")))
    if c:
        nearest = r2.argmin(dim=1)
        beam = (r2.gather(1, nearest[:, None])[:, 0] <= tolerance**2)
        valid = mask.clone()
        valid[torch.arange(b, device=mask.device), nearest] &= ~beam
    else:
        valid = mask
    n = int(valid.sum(1).max()) if b and c else 0
    width = max(1, min(max_spots, n)) if pad_to is None else int(pad_to)
    key = torch.where(valid, spots[..., 2], torch.full_like(r2, float("-inf")))
    k = min(max_spots, width, c)
    top = key.topk(k, dim=1) if k else None
    out = torch.zeros((b, width, 3), dtype=torch.float32, device=spots.device)
    out_mask = torch.zeros((b, width), dtype=torch.bool, device=spots.device)
    if top is not None:
        kept = top.values > float("-inf")
        out[:, :k] = spots.gather(1, top.indices[..., None].expand(b, k, 3)) * kept[..., None]
        out_mask[:, :k] = kept
    return out, out_mask


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


def neighbour_features(
    spots: torch.Tensor, mask: torch.Tensor, shell_width: float = 0.05, shell_tolerance: float = 0.15
) -> torch.Tensor:
    """Rotation- and permutation-invariant description of each spot's neighbourhood.

    A zone-axis pattern is a 2-D lattice section; its symmetry shows in how neighbours sit around
    every spot. For spot ``i`` with neighbour vectors ``q_j − q_i`` (lengths ``d_ij``, directions
    ``φ_ij``, real spots only) the channels are

    * ``d₁ = min_j d_ij``, the nearest-neighbour distance (1/Å);
    * the coordination ``Σ_j exp(−((d_ij/d₁ − 1)/shell_width)²)``, a soft count of the spots on the
      nearest shell;
    * for ``n`` in :data:`NEIGHBOUR_ORDERS`: ``|Σ_j w_ij e^{i n φ_ij}| / Σ_j w_ij`` over the
      neighbours near the first shell, ``w_ij = exp(−((d_ij/d₁ − 1)/shell_tolerance)²)``: 1 when
      the nearest neighbours have ``n``-fold symmetry (4 for a square, 6 for a hexagonal net;
      a rectangular net has only ``±a`` on its first shell and gives 1 for every even order,
      which the coordination of 2 tells apart) and small otherwise.

    All are symmetric functions of the neighbour set, so ties between equidistant neighbours (the
    rule in a lattice) cannot make the result depend on the order of the spots. Spots without a
    real neighbour get zeros.

    Parameters
    ----------
    spots : torch.Tensor
        ``(B, N, 3)`` ``qx, qy, intensity``.
    mask : torch.Tensor
        ``(B, N)`` bool, True for real spots.
    shell_width : float
        Relative width of the nearest shell in the coordination count.
    shell_tolerance : float
        Relative width of the weights of the angular harmonics (tolerates distorted lattices).

    Returns
    -------
    torch.Tensor
        ``(B, N, N_NEIGHBOUR_FEATURES)``, zero at padded slots.
    """
    q = spots[..., :2].float()
    b, n, _ = q.shape
    diff = q[:, None, :, :] - q[:, :, None, :]  # (B, i, j, 2) = q_j - q_i
    dist = torch.sqrt((diff * diff).sum(-1) + 1e-12)
    eye = torch.eye(n, dtype=torch.bool, device=q.device)
    pair = mask[:, :, None] & mask[:, None, :] & ~eye
    big = torch.finfo(dist.dtype).max
    d1 = dist.masked_fill(~pair, big).amin(-1)  # (B, N)
    has = pair.any(-1)
    d1 = torch.where(has, d1, torch.ones_like(d1))
    rel = dist / d1[..., None]
    pairf = pair.to(dist.dtype)
    coord = (torch.exp(-(((rel - 1.0) / shell_width) ** 2)) * pairf).sum(-1)
    w = torch.exp(-(((rel - 1.0) / shell_tolerance) ** 2)) * pairf
    wsum = w.sum(-1).clamp_min(torch.finfo(dist.dtype).tiny)
    phi = torch.atan2(diff[..., 1], diff[..., 0])
    harmonics = []
    for order in NEIGHBOUR_ORDERS:
        re = (w * torch.cos(order * phi)).sum(-1)
        im = (w * torch.sin(order * phi)).sum(-1)
        harmonics.append(torch.sqrt(re * re + im * im + 1e-12) / wsum)
    feats = torch.stack([d1, coord, *harmonics], dim=-1)
    return feats * (mask & has).unsqueeze(-1).to(feats.dtype)


def spot_features(spots: torch.Tensor, mask: torch.Tensor, feature_set: str = "polar+neighbours") -> torch.Tensor:
    """The per-spot input of the model for a named feature set (see :data:`FEATURE_SETS`).

    ``"polar"`` is the paper's ``[r, θ, I]`` (as :func:`polar_features`); ``"polar+neighbours"``
    appends :func:`neighbour_features`.
    """
    _check_feature_set(feature_set)
    polar = polar_features(spots, mask)
    if feature_set == "polar":
        return polar
    return torch.cat([polar, neighbour_features(spots, mask)], dim=-1)
