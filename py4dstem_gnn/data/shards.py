"""Resumable, atomic HDF5 shards: the machinery shared by the kinematic library and the Bloch-wave sets."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "shard_path",
    "write_h5_atomic",
    "run_sharded",
    "read_shards",
    "merge_shards",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- shards (shared machinery)


def _set_single_thread_env() -> None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def _limit_blas_threads() -> None:
    """Limit BLAS to one thread in this process (env for children, threadpoolctl if present)."""
    _set_single_thread_env()
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - optional
        pass


def shard_path(out_dir: str | Path, index: int) -> Path:
    """File name of shard ``index`` in ``out_dir``."""
    return Path(out_dir) / f"shard_{index:05d}.h5"


def write_h5_atomic(path: str | Path, group: str, arrays: dict, attrs: dict | None = None,
                    compress: Sequence[str] = ()) -> Path:
    """Write arrays into ``group`` of a new HDF5 file, via a temporary name and ``os.replace``.

    A crash leaves at worst a ``*.tmp<pid>`` file, never a truncated ``path``.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with h5py.File(tmp, "w") as h:
        g = h.create_group(group)
        for k, v in arrays.items():
            v = np.asarray(v)
            if k in compress and v.size:
                g.create_dataset(k, data=v, chunks=True, compression="gzip", compression_opts=4, shuffle=True)
            else:
                g.create_dataset(k, data=v)
        for k, v in (attrs or {}).items():
            g.attrs[k] = v
    os.replace(tmp, path)
    return path


def _chunks(materials: Sequence[int], chunk_size: int) -> list[list[int]]:
    mats = [int(m) for m in materials]
    return [mats[i:i + chunk_size] for i in range(0, len(mats), chunk_size)]


def run_sharded(
    task: Callable[..., object],
    chunks: Sequence[Sequence[int]],
    out_dir: str | Path,
    task_kwargs: dict,
    workers: int = 1,
    dask_address: str | None = None,
    progress: bool = True,
    desc: str = "shards",
    deadline: float | None = None,
) -> list[Path]:
    """Run ``task(chunk_index, chunk, out_dir, **task_kwargs)`` for every unfinished shard.

    A shard is finished when its file exists (files are only ever created by an
    atomic rename), so a rerun resumes where an interrupted one stopped. Execution is
    serial (``workers=1``), a local ``multiprocessing`` spawn pool with one BLAS thread
    per worker, or a ``dask.distributed`` cluster (``dask_address``; workers must see
    ``out_dir``). With ``deadline`` (a :func:`time.time` value), no new shard is started
    after it (serial execution) -- the finished shards are a usable prefix.

    Returns
    -------
    list of pathlib.Path
        All shard paths (finished ones included).
    """
    from ..progress import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("shard_*.h5.tmp*"):
        stale.unlink(missing_ok=True)
    todo = [(k, list(c)) for k, c in enumerate(chunks) if not shard_path(out_dir, k).exists()]
    paths = [shard_path(out_dir, k) for k in range(len(chunks))]
    logger.info("%s: %d of %d shards to do in %s", desc, len(todo), len(chunks), out_dir)
    if not todo:
        return paths
    bar = tqdm(total=len(todo), disable=not progress, desc=desc, unit="shard", smoothing=0.1)
    if dask_address:
        from distributed import Client, as_completed

        with Client(dask_address) as client:
            futs = [client.submit(task, k, c, str(out_dir), pure=False, **task_kwargs) for k, c in todo]
            for f in as_completed(futs):
                f.result()
                bar.update()
    elif workers <= 1:
        _limit_blas_threads()
        for k, c in todo:
            if deadline is not None and time.time() > deadline:
                logger.info("%s: deadline reached, stopping before shard %d", desc, k)
                break
            task(k, c, str(out_dir), **task_kwargs)
            bar.update()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed as cf_completed

        _set_single_thread_env()  # inherited by the spawned workers before numpy loads
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                 initializer=_limit_blas_threads) as ex:
            futs = [ex.submit(task, k, c, str(out_dir), **task_kwargs) for k, c in todo]
            for f in cf_completed(futs):
                f.result()
                bar.update()
    bar.close()
    return paths


def read_shards(paths: Iterable[str | Path]):
    """Concatenate finished shards (missing files are ignored) into a :class:`PatternSet`.

    Returns
    -------
    (PatternSet, dict)
        The set and extras: ``n_beams``, ``seconds`` (per pattern), ``skipped``
        (materials over the beam budget), ``n_shards``.
    """
    import h5py

    from .dataset import PatternSet

    sets, nb, secs, skipped = [], [], [], []
    attrs: dict = {}
    for f in paths:
        f = Path(f)
        if not f.exists():
            continue
        with h5py.File(f, "r") as h:
            g = h["patterns"]
            nb.append(g["n_beams"][:])
            secs.append(g["seconds"][:])
            skipped.append(g["skipped"][:])
            attrs = {k: (v.decode() if isinstance(v, bytes) else (v.item() if isinstance(v, np.generic) else v))
                     for k, v in g.attrs.items()}
        sets.append(PatternSet.from_hdf5(f, "patterns"))
    if not sets:
        raise FileNotFoundError("no finished shards")
    ps = PatternSet.concatenate(sets, attrs)
    extras = {"n_beams": np.concatenate(nb), "seconds": np.concatenate(secs),
              "skipped": np.concatenate(skipped), "n_shards": len(sets)}
    return ps, extras


def merge_shards(shard_dir: str | Path, out_path: str | Path, n_shards: int | None = None) -> Path:
    """Merge the finished shards of a directory into one compressed float32 pattern-set file.

    The output's attributes record the simulation parameters, the number of shards
    merged and the materials skipped over the beam budget.
    """
    shard_dir = Path(shard_dir)
    paths = sorted(shard_dir.glob("shard_*.h5")) if n_shards is None else [shard_path(shard_dir, k) for k in range(n_shards)]
    ps, extras = read_shards(paths)
    ps.attrs.update(n_shards=int(extras["n_shards"]), skipped_materials=extras["skipped"].astype(np.int64),
                    mean_seconds_per_pattern=float(np.mean(extras["seconds"])) if len(extras["seconds"]) else 0.0)
    return ps.to_hdf5(out_path)


