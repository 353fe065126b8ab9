"""Kinematic diffraction patterns: a structure-factor library built once with py4DSTEM, and a fast sampler.

    :func:`py4dstem_gnn.data.kinematic_build.build_kinematic_library` computes, once per material, py4DSTEM's kinematic
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

All pointlists are (n, 3) arrays ``qx, qy, I`` in 1/A with the direct beam at ``q = 0``,
as a calibrated py4DSTEM ``BraggVectors`` holds them.
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np


__all__ = [
    "VOLTAGE",
    "SIGMA_EXCITATION_ERROR",
    "TOL_EXCITATION_ERROR_MULT",
    "TOL_INTENSITY",
    "K_MAX",
    "THICKNESS",
    "THERMAL_SIGMA",
    "POTENTIAL",
    "KINEMATIC_DIR",
    "electron_wavelength",
    "random_rotations",
    "material_rng",
    "SpotSelection",
    "LEGACY_SELECTION",
    "KinematicEntry",
    "kinematic_entry",
    "KinematicLibrary",
    "sample_kinematic",
    "sample_batch",
    "kinematic_pattern_py4dstem",
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

KINEMATIC_DIR: Path = Path(__file__).resolve().parents[2] / "data" / "cache" / "kinematic"


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


@dataclass(frozen=True)
class SpotSelection:
    """Which kinematic reflections a pattern keeps, and with what intensity.

    The default is the rule that makes kinematic patterns keep the spots of Bloch-wave patterns
    (300 kV, 20 nm, detection at 1e-4 of the incident beam) at identical orientations, chosen on
    the stored Bloch-wave validation sets by ``benchmarks/spot_selection.py``
    (``benchmarks/results/spot_selection.md``): a Lorentzian excitation-error weight
    ``|F_g|^2 / (1 + s^2 / sigma^2)`` with ``sigma = 0.002`` 1/Å (the ``1/s^2`` tails of a thin
    foil's shape function; ``1/t = 0.005`` 1/Å at 20 nm), reflections within ``10 sigma`` of the
    Ewald sphere, detection above ``1e-5`` (py4DSTEM's ``|F|^2`` units). py4DSTEM's own rule
    (:data:`LEGACY_SELECTION`: Gaussian weight, ``sigma = 0.02``, ``3 sigma``) keeps about four
    times as many spots as the Bloch-wave patterns.

    Attributes
    ----------
    envelope : {"lorentzian", "gaussian"}
    sigma_excitation_error : float
        Width of the excitation-error weight, 1/Å (a per-pattern array may replace it at sampling
        time for thickness variation).
    tol_excitation_error_mult : float
        Reflections farther than ``mult * sigma`` from the Ewald sphere are not excited.
    tol_intensity : float
        Detection threshold on the weighted intensity.
    max_spots : int or None
        Keep at most this many diffracted spots (the brightest).
    """

    envelope: str = "lorentzian"
    sigma_excitation_error: float = 0.002
    tol_excitation_error_mult: float = 10.0
    tol_intensity: float = 1e-5
    max_spots: int | None = None

    def kwargs(self) -> dict:
        """Keyword arguments of :func:`sample_kinematic`."""
        return dict(envelope=self.envelope, sigma_excitation_error=self.sigma_excitation_error,
                    tol_excitation_error_mult=self.tol_excitation_error_mult, tol_intensity=self.tol_intensity,
                    max_spots=self.max_spots)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


#: py4DSTEM's default kinematic rule (what training used before the Bloch-wave match).
LEGACY_SELECTION = SpotSelection(envelope="gaussian", sigma_excitation_error=SIGMA_EXCITATION_ERROR,
                                 tol_excitation_error_mult=TOL_EXCITATION_ERROR_MULT, tol_intensity=TOL_INTENSITY)


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
    max_spots: int | None = None,
    envelope: str = "gaussian",
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
        (see :func:`py4dstem_gnn.data.augment.random_excitation_sigma`: a kinematic stand-in
        for thickness variation).
    tol_excitation_error_mult : float
        Spots with ``|s| > mult * sigma`` are not excited.
    tol_intensity : float
        Detection threshold on the weighted intensity (py4DSTEM units).
    k_max : float, optional
        Drop spots with ``|g| > k_max`` (default: all in the library).
    direct_beam : bool
        Keep the ``g = 0`` spot (the direct beam, intensity ``|F_000|^2``).
    max_spots : int, optional
        Keep only the brightest ``max_spots`` diffracted spots (ties broken by order) besides the
        direct beam.
    envelope : {"gaussian", "lorentzian"}
        Excitation-error weight of a spot: py4DSTEM's ``exp(-s^2 / 2 sigma^2)``, or
        ``1 / (1 + s^2 / sigma^2)``, whose ``1/s^2`` tails follow the shape function of a thin foil.

    Returns
    -------
    list of numpy.ndarray
        B float32 arrays (n_i, 3): qx, qy [1/A], intensity. The direct beam comes first.
    """
    if envelope not in ("gaussian", "lorentzian"):
        raise ValueError(f"envelope must be 'gaussian' or 'lorentzian', got {envelope!r}")
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
            if envelope == "gaussian":
                w = inten[idx] * np.exp(-(s[idx] ** 2) * inv2sig2)
            else:  # lorentzian: the 1/s^2 tails of a thin foil's sinc^2 shape function
                w = inten[idx] / (1.0 + (s[idx] ** 2) * (2.0 * inv2sig2))
            det = w > tol_intensity
            parts.append((sign * g[idx[det], :2], w[det]))
        if max_spots is not None:
            both = np.concatenate([parts[0][1], parts[1][1]])
            if len(both) > max_spots:
                keep = np.zeros(len(both), bool)
                keep[np.argsort(-both, kind="stable")[:max_spots]] = True
                k0 = keep[: len(parts[0][1])]
                k1 = keep[len(parts[0][1]):]
                parts = [(parts[0][0][k0], parts[0][1][k0]), (parts[1][0][k1], parts[1][1][k1])]
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
    augmentations of :mod:`py4dstem_gnn.data.augment` (if ``augment``).

    Returns
    -------
    (pointlists, materials, rotations)
        List of (n_i, 3) float32 arrays, (B,) material ids (look the labels up in the
        manifest), (B, 3, 3) orientation matrices.
    """
    from .augment import augment_pointlists, random_excitation_sigma

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
