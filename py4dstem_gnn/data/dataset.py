"""Stored pattern sets: ragged pointlists with labels, in HDF5.

Format (fixed by the project's internal contract), one HDF5 group per set:

* ``spots`` float32 (total, 3): qx, qy [1/A], intensity; ``offsets`` int64 (n+1,):
  pattern ``i`` is ``spots[offsets[i]:offsets[i+1]]`` (direct beam included, near q = 0);
* ``material`` int64 (n,): row of the structure manifest
  (:func:`py4dstem_gnn.data.structures.load_manifest`);
* ``space_group`` int16 (n,) 1..230; ``crystal_system`` int8 (n,) 0..6;
* ``orientation`` float32 (n, 3, 3): py4DSTEM ``orientation_matrix`` used (columns:
  lab axes in the crystal Cartesian frame);
* optional ``regime`` int8 (n,): 0 zone axis, 1 uniformly random orientation, -1 unknown (sets
  written before regimes existed); ``uvw`` int16 (n, 3): the zone axis in indices of the
  conventional standard cell (0 0 0 for random orientations or unknown);
* attributes: simulation parameters and seed information.

Files are written atomically (temporary name, then :func:`os.replace`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["PatternSet", "DEFAULT_GROUP", "ZONE_AXIS", "RANDOM"]

DEFAULT_GROUP = "patterns"
#: Regime codes of the ``regime`` array.
ZONE_AXIS: int = 0
RANDOM: int = 1


class PatternSet:
    """A set of diffraction patterns (pointlists) with their labels.

    Parameters
    ----------
    spots : numpy.ndarray
        (total, 3) float32 concatenated pointlists.
    offsets : numpy.ndarray
        (n+1,) int64 pattern boundaries in ``spots``.
    material, space_group, crystal_system : numpy.ndarray
        (n,) labels.
    orientation : numpy.ndarray, optional
        (n, 3, 3) orientation matrices (NaN if unknown).
    attrs : dict, optional
        Metadata (simulation parameters, seeds).
    regime : numpy.ndarray, optional
        (n,) :data:`ZONE_AXIS` (0), :data:`RANDOM` (1) or -1 (unknown, the default).
    uvw : numpy.ndarray, optional
        (n, 3) conventional zone-axis indices (zeros where none).
    """

    def __init__(
        self,
        spots: np.ndarray,
        offsets: np.ndarray,
        material: np.ndarray,
        space_group: np.ndarray,
        crystal_system: np.ndarray,
        orientation: np.ndarray | None = None,
        attrs: dict | None = None,
        regime: np.ndarray | None = None,
        uvw: np.ndarray | None = None,
    ) -> None:
        self.spots = np.asarray(spots, dtype=np.float32).reshape(-1, 3)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        n = len(self.offsets) - 1
        self.material = np.asarray(material, dtype=np.int64).reshape(n)
        self.space_group = np.asarray(space_group, dtype=np.int16).reshape(n)
        self.crystal_system = np.asarray(crystal_system, dtype=np.int8).reshape(n)
        if orientation is None:
            orientation = np.full((n, 3, 3), np.nan, dtype=np.float32)
        self.orientation = np.asarray(orientation, dtype=np.float32).reshape(n, 3, 3)
        self.attrs = dict(attrs or {})
        self.regime = (np.full(n, -1, np.int8) if regime is None else np.asarray(regime, dtype=np.int8).reshape(n))
        self.uvw = np.zeros((n, 3), np.int16) if uvw is None else np.asarray(uvw, dtype=np.int16).reshape(n, 3)
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.spots) or np.any(np.diff(self.offsets) < 0):
            raise ValueError("offsets must start at 0, be non-decreasing and end at len(spots)")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pointlists(
        cls,
        pointlists: Sequence[np.ndarray],
        material: Sequence[int],
        space_group: Sequence[int],
        crystal_system: Sequence[int] | None = None,
        orientation: np.ndarray | None = None,
        attrs: dict | None = None,
        regime: np.ndarray | None = None,
        uvw: np.ndarray | None = None,
    ) -> "PatternSet":
        """Build from a list of (n_i, 3) arrays; ``crystal_system`` derived from the space group if omitted."""
        from ..labels import crystal_system_of_space_group

        counts = [len(p) for p in pointlists]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        spots = (np.concatenate([np.asarray(p, np.float32).reshape(-1, 3) for p in pointlists])
                 if pointlists else np.zeros((0, 3), np.float32))
        sg = np.asarray(space_group, dtype=np.int64)
        cs = crystal_system_of_space_group(sg) if crystal_system is None else crystal_system
        return cls(spots, offsets, material, sg, np.asarray(cs).reshape(len(sg)), orientation, attrs, regime, uvw)

    @classmethod
    def concatenate(cls, sets: Sequence["PatternSet"], attrs: dict | None = None) -> "PatternSet":
        """Join several sets (attributes of the first unless given)."""
        if not sets:
            raise ValueError("nothing to concatenate")
        spots = np.concatenate([s.spots for s in sets])
        counts = np.concatenate([np.diff(s.offsets) for s in sets])
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(
            spots, offsets,
            np.concatenate([s.material for s in sets]),
            np.concatenate([s.space_group for s in sets]),
            np.concatenate([s.crystal_system for s in sets]),
            np.concatenate([s.orientation for s in sets]),
            dict(sets[0].attrs) if attrs is None else attrs,
            np.concatenate([s.regime for s in sets]),
            np.concatenate([s.uvw for s in sets]),
        )

    # ------------------------------------------------------------------ I/O

    @classmethod
    def from_hdf5(cls, path: str | Path, group: str = DEFAULT_GROUP) -> "PatternSet":
        """Read a set written by :meth:`to_hdf5` (or any file following the format)."""
        import h5py

        with h5py.File(path, "r") as h:
            if group not in h:
                groups = list(h.keys())
                if len(groups) != 1:
                    raise KeyError(f"group {group!r} not in {path}; groups: {groups}")
                group = groups[0]
            g = h[group]
            orientation = g["orientation"][:] if "orientation" in g else None
            return cls(
                g["spots"][:], g["offsets"][:], g["material"][:], g["space_group"][:],
                g["crystal_system"][:], orientation, {k: _attr(v) for k, v in g.attrs.items()},
                g["regime"][:] if "regime" in g else None, g["uvw"][:] if "uvw" in g else None,
            )

    def to_hdf5(self, path: str | Path, group: str = DEFAULT_GROUP, compression: str | None = "gzip") -> Path:
        """Write atomically to ``path`` (a new file holding one group)."""
        import h5py

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        kw = dict(compression=compression, compression_opts=9, shuffle=True) if compression == "gzip" else {}
        with h5py.File(tmp, "w") as h:
            g = h.create_group(group)
            for name, arr in (("spots", self.spots), ("offsets", self.offsets), ("material", self.material),
                              ("space_group", self.space_group), ("crystal_system", self.crystal_system),
                              ("orientation", self.orientation), ("regime", self.regime), ("uvw", self.uvw)):
                if arr.size and kw:
                    g.create_dataset(name, data=arr, chunks=True, **kw)
                else:
                    g.create_dataset(name, data=arr)
            for k, v in self.attrs.items():
                g.attrs[k] = v
        os.replace(tmp, path)
        return path

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if i < 0:
            i += len(self)
        return self.spots[self.offsets[i]:self.offsets[i + 1]]

    @property
    def pointlists(self) -> list[np.ndarray]:
        """The patterns as a list of (n_i, 3) float32 views (direct beam included)."""
        return [self.spots[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    @property
    def n_spots(self) -> np.ndarray:
        """(n,) number of spots of each pattern (direct beam included)."""
        return np.diff(self.offsets)

    def subset(self, idx: Sequence[int] | np.ndarray | slice) -> "PatternSet":
        """A new set with the patterns ``idx`` (indices, boolean mask or slice), in that order."""
        idx = np.arange(len(self))[idx] if isinstance(idx, slice) else np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        starts, ends = self.offsets[idx], self.offsets[idx + 1]
        counts = ends - starts
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        take = (np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])) if len(idx) else np.zeros(0, np.int64)
        return PatternSet(
            self.spots[take], offsets, self.material[idx], self.space_group[idx],
            self.crystal_system[idx], self.orientation[idx], dict(self.attrs), self.regime[idx], self.uvw[idx],
        )

    def __repr__(self) -> str:
        return (f"PatternSet({len(self)} patterns, {len(np.unique(self.material))} materials, "
                f"{len(self.spots)} spots)")


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v
