"""Bloch-wave (dynamical) diffraction patterns with py4DSTEM, for stored evaluation and fine-tuning sets.

    :func:`bloch_pattern` follows the py4DSTEM recipe (300 kV, "WK-CP" potentials,
    thermal_sigma 0.08 A, excitation-error sigma 0.02 1/A, k_max 2 1/A, thickness 20 nm):
    ``calculate_dynamical_structure_factors(300e3, "WK-CP", k_max=2*k_max,
    thermal_sigma=0.08)``, beams from ``generate_diffraction_pattern``, then
    ``generate_dynamical_diffraction_pattern(beams, thickness=200,
    zone_axis_cartesian=R[:, 2])``. :func:`simulate_bloch_set` writes one HDF5 shard per
    chunk of materials (atomic, resumable, seeded per material) and merges them.

"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .kinematic import K_MAX, POTENTIAL, SIGMA_EXCITATION_ERROR, THERMAL_SIGMA, THICKNESS, TOL_EXCITATION_ERROR_MULT, TOL_INTENSITY, VOLTAGE, material_rng
from .conventional import conventional_to_primitive
from .dataset import RANDOM, ZONE_AXIS
from .kinematic import random_rotations
from .orientations import zone_axis_rotations
from .shards import _chunks, run_sharded, shard_path, write_h5_atomic

__all__ = [
    "MAX_BEAMS",
    "MAX_DYNAMICAL_ELEMENTS",
    "MAX_TILING_POINTS",
    "BLOCH_TOL_INTENSITY",
    "STORED_TILT_DEG",
    "BlochParams",
    "prepare_bloch_crystal",
    "dynamical_setup_size",
    "bloch_beams",
    "bloch_pattern",
    "bloch_patterns_for_material",
    "simulate_bloch_set",
]

logger = logging.getLogger(__name__)

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
#: Largest mis-tilt off the zone axis of stored sets, degrees.
STORED_TILT_DEG: float = 0.5
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
    prepared: bool = False, regime: str = "zone_axis", conv_map: np.ndarray | None = None,
    tilt_deg: float = STORED_TILT_DEG, return_axes: bool = False,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray] | tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray] | None:
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
    regime : {"zone_axis", "random"}
        Distinct low-index zone axes (mis-tilt up to ``tilt_deg``, random in-plane angle) or
        orientations uniform over SO(3).
    conv_map : numpy.ndarray, optional
        (3, 3) conventional -> primitive index map of the crystal
        (:func:`py4dstem_gnn.data.conventional.conventional_to_primitive`): zone axes of the
        conventional cell, weighted by :data:`~py4dstem_gnn.data.orientations.AXIS_WEIGHT_POWER`.
        Without it, the legacy primitive-cell axes.
    tilt_deg : float
        Largest mis-tilt off the zone axis, degrees.
    return_axes : bool
        Also return the ``(n, 3)`` zone axes drawn (zeros for random orientations).

    Returns
    -------
    (pointlists, orientations, n_beams[, axes]) or None
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
    rng = material_rng(seed, material, "bloch" if regime == "zone_axis" else "bloch-random")
    if regime == "zone_axis":
        # zone axes, distinct per material
        lat_inv = np.repeat(np.asarray(crystal.lat_inv, dtype=np.float64)[None], n_orientations, axis=0)
        if conv_map is None:
            R, axes = zone_axis_rotations(lat_inv, rng, distinct=True, return_axes=True)
        else:
            R, axes = zone_axis_rotations(lat_inv, rng, distinct=True, conv_map=conv_map, tilt_deg=tilt_deg,
                                          return_axes=True)
    elif regime == "random":
        R, axes = random_rotations(n_orientations, rng), np.zeros((n_orientations, 3), np.int64)
    else:
        raise ValueError(f"regime must be 'zone_axis' or 'random', got {regime!r}")
    beams = [bloch_beams(crystal, r, p) for r in R]
    n_beams = np.array([b.data.shape[0] for b in beams])
    if n_beams.max(initial=0) > p.max_beams:
        logger.info("material %d skipped: %d beams > %d", material, n_beams.max(), p.max_beams)
        return None
    if not prepared:
        prepare_bloch_crystal(crystal, p)
    pls = [bloch_pattern(crystal, r, p, b) for r, b in zip(R, beams)]
    return (pls, R, n_beams, axes) if return_axes else (pls, R, n_beams)


def _bloch_shard_task(index: int, chunk: Sequence[int], out_dir: str, n_orientations: int, seed: int,
                      params: dict, manifest_path: str | None, db_path: str | None,
                      cells: dict | None = None, regime: str = "zone_axis", axes: str = "conventional",
                      tilt_deg: float = STORED_TILT_DEG) -> Path:
    """Simulate one chunk of materials and write its shard atomically."""
    from ..labels import crystal_system_of_space_group

    p = BlochParams(**params)
    if cells is None:
        from .structures import _connect, cell_for_row, load_manifest

        manifest = load_manifest(manifest_path)
        db = _connect(db_path)
    pls: list[np.ndarray] = []
    mats, sgs, Rs, nb, secs, skipped, uvws = [], [], [], [], [], [], []
    for m in chunk:
        t0 = time.perf_counter()
        if cells is None:
            cell = cell_for_row(manifest, m, primitive=True, db=db)
            sg = int(manifest["space_group"][m])
        else:
            cell, sg = cells[m]
        conv_map = None
        if regime == "zone_axis" and axes == "conventional":
            conv_map = conventional_to_primitive(cell.lattice, cell.positions, cell.numbers)
        try:
            res = bloch_patterns_for_material(cell.to_crystal(), m, n_orientations, seed, p, regime=regime,
                                              conv_map=conv_map, tilt_deg=tilt_deg, return_axes=True)
        except MemoryError:  # safety net under a memory limit (ulimit -v); logged, counted as skipped
            logger.warning("material %d skipped: MemoryError", m)
            res = None
        if res is None:
            skipped.append(m)
            continue
        out, R, n_beams, uvw = res
        uvws.append(uvw)
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
        "regime": np.full(len(pls), ZONE_AXIS if regime == "zone_axis" else RANDOM, dtype=np.int8),
        "uvw": np.concatenate(uvws).astype(np.int16) if uvws else np.zeros((0, 3), np.int16),
        "n_beams": np.concatenate(nb).astype(np.int32) if nb else np.zeros(0, np.int32),
        "seconds": np.array(secs, dtype=np.float32),
        "chunk": np.array(list(chunk), dtype=np.int64),
        "skipped": np.array(skipped, dtype=np.int64),
    }
    attrs = p.attrs()
    attrs.update(seed=int(seed), n_orientations=int(n_orientations), regime=regime, axes=axes,
                 tilt_deg=float(tilt_deg),
                 seed_info=("orientations: zone_axis_rotations(lat_inv, numpy.random.default_rng([seed, material, "
                            "crc32('bloch')]), distinct=True, conv_map=...)" if regime == "zone_axis" else
                            "orientations: random_rotations(n, numpy.random.default_rng([seed, material, "
                            "crc32('bloch-random')]))"))
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
    regime: str = "zone_axis",
    axes: str = "conventional",
    tilt_deg: float = STORED_TILT_DEG,
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
        Patterns per material (distinct zone axes, see :func:`~py4dstem_gnn.data.orientations.zone_axis_rotations`).
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
    regime : {"zone_axis", "random"}
        Zone axes (the default) or uniformly random orientations.
    axes : {"conventional", "primitive"}
        Zone axes of the conventional standard cell (the default, as microscopists name them) or,
        for the sets made before, of the simulated primitive cell.
    tilt_deg : float
        Largest mis-tilt off the zone axis (conventional axes), degrees.
    """
    if axes not in ("conventional", "primitive"):
        raise ValueError(f"axes must be 'conventional' or 'primitive', got {axes!r}")
    p = params or BlochParams()
    kwargs = dict(n_orientations=int(n_orientations), seed=int(seed), params=dict(p.__dict__),
                  manifest_path=None if manifest_path is None else str(manifest_path),
                  db_path=None if db_path is None else str(db_path), cells=cells, regime=regime, axes=axes,
                  tilt_deg=float(tilt_deg))
    return run_sharded(_bloch_shard_task, _chunks(materials, chunk_size), out_dir, kwargs,
                       workers=workers, dask_address=dask_address, progress=progress, desc="bloch shards",
                       deadline=deadline)


