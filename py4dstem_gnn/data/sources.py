"""Where training and validation patterns come from.

:class:`KinematicSource` draws labelled kinematic patterns on the fly from the structure-factor
library of :mod:`py4dstem_gnn.data.kinematic`: fresh orientations every draw (zone axes by default), a
per-pattern excitation-error width (a kinematic stand-in for thickness), and the realism
augmentations of :mod:`py4dstem_gnn.data.augment`. :func:`load_validation_sets` reads stored pattern
sets (e.g. Bloch-wave) for validation.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .orientations import AXIS_WEIGHT_POWER, check_in_plane, crystal_frame_angle, rotation_with_beam_along, uniform_directions, zone_axis_rotations
from .augment import AugmentConfig, augment_pointlists, random_excitation_sigma
from ..labels import N_CRYSTAL_SYSTEMS, N_SPACE_GROUPS, SG_TO_CS
from .conventional import CONVENTIONAL_PATH, ConventionalTable
from .kinematic import KinematicLibrary, SpotSelection, random_rotations, sample_kinematic
from .structures import load_manifest

__all__ = [
    "KinematicSource",
    "StoredSource",
    "MixedSource",
    "load_pattern_set",
    "load_validation_sets",
    "balanced_weights",
    "space_group_prior",
    "logit_adjustment",
]

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """A JSON-friendly version of an HDF5 attribute (numpy scalars and arrays, bytes)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"array of {value.size}"
    if isinstance(value, np.generic):
        return value.item()
    return value


def balanced_weights(space_group: np.ndarray, power: float) -> np.ndarray:
    """Sampling probabilities ∝ ``n_sg^(-power)`` per material (``n_sg``: materials sharing its group).

    ``power = 0`` samples materials uniformly (space groups by their frequency); ``power = 1``
    samples space groups uniformly.
    """
    sg = np.asarray(space_group)
    _, inverse, counts = np.unique(sg, return_inverse=True, return_counts=True)
    w = counts[inverse].astype(np.float64) ** (-power)
    return w / w.sum()


def space_group_prior(space_group: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Distribution over the 230 space groups of draws with these per-item weights.

    Parameters
    ----------
    space_group : numpy.ndarray
        Space-group number (1..230) of each item.
    weights : numpy.ndarray, optional
        Draw probability of each item (default: uniform).

    Returns
    -------
    numpy.ndarray
        ``(230,)`` probabilities; column ``j`` is space group ``j + 1``.
    """
    sg = np.asarray(space_group, dtype=np.int64)
    w = np.ones(len(sg)) if weights is None else np.asarray(weights, dtype=np.float64)
    p = np.bincount(sg - 1, weights=w, minlength=N_SPACE_GROUPS)[:N_SPACE_GROUPS]
    return p / p.sum()


def logit_adjustment(sampled: np.ndarray, deploy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logit offsets that move a model trained on ``sampled`` class frequencies to ``deploy``.

    Post-hoc logit adjustment (Menon et al., "Long-tail learning via logit adjustment",
    ICLR 2021): a classifier trained with class-balanced sampling learns
    ``p_sampled(y | x)``; adding ``log p_deploy(y) − log p_sampled(y)`` to its logits gives the
    Bayes classifier under the deployment prior. Crystal-system priors are the sums of their
    space groups'. Classes absent from either prior get no offset.

    Parameters
    ----------
    sampled, deploy : numpy.ndarray
        ``(230,)`` space-group distributions (see :func:`space_group_prior`).

    Returns
    -------
    cs_offsets : numpy.ndarray
        ``(7,)``, mean zero over the crystal systems with an offset.
    sg_offsets : numpy.ndarray
        ``(230,)``, mean zero over the space groups with an offset.
    """
    def offsets(p_s: np.ndarray, p_d: np.ndarray) -> np.ndarray:
        ok = (p_s > 0) & (p_d > 0)
        out = np.zeros(len(p_s))
        out[ok] = np.log(p_d[ok]) - np.log(p_s[ok])
        if ok.any():
            out[ok] -= out[ok].mean()
        return out

    sampled = np.asarray(sampled, dtype=np.float64)
    deploy = np.asarray(deploy, dtype=np.float64)
    cs_s = np.bincount(SG_TO_CS, weights=sampled, minlength=N_CRYSTAL_SYSTEMS)
    cs_d = np.bincount(SG_TO_CS, weights=deploy, minlength=N_CRYSTAL_SYSTEMS)
    return offsets(cs_s, cs_d), offsets(sampled, deploy)


def _check_regime(orientations: str, axes: str, random_fraction: float) -> None:
    """Check the orientation regime shared by the numpy and torch kinematic sources."""
    if orientations not in ("zone_axis", "uniform"):
        raise ValueError(f"orientations must be 'zone_axis' or 'uniform', got {orientations!r}")
    if axes not in ("conventional", "primitive"):
        raise ValueError(f"axes must be 'conventional' or 'primitive', got {axes!r}")
    if not 0.0 <= random_fraction <= 1.0:
        raise ValueError(f"random_fraction must be in [0, 1], got {random_fraction}")


def _conventional_table(orientations: str, axes: str,
                        conventional: str | os.PathLike | ConventionalTable | None) -> ConventionalTable | None:
    """The conventional-axis table zone axes of the conventional cell need (None otherwise).

    ``conventional`` is a table, a path, or None for the committed ``data/conventional.npz``.
    """
    if axes != "conventional" or orientations != "zone_axis":
        return None
    if isinstance(conventional, ConventionalTable):
        return conventional
    return ConventionalTable.load(conventional or CONVENTIONAL_PATH)


def _available_materials(wanted: Sequence[int], store: Any, table: ConventionalTable | None) -> np.ndarray:
    """The materials of ``wanted`` that ``store`` (library or tables) and ``table`` both hold."""
    return np.array([m for m in wanted if store.has(m) and (table is None or table.has(m))], dtype=np.int64)


class _MaterialDraws:
    """What the numpy and torch kinematic sources share beyond the simulation itself.

    Both draw class-balanced materials of one manifest split: they set ``materials``,
    ``space_group``, ``weights`` (:func:`balanced_weights`), ``manifest``, ``split``,
    ``split_column``, ``augment``, ``balance_power`` and ``orientations``.
    """

    materials: np.ndarray
    space_group: np.ndarray
    weights: np.ndarray

    def sampled_prior(self) -> np.ndarray:
        """Space-group distribution of this source's draws (after class balancing)."""
        return space_group_prior(self.space_group, self.weights)

    def deploy_prior(self) -> np.ndarray:
        """Space-group distribution of its materials, one vote each (the structure database's)."""
        return space_group_prior(self.space_group)

    def _evaluation_picks(self, per_material: int, seed: int,
                          max_materials: int | None) -> tuple[np.ndarray, np.random.Generator]:
        """Positions (into :attr:`materials`) of a reproducible evaluation set, and the seeded rng.

        ``per_material`` copies of each material, or of a seeded subset of ``max_materials``.
        """
        rng = np.random.default_rng(seed)
        idx = np.arange(len(self.materials))
        if max_materials is not None and max_materials < len(idx):
            idx = np.sort(rng.choice(idx, max_materials, replace=False))
        return np.repeat(idx, per_material), rng

    def _describe_draws(self) -> dict[str, Any]:
        """The part of :meth:`describe` both sources share (split, balancing, augmentation)."""
        return {
            "manifest_attrs": dict(self.manifest.attrs),
            "split": self.split,
            "split_column": self.split_column,
            "n_materials": int(len(self.materials)),
            "n_space_groups": int(len(np.unique(self.space_group))),
            "augmentation": self.augment.to_dict() if self.augment is not None else None,
            "balance_power": self.balance_power,
            "orientations": self.orientations,
        }


class KinematicSource(_MaterialDraws):
    """Kinematic patterns of one split, simulated on the fly.

    Parameters
    ----------
    library : str or path-like or KinematicLibrary
        Structure-factor library (file or shard folder).
    manifest : str or path-like, optional
        Structure manifest (default: the committed one).
    split : str or sequence of str
        Which split(s) to draw materials from.
    augment : bool or AugmentConfig
        Realism augmentations (default on); False gives clean patterns at the reference
        excitation error.
    balance_power : float
        Class-balancing exponent of :func:`balanced_weights`.
    follow : bool
        If the library is a shard folder that is still being written, pick up new shards as they
        appear (checked every ``follow_every`` draws). Exact replay of a resumed run then needs the
        same library state; with a finished library, draws are a pure function of the seed.
    follow_every : int
        Draws between checks for new shards.
    orientations : {"zone_axis", "uniform"}
        Low-index zone axes with a small mis-tilt and random in-plane rotation
        (:func:`~py4dstem_gnn.data.orientations.zone_axis_rotations`, the default), or uniform over SO(3).
    max_index : int
        Largest index of the zone axes when ``orientations="zone_axis"``.
    in_plane : {"random", "crystal"}
        Random in-plane rotation (the default), or py4DSTEM's default detector frame tied to the
        crystal's axes (:func:`~py4dstem_gnn.data.orientations.crystal_frame_x`), for experiments.
    axes : {"conventional", "primitive"}
        Zone axes of the conventional standard cell (the default; needs the table of
        :mod:`py4dstem_gnn.data.conventional`, ``conventional``) or, as before, of the simulated
        primitive cell.
    conventional : str or path-like or ConventionalTable, optional
        The conventional-axis table (default: the committed ``data/conventional.npz``).
    random_fraction : float
        Share of each batch drawn at uniformly random orientations (the second regime: most grains of
        a polycrystal are off any zone axis), the rest at zone axes.
    tilt_deg : float
        Largest mis-tilt off the zone axis, degrees.
    split_column : str
        Manifest column that ``split`` refers to: ``split`` (legacy), ``split_type`` (protocol
        unseen-type) or ``split_material`` (unseen-material).
    selection : SpotSelection, optional
        Which reflections a pattern keeps (default :class:`~py4dstem_gnn.data.kinematic.SpotSelection`,
        matched to Bloch-wave patterns); with augmentation, its excitation-error width is drawn per
        pattern around the rule's (thickness variation, :func:`random_excitation_sigma`).
    """

    def __init__(
        self,
        library: str | os.PathLike | KinematicLibrary,
        manifest: str | os.PathLike | None = None,
        split: str | Sequence[str] = "train",
        augment: bool | AugmentConfig = True,
        balance_power: float = 0.5,
        follow: bool = False,
        follow_every: int = 200,
        orientations: str = "zone_axis",
        max_index: int = 3,
        in_plane: str = "random",
        axes: str = "conventional",
        conventional: str | os.PathLike | ConventionalTable | None = None,
        random_fraction: float = 0.0,
        tilt_deg: float = 1.0,
        selection: SpotSelection | None = None,
        split_column: str = "split",
    ) -> None:
        _check_regime(orientations, axes, random_fraction)
        self.axes = axes
        self.random_fraction = float(random_fraction)
        self.tilt_deg = float(tilt_deg)
        self.selection = selection if selection is not None else SpotSelection()
        if max_index < 1:
            raise ValueError(f"max_index must be at least 1, got {max_index}")
        check_in_plane(in_plane)
        self.conventional = _conventional_table(orientations, axes, conventional)
        self.in_plane = in_plane
        self.orientations = orientations
        self.max_index = max_index
        self.manifest = load_manifest(manifest)
        self.split = split
        self.augment = AugmentConfig() if augment is True else (augment or None)
        self.balance_power = balance_power
        self.split_column = split_column
        self._wanted = self.manifest.indices(split, column=split_column)
        self._follow = follow and not isinstance(library, KinematicLibrary) and Path(library).is_dir()
        self._follow_every = follow_every
        self._draws = 0
        self._n_shards = -1
        if isinstance(library, KinematicLibrary):
            self.library_path = "<in memory>"
            self._set_library(library)
        else:
            self.library_path = str(library)
            self.reload()

    def _shard_count(self) -> int:
        return len(list(Path(self.library_path).glob("shard_*.h5"))) if Path(self.library_path).is_dir() else 1

    def reload(self) -> bool:
        """Re-read the library if its folder holds new shards; returns whether it changed."""
        n = self._shard_count()
        if n == self._n_shards:
            return False
        self._n_shards = n
        self._set_library(KinematicLibrary.load(self.library_path, materials=self._wanted))
        return True

    def _set_library(self, library: KinematicLibrary) -> None:
        self.library = library
        self.materials = _available_materials(self._wanted, library, self.conventional)
        self._rows = np.array([library.row_of(m) for m in self.materials], dtype=np.int64)
        if len(self.materials) == 0:
            raise ValueError(f"no material of split {self.split!r} is in the library {self.library_path}")
        self.space_group = self.manifest["space_group"][self.materials].astype(np.int64)
        self.crystal_system = self.manifest["crystal_system"][self.materials].astype(np.int64)
        self.weights = balanced_weights(self.space_group, self.balance_power)

    def __len__(self) -> int:
        return len(self.materials)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """``n`` patterns: pointlists (direct beam first), crystal-system codes, space-group numbers."""
        self._draws += 1
        if self._follow and self._draws % self._follow_every == 0 and self.reload():
            logger.info("library now holds %d %s materials", len(self.materials), self.split)
        pick = rng.choice(len(self.materials), size=n, p=self.weights)
        return self.patterns(pick, rng)

    def patterns(self, pick: np.ndarray, rng: np.random.Generator, return_meta: bool = False):
        """Patterns of the materials at positions ``pick`` (into :attr:`materials`), fresh orientations.

        Returns pointlists, crystal-system codes and space-group numbers; with ``return_meta`` also a
        dict of per-pattern ``regime`` (0 zone axis, 1 random), ``uvw`` and ``orientation``.
        """
        n = len(pick)
        rows = self._rows[pick]
        regime = np.zeros(n, np.int8)
        uvw = np.zeros((n, 3), np.int64)
        if self.orientations == "zone_axis":
            conv = None if self.conventional is None else self.conventional.matrices(self.materials[pick])
            rotations, uvw = zone_axis_rotations(self.library.lat_inv[rows], rng, max_index=self.max_index,
                                                 in_plane=self.in_plane, conv_map=conv, tilt_deg=self.tilt_deg,
                                                 return_axes=True)
            if self.random_fraction > 0:
                rand = rng.random(n) < self.random_fraction
                if rand.any():
                    rotations[rand] = random_rotations(int(rand.sum()), rng)
                    uvw[rand] = 0
                    regime[rand] = 1
        elif self.in_plane == "random":
            rotations = random_rotations(n, rng)
            regime[:] = 1
        else:
            d = uniform_directions(n, rng)
            rotations = rotation_with_beam_along(d, crystal_frame_angle(d))
            regime[:] = 1
        kw = self.selection.kwargs()
        if self.augment is not None:
            sig = kw["sigma_excitation_error"]
            kw["sigma_excitation_error"] = random_excitation_sigma(n, rng, sig / 2, sig * 2)
        pls = sample_kinematic(self.library, self.materials[pick], rotations, **kw)
        if self.augment is not None:
            pls = augment_pointlists(pls, rng, self.augment)
        out = (pls, self.crystal_system[pick], self.space_group[pick])
        if return_meta:
            return out + ({"regime": regime, "uvw": uvw, "orientation": rotations, "material": self.materials[pick]},)
        return out

    def subset(self, materials: np.ndarray) -> "KinematicSource":
        """A copy of this source that draws only from ``materials`` (material indices it holds).

        Parameters
        ----------
        materials : numpy.ndarray
            Material indices (manifest rows), each one of :attr:`materials`.

        Returns
        -------
        KinematicSource
            Same library, augmentations and balancing, restricted to ``materials``.
        """
        materials = np.asarray(materials, dtype=np.int64)
        keep = np.isin(self.materials, materials)
        if keep.sum() != len(np.unique(materials)):
            raise ValueError("subset() wants materials this source holds")
        out = copy.copy(self)
        out._follow = False
        out.materials = self.materials[keep]
        out._rows = self._rows[keep]
        out.space_group = self.space_group[keep]
        out.crystal_system = self.crystal_system[keep]
        out.weights = balanced_weights(out.space_group, self.balance_power)
        return out

    def fixed_set(self, per_material: int, seed: int, max_materials: int | None = None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """A reproducible evaluation set: ``per_material`` patterns of each (or a seeded subset of) material."""
        pick, rng = self._evaluation_picks(per_material, seed, max_materials)
        return self.patterns(pick, rng)

    def describe(self) -> dict[str, Any]:
        """What this source draws from, for the model card."""
        return {
            "kind": "kinematic, simulated on the fly",
            "library": self.library_path,
            "library_attrs": {k: _plain(v) for k, v in self.library.attrs.items()},
            **self._describe_draws(),
            "max_index": self.max_index,
            "in_plane": self.in_plane,
            "axes": self.axes,
            "axis_weight_power": AXIS_WEIGHT_POWER,
            "tilt_deg": self.tilt_deg,
            "random_fraction": self.random_fraction,
            "spot_selection": self.selection.to_dict(),
        }


def load_validation_sets(
    specs: Sequence[str], materials: Sequence[int] | np.ndarray | None = None
) -> dict[str, tuple[list[np.ndarray], np.ndarray, np.ndarray]]:
    """Read ``NAME=PATH`` stored pattern sets into ``{name: (pointlists, cs, sg)}``.

    ``materials`` (manifest indices), if given, keeps only those materials' patterns: under the
    ``unseen-*`` protocols a stored set may hold materials the run trains on, and validating on
    them would reward memorising.
    """
    out = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if not path:
            name, path = Path(spec).stem, spec
        ps = load_pattern_set(path)
        if materials is not None:
            n = len(ps)
            ps = ps.subset(np.isin(ps.material, np.asarray(materials)))
            logger.info("validation set %s: %d of %d patterns from the held-out materials", name, len(ps), n)
        out[name] = (ps.pointlists, ps.crystal_system.astype(np.int64), ps.space_group.astype(np.int64))
    return out


def load_pattern_set(path: str | os.PathLike):
    """A stored :class:`~py4dstem_gnn.data.dataset.PatternSet`: one HDF5 file, or a folder of finished shards."""
    from .dataset import PatternSet
    from .shards import read_shards

    p = Path(path)
    if p.is_dir():
        return read_shards(sorted(p.glob("shard_*.h5")))[0]
    return PatternSet.from_hdf5(p)


class StoredSource:
    """Patterns drawn at random from stored sets (e.g. Bloch-wave patterns of training materials).

    Parameters
    ----------
    path : path-like or sequence of path-like
        HDF5 pattern set(s) or shard folder(s); several are joined into one pool of patterns.
    augment : bool or AugmentConfig
        Realism augmentations applied to every draw.
    balance_power : float
        Class-balancing exponent (see :func:`balanced_weights`), applied per pattern.
    materials : array of int, optional
        Manifest indices of the materials a draw may come from (the training split of the protocol
        being trained). Patterns of other materials are dropped, so that a set drawn from another
        split cannot leak held-out materials into training.

    Raises
    ------
    ValueError
        If ``materials`` leaves no pattern.
    """

    def __init__(self, path: str | os.PathLike | Sequence[str | os.PathLike], augment: bool | AugmentConfig = True,
                 balance_power: float = 0.5, materials: np.ndarray | Sequence[int] | None = None) -> None:
        from .dataset import PatternSet

        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if not paths:
            raise ValueError("StoredSource needs at least one pattern set")
        self.paths = [str(p) for p in paths]
        self.path = self.paths[0] if len(self.paths) == 1 else ", ".join(self.paths)
        sets = [load_pattern_set(p) for p in paths]
        self.parts = [{"path": p, "n_patterns": len(s), "n_materials": int(len(np.unique(s.material))),
                       "attrs": {k: _plain(v) for k, v in s.attrs.items()}} for p, s in zip(self.paths, sets)]
        patterns = sets[0] if len(sets) == 1 else PatternSet.concatenate(sets)
        self.n_excluded = 0
        if materials is not None:
            keep = np.isin(patterns.material, np.asarray(materials, dtype=np.int64))
            self.n_excluded = int(len(keep) - keep.sum())
            if not keep.any():
                raise ValueError(f"none of the {len(keep)} stored patterns in {self.path} belongs to the training "
                                 "materials of this protocol; the set was drawn from other splits. Simulate one "
                                 "from the protocol's training split (py4dstem-gnn simulate bloch --split train).")
            if self.n_excluded:
                logger.info("stored patterns: %d of %d dropped (materials outside the training split)",
                            self.n_excluded, len(keep))
                patterns = patterns.subset(keep)
        self.patterns = patterns
        self.pointlists = self.patterns.pointlists
        self.crystal_system = self.patterns.crystal_system.astype(np.int64)
        self.space_group = self.patterns.space_group.astype(np.int64)
        self.augment = AugmentConfig() if augment is True else (augment or None)
        self.weights = balanced_weights(self.space_group, balance_power)

    def __len__(self) -> int:
        return len(self.pointlists)

    def sampled_prior(self) -> np.ndarray:
        """Space-group distribution of this source's draws (after class balancing)."""
        return space_group_prior(self.space_group, self.weights)

    def deploy_prior(self) -> np.ndarray:
        """Space-group distribution of its materials, one vote each."""
        _, first = np.unique(self.patterns.material, return_index=True)
        return space_group_prior(self.space_group[first])

    def sample(self, rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """``n`` stored patterns (with replacement), augmented."""
        pick = rng.choice(len(self.pointlists), size=n, p=self.weights)
        pls = [self.pointlists[i] for i in pick]
        if self.augment is not None:
            pls = augment_pointlists(pls, rng, self.augment)
        return pls, self.crystal_system[pick], self.space_group[pick]

    def describe(self) -> dict[str, Any]:
        """What this source draws from."""
        return {
            "kind": "stored patterns",
            "path": self.path,
            "n_patterns": len(self),
            "n_materials": int(len(np.unique(self.patterns.material))),
            "attrs": {k: _plain(v) for k, v in self.patterns.attrs.items()},
            **({"parts": self.parts} if len(self.parts) > 1 else {}),
            "n_excluded_patterns": self.n_excluded,
            "augmentation": self.augment.to_dict() if self.augment is not None else None,
        }


class MixedSource:
    """Each batch: a fixed fraction from one source, the rest from another.

    Parameters
    ----------
    main, other : PatternSource
        Sources; ``other`` supplies ``round(fraction * n)`` patterns of each batch.
    fraction : float
        Share of ``other`` in a batch.
    """

    def __init__(self, main: Any, other: Any, fraction: float) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
        self.main, self.other, self.fraction = main, other, fraction

    def sample(self, rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """A batch mixing the two sources."""
        k = int(round(self.fraction * n))
        a = self.main.sample(rng, n - k)
        b = self.other.sample(rng, k) if k else ([], np.zeros(0, np.int64), np.zeros(0, np.int64))
        return list(a[0]) + list(b[0]), np.concatenate([a[1], b[1]]), np.concatenate([a[2], b[2]])

    def sampled_prior(self) -> np.ndarray:
        """Space-group distribution of the mixed draws."""
        return (1 - self.fraction) * self.main.sampled_prior() + self.fraction * self.other.sampled_prior()

    def deploy_prior(self) -> np.ndarray:
        """The main source's deployment prior."""
        return self.main.deploy_prior()

    def describe(self) -> dict[str, Any]:
        """Both sources and the mixing fraction."""
        describe = lambda s: s.describe() if hasattr(s, "describe") else type(s).__name__  # noqa: E731
        return {"kind": "mixture", "fraction_other": self.fraction, "main": describe(self.main), "other": describe(self.other)}
