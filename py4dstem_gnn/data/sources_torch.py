"""Labelled kinematic training batches made on the training device (torch).

:class:`TorchKinematicSource` is the torch twin of :class:`~py4dstem_gnn.data.sources.KinematicSource`:
same materials, class balancing, orientation regimes, excitation-error widths and augmentations,
computed for a whole batch at once by :mod:`py4dstem_gnn.data.kinematic_torch` on the device the
model trains on, and handed over as the model's padded input (no CPU workers, no numpy pointlists).
It imports neither py4DSTEM nor spglib nor h5py when its tables are an ``.npz`` file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any, Sequence

import numpy as np
import torch

from .augment import AugmentConfig
from .kinematic import SIGMA_EXCITATION_ERROR
from .kinematic_torch import (KinematicTables, augment_padded, padded_to_pointlists, random_rotations_torch,
                              rotation_with_beam_along_torch, sample_kinematic_torch)
from .sources import _available_materials, _check_regime, _conventional_table, _MaterialDraws, balanced_weights

__all__ = ["TorchKinematicSource", "draw_batch"]

logger = logging.getLogger(__name__)

#: Parameters of the spot-selection rule passed on to :func:`sample_kinematic_torch`.
_SELECTION_KEYS = ("tol_excitation_error_mult", "tol_intensity", "k_max", "direct_beam", "max_spots", "envelope",
                   "rel_threshold", "voltage")


def _selection_kwargs(selection: Any) -> tuple[dict[str, Any], float]:
    """Sampler keyword arguments and the reference excitation-error width of a spot-selection rule.

    ``selection`` is a dict, a dataclass (e.g. :class:`~py4dstem_gnn.data.kinematic.SpotSelection`)
    or None (py4DSTEM's defaults).
    """
    if selection is None:
        return {}, SIGMA_EXCITATION_ERROR
    if dataclasses.is_dataclass(selection):
        selection = dataclasses.asdict(selection)
    elif hasattr(selection, "to_dict"):
        selection = selection.to_dict()
    selection = dict(selection)
    unknown = set(selection) - set(_SELECTION_KEYS) - {"sigma_excitation_error"}
    if unknown:
        raise ValueError(f"unknown spot-selection parameters {sorted(unknown)}")
    sigma = float(selection.get("sigma_excitation_error", SIGMA_EXCITATION_ERROR))
    return {k: v for k, v in selection.items() if k in _SELECTION_KEYS}, sigma


def _zone_axis_table(lat_inv: np.ndarray, max_index: int, conv_map: np.ndarray | None,
                     weight_power: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate axes ``(c, 3)``, per-material draw probabilities ``(n, c)`` and index maps ``(n, 3, 3)``.

    The rule of :func:`py4dstem_gnn.data.orientations.zone_axis_rotations`: conventional axes drawn
    ``∝ |t_uvw|^-p`` when conventional maps are given, else primitive axes ``∝ 1/(u²+v²+w²)``.
    """
    from . import orientations

    uvw, w = orientations.zone_axis_candidates(max_index)
    n = len(lat_inv)
    if conv_map is None:
        return uvw, np.broadcast_to(w, (n, len(w))).copy(), np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
    p = orientations.AXIS_WEIGHT_POWER if weight_power is None else weight_power
    lat_real = np.linalg.inv(lat_inv).transpose(0, 2, 1)
    weights = orientations.axis_lengths(uvw, conv_map, lat_real) ** -float(p)
    return uvw, weights / weights.sum(axis=1, keepdims=True), conv_map


class TorchKinematicSource(_MaterialDraws):
    """Labelled kinematic training batches made on one device, ready for the model.

    Draws like :class:`~py4dstem_gnn.data.sources.KinematicSource` (class-balanced materials of a
    split, zone-axis or uniform orientations, a per-pattern excitation-error width, the realism
    augmentations), with :func:`sample_kinematic_torch` and :func:`augment_padded`, and returns
    the model's padded input (:func:`py4dstem_gnn.features.collate_padded`).

    Parameters
    ----------
    tables : KinematicTables or path-like
        Structure-factor tables (``.npz`` from :func:`export_tables`, or a library).
    manifest : path-like, optional
        Structure manifest (default: the committed one); labels and splits.
    split : str or sequence of str
        Split(s) of ``split_column`` to draw materials from.
    augment : bool or AugmentConfig
        Realism augmentations and per-pattern excitation-error widths (default on).
    balance_power : float
        See :func:`~py4dstem_gnn.data.sources.balanced_weights`.
    orientations : {"zone_axis", "uniform"}
    max_index, tilt_deg : int, float
        Zone axes drawn and their mis-tilt (degrees).
    in_plane : {"random"}
        Only the random in-plane rotation (the crystal frame is an experiment of the numpy source).
    random_fraction : float
        Share of patterns (drawn per pattern) with uniform SO(3) orientations in the zone-axis regime.
    axes : {"conventional", "primitive"}
        Zone axes of the conventional standard cell (default; needs ``conventional``) or of the
        simulated primitive cell (legacy).
    conventional : path-like or ConventionalTable, optional
        Conventional -> primitive index maps (default: the committed ``data/conventional.npz``).
    weight_power : float, optional
        Exponent of the conventional axis weights (default: the orientations module's).
    selection : SpotSelection, dict or None
        Spot-selection rule (default :class:`~py4dstem_gnn.data.kinematic.SpotSelection`); with
        augmentation its excitation-error width is drawn per pattern, log-uniform in
        ``[sigma / 2, 2 sigma]`` (thickness variation), as the numpy source does.
    device : str or torch.device
    dtype : torch.dtype
        Precision of the sampler's geometry.
    split_column : str
        Manifest column of ``split``.
    """

    def __init__(self, tables: KinematicTables | str | os.PathLike, manifest: str | os.PathLike | None = None,
                 split: str | Sequence[str] = "train", augment: bool | AugmentConfig = True, balance_power: float = 0.5,
                 orientations: str = "zone_axis", max_index: int = 3, tilt_deg: float = 1.0, in_plane: str = "random",
                 random_fraction: float = 0.0, axes: str = "conventional", conventional: Any = None,
                 weight_power: float | None = None, selection: Any = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, split_column: str = "split") -> None:
        from .structures import load_manifest

        _check_regime(orientations, axes, random_fraction)
        if in_plane != "random":
            raise ValueError("the torch source draws random in-plane rotations only")
        self.device = torch.device(device)
        self.dtype = dtype
        self.manifest = load_manifest(manifest)
        self.split, self.split_column = split, split_column
        wanted = self.manifest.indices(split, split_column)
        self.tables_path = "<in memory>" if isinstance(tables, KinematicTables) else str(tables)
        if not isinstance(tables, KinematicTables):
            tables = KinematicTables.load(tables, materials=wanted)
        self.tables = tables.to(self.device)
        self.orientations, self.axes = orientations, axes
        table = _conventional_table(orientations, axes, conventional)
        self.materials = _available_materials(wanted, self.tables, table)
        if len(self.materials) == 0:
            raise ValueError(f"no material of split {split!r} is in the tables {self.tables_path}")
        self._rows = torch.as_tensor(self.tables.rows(self.materials), device=self.device)
        self.space_group = self.manifest["space_group"][self.materials].astype(np.int64)
        self.crystal_system = self.manifest["crystal_system"][self.materials].astype(np.int64)
        self.balance_power = balance_power
        self.weights = balanced_weights(self.space_group, balance_power)
        self._weights = torch.as_tensor(self.weights, device=self.device)
        self._cs = torch.as_tensor(self.crystal_system, device=self.device)
        self._sg = torch.as_tensor(self.space_group, device=self.device)
        self.augment = AugmentConfig() if augment is True else (augment or None)
        self.max_index, self.tilt_deg = max_index, float(tilt_deg)
        self.in_plane, self.random_fraction = in_plane, float(random_fraction)
        if selection is None:
            from .kinematic import SpotSelection

            selection = SpotSelection()
        self.selection, self.base_sigma = _selection_kwargs(selection)
        lat_inv = self.tables.lat_inv[self._rows].cpu().numpy()
        self._lat_real = torch.as_tensor(np.linalg.inv(lat_inv).transpose(0, 2, 1), device=self.device)
        conv = None if table is None else table.matrices(self.materials)
        if orientations == "zone_axis":
            uvw, probs, maps = _zone_axis_table(lat_inv, max_index, conv, weight_power)
            self._uvw = torch.as_tensor(uvw, dtype=torch.float64, device=self.device)
            self._axis_probs = torch.as_tensor(probs, device=self.device)
            self._axis_maps = torch.as_tensor(np.asarray(maps, np.float64), device=self.device)

    def __len__(self) -> int:
        return len(self.materials)

    def generator(self, seed: int | Sequence[int]) -> torch.Generator:
        """A torch generator on this source's device, seeded from ``seed`` (ints, e.g. ``[seed, step, rank]``)."""
        gen = torch.Generator(device=self.device)
        words = np.random.SeedSequence(seed).generate_state(2, np.uint32)
        gen.manual_seed((int(words[0]) << 31) | (int(words[1]) >> 1))
        return gen

    def rotations(self, pick: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """``(n, 3, 3)`` float64 orientations for materials at positions ``pick``."""
        n = pick.numel()
        if self.orientations == "uniform":
            return random_rotations_torch(n, gen)
        f64 = torch.float64
        axis = torch.multinomial(self._axis_probs[pick], 1, generator=gen)[:, 0]
        prim = torch.einsum("ni,nij->nj", self._uvw[axis], self._axis_maps[pick])
        sign = torch.where(torch.rand(n, generator=gen, device=gen.device) < 0.5, -1.0, 1.0).to(f64)
        d = torch.einsum("ni,nij->nj", prim * sign[:, None], self._lat_real[pick])
        d = d / torch.linalg.norm(d, dim=1, keepdim=True)
        if self.tilt_deg > 0:
            perp = torch.linalg.cross(d, torch.randn((n, 3), generator=gen, device=gen.device, dtype=f64))
            perp = perp / torch.linalg.norm(perp, dim=1, keepdim=True)
            t = math.radians(self.tilt_deg) * torch.rand((n, 1), generator=gen, device=gen.device, dtype=f64)
            d = torch.cos(t) * d + torch.sin(t) * perp
        R = rotation_with_beam_along_torch(d, 2 * math.pi * torch.rand(n, generator=gen, device=gen.device, dtype=f64))
        if self.random_fraction > 0:
            uniform = torch.rand(n, generator=gen, device=gen.device) < self.random_fraction
            R = torch.where(uniform[:, None, None], random_rotations_torch(n, gen), R)
        return R

    def patterns(self, pick: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded patterns (direct beam included) of the materials at positions ``pick``."""
        n = pick.numel()
        R = self.rotations(pick, gen)
        if self.augment is not None:
            lo, hi = math.log(self.base_sigma / 2), math.log(self.base_sigma * 2)
            sigma = torch.exp(lo + (hi - lo) * torch.rand(n, generator=gen, device=gen.device, dtype=torch.float64))
        else:
            sigma = torch.full((n,), self.base_sigma, dtype=torch.float64, device=self.device)
        spots, mask = sample_kinematic_torch(self.tables, self._rows[pick], R, sigma_excitation_error=sigma,
                                             dtype=self.dtype, **self.selection)
        if self.augment is not None:
            spots, mask = augment_padded(spots, mask, gen, self.augment)
        return spots, mask

    def sample_tensors(self, generator: torch.Generator, n: int, max_spots: int, pad_to: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A training batch: model input ``(n, N, 3)`` and mask, crystal systems and space groups (on the device)."""
        from ..features import collate_padded

        pick = torch.multinomial(self._weights, n, replacement=True, generator=generator)
        spots, mask = self.patterns(pick, generator)
        spots, mask = collate_padded(spots, mask, max_spots, pad_to=pad_to)
        return spots, mask, self._cs[pick], self._sg[pick]

    def sample(self, rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Pointlists (direct beam included) like the numpy sources, seeded from ``rng``."""
        gen = self.generator(rng.integers(0, 2**63 - 1, 2).tolist())
        pick = torch.multinomial(self._weights, n, replacement=True, generator=gen)
        spots, mask = self.patterns(pick, gen)
        idx = pick.cpu().numpy()
        return padded_to_pointlists(spots, mask), self.crystal_system[idx], self.space_group[idx]

    def fixed_set(self, per_material: int, seed: int, max_materials: int | None = None,
                  chunk: int = 2048) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """A reproducible evaluation set: ``per_material`` patterns of each (or a seeded subset of) material."""
        idx, _rng = self._evaluation_picks(per_material, seed, max_materials)
        gen = self.generator([seed])
        pls: list[np.ndarray] = []
        for i in range(0, len(idx), chunk):
            pick = torch.as_tensor(idx[i:i + chunk], device=self.device)
            pls += padded_to_pointlists(*self.patterns(pick, gen))
        return pls, self.crystal_system[idx], self.space_group[idx]

    def describe(self) -> dict[str, Any]:
        """What this source draws from, for the model card."""
        return {
            "kind": "kinematic, simulated on the fly on the training device (torch)",
            "tables": self.tables_path,
            "tables_attrs": self.tables.attrs,
            **self._describe_draws(),
            "axes": self.axes,
            "max_index": self.max_index,
            "tilt_deg": self.tilt_deg,
            "random_fraction": self.random_fraction,
            "spot_selection": {**self.selection, "sigma_excitation_error": self.base_sigma},
        }


def draw_batch(source: Any, rng: np.random.Generator, generator: torch.Generator | None, n: int, max_spots: int,
               device: torch.device, pad_to: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training batch as model input on ``device``, from any pattern source.

    A source with ``sample_tensors`` (:class:`TorchKinematicSource`) makes it on the device from
    ``generator``; a mixture (``main``, ``other``, ``fraction``, e.g.
    :class:`~py4dstem_gnn.data.sources.MixedSource`) whose main source does so gets its other share
    from ``rng`` (numpy pointlists, collated on the CPU); any other source draws numpy pointlists
    from ``rng`` (:func:`~py4dstem_gnn.features.collate` after removing the direct beam).

    Returns
    -------
    spots, mask, crystal_system, space_group : torch.Tensor
        ``(n, N, 3)``, ``(n, N)``, ``(n,)``, ``(n,)`` (space groups 1..230) on ``device``.
    """
    from ..features import collate, split_direct_beam

    def numpy_part(src: Any, k: int) -> tuple[torch.Tensor, ...]:
        pls, cs, sg = src.sample(rng, k)
        spots, mask = collate([split_direct_beam(p)[0] for p in pls], max_spots)
        if pad_to is not None:
            spots = torch.nn.functional.pad(spots[:, :pad_to], (0, 0, 0, pad_to - min(pad_to, spots.shape[1])))
            mask = torch.nn.functional.pad(mask[:, :pad_to], (0, pad_to - min(pad_to, mask.shape[1])))
        as_long = dict(dtype=torch.long, device=device)
        return (spots.to(device), mask.to(device), torch.as_tensor(np.asarray(cs), **as_long),
                torch.as_tensor(np.asarray(sg), **as_long))

    if hasattr(source, "sample_tensors"):
        return source.sample_tensors(generator, n, max_spots, pad_to)
    main = getattr(source, "main", None)
    if main is not None and hasattr(main, "sample_tensors") and hasattr(source, "other"):
        k = int(round(source.fraction * n))
        a = main.sample_tensors(generator, n - k, max_spots, pad_to)
        if k == 0:
            return a
        b = numpy_part(source.other, k)
        width = max(a[0].shape[1], b[0].shape[1])
        pad = [(lambda t, w=width: torch.nn.functional.pad(t, (0, 0, 0, w - t.shape[1]))),
               (lambda t, w=width: torch.nn.functional.pad(t, (0, w - t.shape[1])))]
        return (torch.cat([pad[0](a[0]), pad[0](b[0])]), torch.cat([pad[1](a[1]), pad[1](b[1])]),
                torch.cat([a[2], b[2]]), torch.cat([a[3], b[3]]))
    return numpy_part(source, n)
