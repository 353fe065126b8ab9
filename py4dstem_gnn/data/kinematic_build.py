"""Building the kinematic structure-factor library: py4DSTEM structure factors of every material, in shards.

Read back with :meth:`py4dstem_gnn.data.kinematic.KinematicLibrary.load`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .kinematic import K_MAX, KINEMATIC_DIR, TOL_INTENSITY, KinematicLibrary, kinematic_entry
from .shards import _chunks, run_sharded, shard_path

__all__ = ["build_kinematic_library"]


# --------------------------------------------------------------------------- kinematic library build


def _kinematic_shard_task(index: int, chunk: Sequence[int], out_dir: str, manifest_path: str | None,
                          db_path: str | None, k_max: float, tol_intensity: float) -> Path:
    from .structures import _connect, cell_for_row, load_manifest

    manifest = load_manifest(manifest_path)
    db = _connect(db_path)
    entries = []
    for m in chunk:
        cell = cell_for_row(manifest, m, primitive=True, db=db)
        entries.append(kinematic_entry(cell.to_crystal(), k_max, tol_intensity))
    lib = KinematicLibrary.from_entries(chunk, entries, _kinematic_attrs(k_max, tol_intensity))
    return lib.write(shard_path(out_dir, index))


def _kinematic_attrs(k_max: float, tol_intensity: float) -> dict:
    import py4DSTEM

    return {
        "k_max": float(k_max),
        "tol_intensity": float(tol_intensity),
        "method": "kinematic structure factors, py4DSTEM Crystal.calculate_structure_factors",
        "cell": "spglib standard primitive cell (symprec 1e-3)",
        "friedel_half": 1,
        "py4DSTEM_version": py4DSTEM.__version__,
    }


def build_kinematic_library(
    out_dir: str | Path = KINEMATIC_DIR,
    materials: Sequence[int] | None = None,
    manifest_path: str | Path | None = None,
    db_path: str | Path | None = None,
    k_max: float = K_MAX,
    tol_intensity: float = TOL_INTENSITY,
    chunk_size: int = 500,
    workers: int = 1,
    dask_address: str | None = None,
    progress: bool = True,
) -> list[Path]:
    """Compute the kinematic library of many materials into HDF5 shards (resumable).

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Shard directory (default ``data/cache/kinematic``); read it back with
        :meth:`KinematicLibrary.load`.
    materials : sequence of int, optional
        Manifest material indices (default: all).
    manifest_path, db_path : optional
        Manifest and database (defaults: committed manifest, :func:`default_db_path`).
    k_max, tol_intensity : float
        Reciprocal-space radius (1/A) and the ``|F_g|^2`` below which reflections are dropped.
    chunk_size : int
        Materials per shard.
    workers, dask_address : int, str
        See :func:`run_sharded`.

    Returns
    -------
    list of pathlib.Path
    """
    from .structures import load_manifest

    if materials is None:
        materials = range(len(load_manifest(manifest_path)))
    kwargs = dict(manifest_path=None if manifest_path is None else str(manifest_path),
                  db_path=None if db_path is None else str(db_path), k_max=k_max, tol_intensity=tol_intensity)
    return run_sharded(_kinematic_shard_task, _chunks(materials, chunk_size), out_dir, kwargs,
                       workers=workers, dask_address=dask_address, progress=progress, desc="kinematic library")


