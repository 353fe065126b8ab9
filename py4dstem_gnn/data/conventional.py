"""Conventional cells of the structure pool, in the frame the patterns are simulated in.

Microscopists name zone axes in the *conventional* standard cell (fcc ⟨100⟩, ⟨110⟩, ⟨111⟩; the c axis
of a tetragonal or hexagonal cell), while this package simulates in spglib's standard *primitive*
cell (fewer atoms, same spots). spglib idealises the two cells separately, and for some lattices
(rhombohedral R, Fddd) the two frames are rotated against each other, so the conventional axes are
taken from the primitive cell itself: spglib's symmetry dataset of the primitive cell gives the
transformation matrix ``P`` with ``(a_s, b_s, c_s) = (a, b, c) P^-1`` (column convention), so a
direction ``[uvw]`` of the conventional cell is the direction ``[uvw] @ P^-T`` of the primitive cell,
whatever the frames.

:func:`build_conventional_table` stores ``P^-T`` of every material (a few distinct rational matrices:
the centring of the Bravais lattice, possibly with an axis permutation) in a small committed file,
``data/conventional.npz``, so that sampling zone axes needs neither the database nor spglib.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    "CONVENTIONAL_PATH",
    "conventional_to_primitive",
    "ConventionalTable",
    "build_conventional_table",
]

logger = logging.getLogger(__name__)

#: Committed table of conventional -> primitive index maps, one per manifest material.
CONVENTIONAL_PATH: Path = Path(__file__).resolve().parents[2] / "data" / "conventional.npz"


def conventional_to_primitive(lattice: np.ndarray, positions: np.ndarray, numbers: np.ndarray,
                              symprec: float = 1e-3) -> np.ndarray:
    """Index map from conventional to primitive directions of one (primitive) cell.

    Parameters
    ----------
    lattice : numpy.ndarray
        (3, 3) primitive lattice vectors as rows, Å (the cell patterns are simulated in).
    positions : numpy.ndarray
        (n, 3) fractional coordinates.
    numbers : numpy.ndarray
        (n,) atomic numbers.
    symprec : float
        spglib tolerance, Å.

    Returns
    -------
    numpy.ndarray
        (3, 3) matrix ``M`` such that ``uvw_conv @ M`` is the same direction in primitive indices
        (so ``uvw_conv @ M @ lattice`` is its Cartesian vector in the simulation frame).
    """
    import spglib

    ds = spglib.get_symmetry_dataset((np.asarray(lattice, float), np.asarray(positions, float),
                                      np.asarray(numbers, int)), symprec=symprec)
    if ds is None:
        raise ValueError("spglib found no symmetry dataset for this cell")
    P = np.asarray(ds.transformation_matrix, dtype=np.float64)
    return np.linalg.inv(P).T


class ConventionalTable:
    """Per-material conventional -> primitive index maps (see :func:`conventional_to_primitive`).

    Parameters
    ----------
    material : numpy.ndarray
        (m,) manifest material indices.
    matrix : numpy.ndarray
        (m, 3, 3) maps ``M``.
    """

    def __init__(self, material: np.ndarray, matrix: np.ndarray) -> None:
        self.material = np.asarray(material, dtype=np.int64)
        self.matrix = np.asarray(matrix, dtype=np.float64).reshape(-1, 3, 3)
        self._row = {int(m): i for i, m in enumerate(self.material)}

    def __len__(self) -> int:
        return len(self.material)

    def has(self, material: int) -> bool:
        return int(material) in self._row

    def matrices(self, materials: Sequence[int] | np.ndarray) -> np.ndarray:
        """``(n, 3, 3)`` maps of ``materials`` (KeyError for a material not in the table)."""
        return self.matrix[[self._row[int(m)] for m in np.atleast_1d(materials)]]

    @classmethod
    def load(cls, path: str | Path = CONVENTIONAL_PATH) -> "ConventionalTable":
        """Read the table (``.npz`` with ``material`` and ``matrix``)."""
        with np.load(Path(path)) as z:
            return cls(z["material"], z["matrix"])

    def write(self, path: str | Path = CONVENTIONAL_PATH) -> Path:
        """Write the table compressed; the matrices are rational with denominators 1, 2 or 3."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # store 6 x M as int8: exact for denominators 1, 2, 3
        six = np.round(self.matrix * 6).astype(np.int64)
        if not np.allclose(six / 6.0, self.matrix, atol=1e-6) or np.abs(six).max() > 127:
            raise ValueError("a conventional map is not a small rational matrix with denominator 6")
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, material=self.material, matrix=self.matrix.astype(np.float32))
        tmp.replace(path)
        return path


def build_conventional_table(materials: Sequence[int] | None = None, manifest_path: str | Path | None = None,
                             db_path: str | Path | None = None, progress: bool = True) -> ConventionalTable:
    """Compute the maps of many manifest materials from the structure database.

    Each material's primitive cell is the one the kinematic library and the Bloch-wave sets are
    simulated in (:func:`py4dstem_gnn.data.structures.cell_for_row` with ``primitive=True``).
    """
    from ..progress import tqdm

    from .structures import _connect, cell_for_row, load_manifest

    manifest = load_manifest(manifest_path)
    mats = np.arange(len(manifest)) if materials is None else np.asarray(materials, dtype=np.int64)
    db = _connect(db_path)
    symprec = float(manifest.attrs.get("symprec", 1e-3))
    out = np.empty((len(mats), 3, 3))
    for i, m in enumerate(tqdm(mats, disable=not progress, desc="conventional cells", unit="material")):
        cell = cell_for_row(manifest, int(m), primitive=True, db=db)
        out[i] = conventional_to_primitive(cell.lattice, cell.positions, cell.numbers, symprec)
    return ConventionalTable(mats, out)
