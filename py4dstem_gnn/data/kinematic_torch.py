"""Kinematic training patterns made with torch, batched, on the training device.

The numpy sampler of :mod:`py4dstem_gnn.data.kinematic` (checked against py4DSTEM) makes one
pattern at a time on the CPU; a GPU would wait on it. This module makes the same patterns for a
whole batch at once with torch, on any device, and hands the model its padded input directly:

* :class:`KinematicTables` -- the structure-factor library as tensors (per material: Miller
  indices, ``|F_g|^2``, reciprocal basis; ragged with offsets), saved as one ``.npz`` file
  (:func:`export_tables`, ``py4dstem-gnn export-tables``) so that a machine without py4DSTEM (or
  with numpy >= 2) can train;
* :func:`sample_kinematic_torch` -- rotation, excitation error, spot selection and the
  brightest-N cap, with the formulas and parameters of
  :func:`~py4dstem_gnn.data.kinematic.sample_kinematic` (same spots within float tolerance);
* :func:`augment_padded` -- the realism augmentations of
  :func:`~py4dstem_gnn.data.augment.augment_pointlists` (same distributions, a torch random
  stream) on padded batches;
* :class:`~py4dstem_gnn.data.sources_torch.TorchKinematicSource` (next door) draws labelled
  batches with them and returns ``(spots, mask, cs, sg)`` tensors ready for the model.

Nothing here imports py4DSTEM, spglib or h5py (the library is read with h5py only when a
shard folder is given instead of an ``.npz`` file).

Padded layout: ``spots (B, C, 3)`` float32 ``qx, qy, I`` and ``mask (B, C)`` bool. Sampler output
keeps the direct beam in column 0 (masked out when absent) and the diffracted spots after it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .augment import AugmentConfig
from .kinematic import (K_MAX, SIGMA_EXCITATION_ERROR, TOL_EXCITATION_ERROR_MULT, TOL_INTENSITY, VOLTAGE,
                        electron_wavelength)

__all__ = [
    "KinematicTables",
    "export_tables",
    "sample_kinematic_torch",
    "random_rotations_torch",
    "rotation_with_beam_along_torch",
    "augment_padded",
    "padded_to_pointlists",
    "configure_parser",
    "run_cli",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- tables


class KinematicTables:
    """A kinematic structure-factor library as tensors (ragged, with offsets).

    Parameters
    ----------
    material : array_like
        ``(m,)`` manifest material index of each row.
    offsets : array_like
        ``(m + 1,)``; row ``i`` owns reflections ``offsets[i]:offsets[i + 1]``, the first of which is
        ``g = 0`` (one of each Friedel pair follows, as in
        :class:`~py4dstem_gnn.data.kinematic.KinematicLibrary`).
    hkl : array_like
        ``(total, 3)`` Miller indices (held as float32: exact for integers).
    intensity : array_like
        ``(total,)`` ``|F_g|^2``.
    lat_inv : array_like
        ``(m, 3, 3)`` reciprocal bases as rows (1/A), float64.
    attrs : dict, optional
        How the library was built and pruned (``k_max``, ``tol_intensity``, ``min_intensity``,
        ``min_relative``).
    device : str or torch.device
        Where the tensors live.
    """

    def __init__(self, material, offsets, hkl, intensity, lat_inv, attrs: dict | None = None,
                 device: str | torch.device = "cpu") -> None:
        device = torch.device(device)
        self.material = np.asarray(material, dtype=np.int64)
        self.offsets = torch.as_tensor(np.asarray(offsets, dtype=np.int64), device=device)
        # Miller indices by column (3, total): the sampler reads h, k, l of many reflections at once
        self.hkl_t = torch.as_tensor(np.ascontiguousarray(np.asarray(hkl, dtype=np.float32).reshape(-1, 3).T),
                                     device=device)
        self.intensity = torch.as_tensor(np.asarray(intensity, dtype=np.float32), device=device)
        self.lat_inv = torch.as_tensor(np.asarray(lat_inv, dtype=np.float64), device=device)
        self.attrs = dict(attrs or {})
        self._row = {int(m): i for i, m in enumerate(self.material)}

    def __len__(self) -> int:
        return len(self.material)

    @property
    def device(self) -> torch.device:
        return self.hkl_t.device

    @property
    def hkl(self) -> torch.Tensor:
        """``(total, 3)`` Miller indices (a view)."""
        return self.hkl_t.t()

    def has(self, material: int) -> bool:
        return int(material) in self._row

    def rows(self, materials: Sequence[int] | np.ndarray) -> np.ndarray:
        """Table rows of manifest material indices (KeyError if one is absent)."""
        return np.array([self._row[int(m)] for m in np.atleast_1d(materials)], dtype=np.int64)

    def to(self, device: str | torch.device) -> "KinematicTables":
        """The same tables on another device."""
        out = KinematicTables.__new__(KinematicTables)
        out.material, out.attrs, out._row = self.material, self.attrs, self._row
        for name in ("offsets", "hkl_t", "intensity", "lat_inv"):
            setattr(out, name, getattr(self, name).to(device))
        return out

    @classmethod
    def from_library(cls, library, materials: Sequence[int] | None = None, min_intensity: float | None = None,
                     min_relative: float | None = None, k_max: float | None = None,
                     device: str | torch.device = "cpu") -> "KinematicTables":
        """Tables of a :class:`~py4dstem_gnn.data.kinematic.KinematicLibrary`, optionally pruned.

        Pruning is exact for the sampler runs it allows: a spot's weighted intensity never exceeds
        its ``|F_g|^2`` (excitation weight <= 1), so reflections with ``|F_g|^2 <= min_intensity`` (or
        ``< min_relative * |F_000|^2``) can never pass a detection threshold ``tol_intensity >=
        min_intensity`` (``rel_threshold >= min_relative``); :func:`sample_kinematic_torch` refuses
        lower thresholds. ``k_max`` drops reflections with ``|g| > k_max``.

        Parameters
        ----------
        library : KinematicLibrary
        materials : sequence of int, optional
            Keep only these manifest materials.
        min_intensity, min_relative, k_max : float, optional
            Pruning thresholds (see above); the ``g = 0`` row is always kept.
        device : str or torch.device
        """
        rows = np.arange(len(library)) if materials is None else np.array(
            [library.row_of(m) for m in materials if library.has(m)], dtype=np.int64)
        counts = np.diff(library.offsets)[rows]
        seg = np.repeat(np.arange(len(rows)), counts)
        idx = np.concatenate([np.arange(library.offsets[r], library.offsets[r + 1]) for r in rows]) if len(rows) \
            else np.zeros(0, np.int64)
        hkl, inten = library.hkl[idx], library.intensity[idx]
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        keep = np.ones(len(idx), bool)
        if min_intensity is not None:
            keep &= inten > min_intensity
        if min_relative is not None:
            keep &= inten >= min_relative * inten[first][seg]
        if k_max is not None:
            g = np.einsum("ni,nij->nj", hkl.astype(np.float64), library.lat_inv[rows][seg])
            keep &= np.einsum("ij,ij->i", g, g) <= k_max**2
        keep[first[counts > 0]] = True  # g = 0
        new_counts = np.bincount(seg[keep], minlength=len(rows))
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in library.attrs.items()}
        attrs = {k: v for k, v in attrs.items() if isinstance(v, (int, float, str, bool))}
        attrs.update(min_intensity=min_intensity, min_relative=min_relative, pruned_k_max=k_max)
        return cls(library.material[rows], np.concatenate([[0], np.cumsum(new_counts)]), hkl[keep], inten[keep],
                   library.lat_inv[rows], attrs, device)

    def to_library(self):
        """The same reflections as a numpy :class:`~py4dstem_gnn.data.kinematic.KinematicLibrary`."""
        from .kinematic import KinematicLibrary

        return KinematicLibrary(self.material, self.offsets.cpu().numpy(), self.hkl.cpu().numpy(),
                                self.intensity.cpu().numpy(), self.lat_inv.cpu().numpy(), dict(self.attrs))

    def save(self, path: str | os.PathLike) -> Path:
        """Write one compressed ``.npz`` (Miller indices as int16), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        hkl = self.hkl.cpu().numpy()
        if hkl.size and np.abs(hkl).max() > np.iinfo(np.int16).max:
            raise ValueError("Miller indices do not fit int16")
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez_compressed(tmp, material=self.material, offsets=self.offsets.cpu().numpy(), hkl=hkl.astype(np.int16),
                            intensity=self.intensity.cpu().numpy(), lat_inv=self.lat_inv.cpu().numpy(),
                            attrs=np.array(json.dumps(self.attrs)))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
             materials: Sequence[int] | None = None) -> "KinematicTables":
        """Read tables: an ``.npz`` from :meth:`save`, or a library (HDF5 file or shard folder, needs h5py)."""
        path = Path(path)
        if path.suffix != ".npz":
            from .kinematic import KinematicLibrary

            return cls.from_library(KinematicLibrary.load(path, materials=materials), device=device)
        with np.load(path) as z:
            t = cls(z["material"], z["offsets"], z["hkl"], z["intensity"], z["lat_inv"], json.loads(str(z["attrs"])),
                    device)
        if materials is not None:
            keep = [m for m in materials if t.has(m)]
            t = cls.from_library(t.to_library(), keep, device=device)
        return t


def export_tables(library: str | os.PathLike, out: str | os.PathLike, materials: Sequence[int] | None = None,
                  min_intensity: float | None = None, min_relative: float | None = None,
                  k_max: float | None = None) -> Path:
    """Write the tables of a kinematic library (HDF5 file or shard folder) to one ``.npz`` file.

    See :meth:`KinematicTables.from_library` for the (exact) pruning options.
    """
    from .kinematic import KinematicLibrary

    lib = KinematicLibrary.load(library, materials=materials)
    tables = KinematicTables.from_library(lib, min_intensity=min_intensity, min_relative=min_relative, k_max=k_max)
    logger.info("%d materials, %d of %d reflections kept", len(tables), len(tables.intensity), len(lib.intensity))
    return tables.save(out)


# --------------------------------------------------------------------------- sampler


def _check_pruning(tables: KinematicTables, tol_intensity: float, rel_threshold: float | None) -> None:
    lo = tables.attrs.get("min_intensity")
    if lo is not None and tol_intensity < lo:
        raise ValueError(f"these tables dropped |F|^2 <= {lo}: tol_intensity {tol_intensity} needs unpruned tables")
    rel = tables.attrs.get("min_relative")
    if rel is not None and (rel_threshold is None or rel_threshold < rel):
        raise ValueError(f"these tables dropped |F|^2 < {rel} |F_000|^2: rel_threshold must be >= {rel}")


def sample_kinematic_torch(
    tables: KinematicTables,
    rows: torch.Tensor | np.ndarray | Sequence[int],
    rotations: torch.Tensor | np.ndarray,
    voltage: float = VOLTAGE,
    sigma_excitation_error: float | torch.Tensor | np.ndarray = SIGMA_EXCITATION_ERROR,
    tol_excitation_error_mult: float = TOL_EXCITATION_ERROR_MULT,
    tol_intensity: float = TOL_INTENSITY,
    k_max: float | None = None,
    direct_beam: bool = True,
    max_spots: int | None = None,
    envelope: str = "gaussian",
    rel_threshold: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kinematic patterns of a batch of (table row, rotation) pairs, padded, on the tables' device.

    Same formulas and parameters as :func:`~py4dstem_gnn.data.kinematic.sample_kinematic`: ``g_lab =
    hkl @ lat_inv @ R`` for both Friedel mates, excitation error ``s = (2 g_z - lambda |g|^2) / (2 - 2
    lambda g_z)``, spots with ``|s| <= mult * sigma`` (and ``|g| <= k_max``) weighted by the envelope
    (Gaussian ``exp(-s^2 / 2 sigma^2)`` or Lorentzian ``1 / (1 + s^2 / sigma^2)``),
    kept above ``tol_intensity`` (and ``rel_threshold * |F_000|^2``), then the brightest ``max_spots``
    (ties: first in the numpy sampler's order). All patterns are computed together: one dot product
    per reflection selects the few near the Ewald sphere, the rest of the work is on those.

    Parameters
    ----------
    tables : KinematicTables
    rows : array_like of int
        ``(B,)`` table rows (:meth:`KinematicTables.rows` maps manifest materials to rows).
    rotations : array_like
        ``(B, 3, 3)`` orientation matrices (py4DSTEM convention).
    dtype : torch.dtype
        Precision of the geometry: float32 (default, GPUs) or float64 (matches the numpy sampler
        to rounding; selections at a threshold's edge may differ in float32).
    Other parameters
        As :func:`~py4dstem_gnn.data.kinematic.sample_kinematic`.

    Returns
    -------
    spots : torch.Tensor
        ``(B, C, 3)`` float32 ``qx, qy, I``; column 0 is the direct beam (``q = 0``, ``|F_000|^2``),
        then the diffracted spots (brightest first when ``max_spots`` is set); zero at padding.
    mask : torch.Tensor
        ``(B, C)`` bool, True for real spots.
    """
    if envelope not in ("gaussian", "lorentzian"):
        raise ValueError(f"envelope must be 'gaussian' or 'lorentzian', got {envelope!r}")
    _check_pruning(tables, tol_intensity, rel_threshold)
    dev = tables.device
    rows = torch.as_tensor(np.asarray(rows) if not torch.is_tensor(rows) else rows, dtype=torch.long, device=dev)
    b = rows.numel()
    R = torch.as_tensor(rotations, device=dev).to(dtype).reshape(b, 3, 3)
    sigma = torch.as_tensor(sigma_excitation_error, device=dev).to(dtype).expand(b) if b else torch.zeros(0)
    lam = electron_wavelength(voltage)
    gmax2 = float(tables.attrs.get("k_max", K_MAX)) ** 2 if k_max is None else float(k_max) ** 2
    s_max = sigma * tol_excitation_error_mult
    gz_bound = (s_max * (1 + lam * math.sqrt(gmax2)) + 0.5 * lam * gmax2) * 1.001 + 1e-6

    start = tables.offsets[rows]
    i0 = tables.intensity[start].to(dtype)
    count = tables.offsets[rows + 1] - start - 1
    total = int(count.sum()) if b else 0
    first = torch.cumsum(count, 0) - count
    # reflection index of every (pattern, reflection) pair, g = 0 excluded; contiguous per pattern
    idx = torch.repeat_interleave(start + 1 - first, count, output_size=total) + torch.arange(total, device=dev)
    M = tables.lat_inv[rows].to(dtype) @ R  # hkl @ M = g in the lab frame
    # pre-filter in float32 (as the numpy sampler): |s| <= s_max needs |g_z| <= gz_bound
    h = tables.hkl_t.index_select(1, idx)
    mz = torch.repeat_interleave(M[:, :, 2].float().t().contiguous(), count, dim=1, output_size=total)
    bound = torch.repeat_interleave(gz_bound.float(), count, output_size=total)
    gz = h[0] * mz[0] + h[1] * mz[1] + h[2] * mz[2]
    cand = torch.nonzero(gz.abs() <= bound).squeeze(1)
    del h, mz, gz, bound
    cidx = idx[cand]
    cseg = torch.repeat_interleave(torch.arange(b, device=dev), count, output_size=total)[cand]
    g = torch.einsum("ic,cij->cj", tables.hkl_t.index_select(1, cidx).to(dtype), M[cseg])
    gz, g2 = g[:, 2], (g * g).sum(-1)
    inten = tables.intensity[cidx].to(dtype)
    sign = torch.tensor([1.0, -1.0], dtype=dtype, device=dev)[:, None]  # (2, 1): parts +g, -g
    s = (2 * sign * gz - lam * g2) / (2 - 2 * lam * sign * gz)  # (2, c)
    ok = s.abs() <= s_max[cseg]
    if k_max is not None:
        ok &= g2 <= float(k_max) ** 2
    if envelope == "gaussian":
        w = inten * torch.exp(-(s * s) / (2 * sigma[cseg] ** 2))
    else:
        w = inten / (1.0 + (s * s) / sigma[cseg] ** 2)
    ok &= w > tol_intensity
    if rel_threshold is not None:
        ok &= w >= rel_threshold * i0[cseg]
    keep = torch.nonzero(ok.reshape(-1)).squeeze(1)  # part-major: the numpy sampler's order
    c = cand.numel()
    part, j = keep // max(c, 1), keep % max(c, 1)
    q = g[j, :2] * sign[part]
    wk = w.reshape(-1)[keep]
    sk = cseg[j]
    # grouped by pattern (the numpy order within: +g then -g); with a cap, brightest first, the stable
    # sorts keeping the numpy order among equal intensities
    order = torch.arange(wk.numel(), device=dev)
    if max_spots is not None:
        order = torch.sort(wk, descending=True, stable=True).indices
    order = order[torch.sort(sk[order], stable=True).indices]
    q, wk, sk = q[order], wk[order], sk[order]
    n_per = torch.bincount(sk, minlength=b)
    rank = torch.arange(sk.numel(), device=dev) - (torch.cumsum(n_per, 0) - n_per)[sk]
    if max_spots is not None:
        sel = rank < max_spots
        q, wk, sk, rank = q[sel], wk[sel], sk[sel], rank[sel]
        n_per = n_per.clamp(max=max_spots)
    width = 1 + (int(n_per.max()) if b else 0)
    spots = torch.zeros((b, width, 3), dtype=torch.float32, device=dev)
    mask = torch.zeros((b, width), dtype=torch.bool, device=dev)
    spots[sk, rank + 1, :2] = q.float()
    spots[sk, rank + 1, 2] = wk.float()
    mask[sk, rank + 1] = True
    if direct_beam:
        has = i0 > tol_intensity
        spots[:, 0, 2] = torch.where(has, i0, torch.zeros_like(i0)).float()
        mask[:, 0] = has
    return spots, mask


def padded_to_pointlists(spots: torch.Tensor, mask: torch.Tensor) -> list[np.ndarray]:
    """Padded patterns as a list of ``(n_i, 3)`` float32 numpy pointlists (row order kept)."""
    s, m = spots.detach().float().cpu().numpy(), mask.cpu().numpy()
    return [s[i][m[i]] for i in range(len(s))]


# --------------------------------------------------------------------------- orientations


def random_rotations_torch(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(n, 3, 3)`` rotations uniform over SO(3) (Shoemake), on the generator's device.

    The formula of :func:`py4dstem_gnn.data.kinematic.random_rotations`, with a torch random stream.
    """
    u1, u2, u3 = torch.rand((3, n), generator=generator, device=generator.device, dtype=dtype)
    a, b = torch.sqrt(1 - u1), torch.sqrt(u1)
    w, x = a * torch.sin(2 * math.pi * u2), a * torch.cos(2 * math.pi * u2)
    y, z = b * torch.sin(2 * math.pi * u3), b * torch.cos(2 * math.pi * u3)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(n, 3, 3)


def rotation_with_beam_along_torch(direction: torch.Tensor, in_plane: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`py4dstem_gnn.data.orientations.rotation_with_beam_along` (same frame)."""
    d = direction / torch.linalg.norm(direction, dim=1, keepdim=True)
    ex = torch.tensor([1.0, 0.0, 0.0], dtype=d.dtype, device=d.device)
    ey = torch.tensor([0.0, 1.0, 0.0], dtype=d.dtype, device=d.device)
    helper = torch.where(d[:, :1].abs() < 0.9, ex, ey)
    e1 = torch.linalg.cross(helper, d)
    e1 = e1 / torch.linalg.norm(e1, dim=1, keepdim=True)
    e2 = torch.linalg.cross(d, e1)
    x = torch.cos(in_plane)[:, None] * e1 + torch.sin(in_plane)[:, None] * e2
    return torch.stack([x, torch.linalg.cross(d, x), d], dim=-1)


# --------------------------------------------------------------------------- augmentation


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=gen.device, dtype=dtype)


def augment_padded(spots: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                   config: AugmentConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The realism augmentations of :func:`~py4dstem_gnn.data.augment.augment_pointlists`, batched in torch.

    Same steps, order and distributions (calibration error, jitter, intensity distortion, missing
    spots, spurious spots; the direct beam -- the spot nearest ``q = 0`` within
    ``direct_beam_tolerance`` -- is never dropped), with the random numbers drawn from
    ``generator`` (a different stream from numpy's: equal in distribution, not draw for draw).

    Parameters
    ----------
    spots, mask : torch.Tensor
        ``(B, C, 3)`` and ``(B, C)`` padded patterns (not modified).
    generator : torch.Generator
        On the device of ``spots``.
    config : AugmentConfig, optional

    Returns
    -------
    spots, mask : torch.Tensor
        ``(B, C + S, 3)`` float32 and ``(B, C + S)``: dropped spots masked out, ``S`` columns of
        spurious spots appended (``S`` = largest number drawn for a pattern).
    """
    cfg = config or AugmentConfig()
    gen, dev = generator, spots.device
    b, c = mask.shape
    f = torch.float32
    q = spots[..., :2].to(f)
    inten = spots[..., 2].to(f).clamp_min(0.0)
    r0 = torch.linalg.norm(q, dim=-1)
    i_near = torch.where(mask, r0, torch.full_like(r0, float("inf"))).argmin(dim=1)
    is_beam = torch.zeros_like(mask)
    near_r = r0.gather(1, i_near[:, None])[:, 0]
    is_beam[torch.arange(b, device=dev), i_near] = mask.any(1) & (near_r < cfg.direct_beam_tolerance)

    # 1. calibration error: A = s Rot(theta) (I + e (u u^T - v v^T))
    s = 1.0 + _uniform(gen, b, -cfg.scale_error, cfg.scale_error)
    e = _uniform(gen, b, 0.0, cfg.ellipticity)
    phi = _uniform(gen, b, 0.0, math.pi)
    th = torch.deg2rad(_uniform(gen, b, -cfg.rotation_deg, cfg.rotation_deg))
    c2, s2 = torch.cos(2 * phi), torch.sin(2 * phi)
    E = torch.stack([1 + e * c2, e * s2, e * s2, 1 - e * c2], -1).reshape(b, 2, 2)
    Rt = torch.stack([torch.cos(th), -torch.sin(th), torch.sin(th), torch.cos(th)], -1).reshape(b, 2, 2)
    A = s[:, None, None] * (Rt @ E)
    q = torch.einsum("bij,bnj->bni", A, q)
    # 2. jitter
    sig = _uniform(gen, b, 0.0, cfg.jitter)
    q = q + torch.randn(q.shape, generator=gen, device=dev) * sig[:, None, None]
    # 3. intensity distortion, relative to each pattern's brightest diffracted spot
    imax = torch.where(mask & ~is_beam, inten, torch.zeros_like(inten)).amax(dim=1)
    imax_safe = torch.where(imax > 0, imax, torch.ones_like(imax))[:, None]
    gamma = _uniform(gen, b, cfg.gamma_range[0], cfg.gamma_range[1])[:, None]
    inten = imax_safe * torch.pow((inten / imax_safe).clamp_min(0.0), gamma)
    if cfg.intensity_noise > 0:
        inten = inten * torch.exp(cfg.intensity_noise * torch.randn(inten.shape, generator=gen, device=dev))
    # 4. missing spots
    lo, hi = cfg.weak_threshold
    thr = torch.exp(_uniform(gen, b, math.log(lo), math.log(hi))) if hi > 0 else torch.zeros(b, device=dev)
    keep = mask & (inten >= thr[:, None] * imax_safe)
    if cfg.dropout > 0:
        p = _uniform(gen, b, 0.0, cfg.dropout)[:, None]
        keep &= torch.rand(inten.shape, generator=gen, device=dev) >= p
    r = torch.linalg.norm(q, dim=-1)
    if cfg.q_max_range is not None:
        keep &= r <= _uniform(gen, b, cfg.q_max_range[0], cfg.q_max_range[1])[:, None]
    keep |= is_beam
    # 5. spurious spots
    if cfg.spurious_rate > 0:
        n_sp = torch.poisson(torch.full((b,), float(cfg.spurious_rate), device=dev), generator=gen).long()
    else:
        n_sp = torch.zeros(b, dtype=torch.long, device=dev)
    width = int(n_sp.max()) if b else 0
    rmax = torch.where(keep, r, torch.zeros_like(r)).amax(dim=1) if c else torch.zeros(b, device=dev)
    dsel = keep & ~is_beam & (inten > 0)
    nd = dsel.sum(1)
    logsum = torch.log(torch.where(dsel, inten, torch.ones_like(inten))).sum(1)  # log 1 = 0 off the selection
    typical = torch.where(nd > 0, torch.exp(logsum / nd.clamp_min(1)), imax_safe[:, 0])
    sp_mask = torch.arange(width, device=dev)[None, :] < n_sp[:, None]
    rad = torch.sqrt(torch.rand((b, width), generator=gen, device=dev)) * rmax.clamp_min(0.3)[:, None]
    ang = 2 * math.pi * torch.rand((b, width), generator=gen, device=dev)
    sp_i = torch.rand((b, width), generator=gen, device=dev) * cfg.spurious_intensity * typical[:, None]
    sp = torch.stack([rad * torch.cos(ang), rad * torch.sin(ang), sp_i], dim=-1)
    out = torch.cat([torch.cat([q, inten[..., None]], dim=-1), sp], dim=1)
    out_mask = torch.cat([keep, sp_mask], dim=1)
    return out * out_mask[..., None], out_mask


# --------------------------------------------------------------------------- command line


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``py4dstem-gnn export-tables``."""
    parser.description = ("Write the kinematic structure-factor library as one .npz of tables for the torch "
                          "sampler (train --sampler torch; no py4DSTEM or h5py needed to read it).")
    parser.add_argument("--library", required=True, help="library: HDF5 file or shard folder")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--manifest", default=None, help="structure manifest (for --split)")
    parser.add_argument("--split", nargs="*", default=None, help="keep only these splits (default: all materials)")
    parser.add_argument("--split-column", default="split", help="manifest column of --split")
    parser.add_argument("--min-intensity", type=float, default=None,
                        help="drop reflections with |F|^2 <= this (exact for tol_intensity >= it)")
    parser.add_argument("--min-relative", type=float, default=None,
                        help="drop reflections with |F|^2 < this x |F_000|^2 (exact for rel_threshold >= it)")
    parser.add_argument("--k-max", type=float, default=None, help="drop reflections with |g| > this (1/A)")
    parser.add_argument("--max-materials", type=int, default=None,
                        help="keep a seeded random subset of this many materials (files small enough to carry)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --max-materials")


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``py4dstem-gnn export-tables``."""
    materials = None
    if args.split:
        from .structures import load_manifest

        materials = load_manifest(args.manifest).indices(args.split, args.split_column)
    if args.max_materials is not None:
        if materials is None:
            from .kinematic import KinematicLibrary

            materials = KinematicLibrary.load(args.library).material
        materials = np.asarray(materials)
        if args.max_materials < len(materials):
            materials = np.sort(np.random.default_rng(args.seed).choice(materials, args.max_materials, replace=False))
    path = export_tables(args.library, args.out, materials, args.min_intensity, args.min_relative, args.k_max)
    logger.warning("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return 0
