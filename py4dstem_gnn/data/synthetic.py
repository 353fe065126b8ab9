"""Synthetic 4D-STEM data for the example, the tests and the benchmarks.

Two builders:

* :func:`au_nanoparticle_scan` renders a 4D-STEM scan of Au (fcc, a = 4.078 A)
  nanoparticles in several zone-axis orientations (including [111], which looks
  hexagonal, and [110]) on a weak amorphous background, as a py4DSTEM
  ``DataCube`` with finite-size disks, a slowly drifting direct beam and Poisson
  noise. Spot positions and intensities come from py4DSTEM's kinematic
  ``Crystal.generate_diffraction_pattern``.
* :func:`random_braggvectors` builds a calibrated ``BraggVectors`` directly
  (no DataCube): a direct beam plus a random 2D lattice per position, for
  speed benchmarks and tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = [
    "AU_LATTICE_PARAMETER",
    "Particle",
    "SyntheticScan",
    "au_crystal",
    "default_particles",
    "render_disks",
    "au_nanoparticle_scan",
    "random_braggvectors",
    "braggvectors_from_pointlists",
    "detect_braggvectors",
]

logger = logging.getLogger(__name__)

#: Lattice parameter of Au (fcc, Fm-3m, space group 225), in Angstrom.
AU_LATTICE_PARAMETER: float = 4.078


@dataclass
class Particle:
    """One nanoparticle of the synthetic scan.

    Attributes
    ----------
    center : tuple of float
        Centre in scan pixels ``(rx, ry)``.
    radius : float
        Radius in scan pixels (the thickness profile is that of a sphere).
    zone_axis : tuple of int
        Zone axis ``[u, v, w]`` along the beam.
    rotation_deg : float
        In-plane rotation of the pattern (degrees).
    """

    center: tuple[float, float]
    radius: float
    zone_axis: tuple[int, int, int]
    rotation_deg: float = 0.0


@dataclass
class SyntheticScan:
    """A synthetic 4D-STEM scan and its ground truth.

    Attributes
    ----------
    datacube : py4DSTEM.DataCube
        Counts, shape ``(Rx, Ry, Qx, Qy)``, float32.
    particle_map : numpy.ndarray of int, shape (Rx, Ry)
        Index of the particle dominating each position, ``-1`` for background.
    thickness : numpy.ndarray, shape (n_particles, Rx, Ry)
        Relative thickness (0..1) of every particle at every position.
    particles : list of Particle
    q_pixel_size : float
        1/A per detector pixel.
    origin : tuple of numpy.ndarray
        True direct-beam position ``(qx0, qy0)`` per scan position (pixels).
    disk_radius : float
        Disk radius in detector pixels.
    """

    datacube: object
    particle_map: np.ndarray
    thickness: np.ndarray
    particles: list[Particle]
    q_pixel_size: float
    origin: tuple[np.ndarray, np.ndarray]
    disk_radius: float
    meta: dict = field(default_factory=dict)


def au_crystal(k_max: float = 1.4):
    """py4DSTEM ``Crystal`` of fcc Au with its structure factors computed.

    Parameters
    ----------
    k_max : float
        Largest scattering vector (1/A) of the structure factors.

    Returns
    -------
    py4DSTEM.process.diffraction.Crystal
    """
    from py4DSTEM.process.diffraction import Crystal

    positions = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], dtype=float)
    crystal = Crystal(positions, 79, AU_LATTICE_PARAMETER)
    crystal.calculate_structure_factors(k_max)
    crystal.setup_diffraction(300e3)
    return crystal


def default_particles(scan_shape: tuple[int, int] = (64, 64)) -> list[Particle]:
    """Six Au particles in [111], [110], [001], [112], [310] and rotated [111].

    Parameters
    ----------
    scan_shape : tuple of int
        Scan shape; particle centres and radii scale with it.

    Returns
    -------
    list of Particle
    """
    sx, sy = scan_shape
    s = min(sx, sy) / 64.0
    spec = [
        ((0.25, 0.25), 10.0, (1, 1, 1), 0.0),
        ((0.25, 0.72), 11.0, (1, 1, 0), 20.0),
        ((0.72, 0.22), 9.0, (0, 0, 1), 10.0),
        ((0.55, 0.55), 8.0, (1, 1, 2), 45.0),
        ((0.82, 0.75), 8.0, (3, 1, 0), 70.0),
        ((0.50, 0.90), 6.0, (1, 1, 1), 30.0),
    ]
    return [Particle((fx * sx, fy * sy), r * s, za, rot) for (fx, fy), r, za, rot in spec]


def _zone_axis_spots(crystal, zone_axis: Sequence[int], rotation_deg: float, k_max: float) -> np.ndarray:
    """Diffracted spots ``(n, 3)`` (qx, qy in 1/A, intensity) of one orientation, 000 excluded."""
    pl = crystal.generate_diffraction_pattern(
        zone_axis_lattice=np.asarray(zone_axis, float),
        sigma_excitation_error=0.03,
        tol_intensity=1e-4,
        k_max=k_max,
    )
    d = pl.data
    q = np.hypot(d["qx"], d["qy"])
    keep = q > 1e-6
    t = np.radians(rotation_deg)
    qx = np.cos(t) * d["qx"][keep] - np.sin(t) * d["qy"][keep]
    qy = np.sin(t) * d["qx"][keep] + np.cos(t) * d["qy"][keep]
    return np.stack([qx, qy, d["intensity"][keep]], axis=1)


def render_disks(
    centers_px: np.ndarray,
    weights: np.ndarray,
    qshape: tuple[int, int],
    radius: float,
    edge: float = 0.7,
) -> np.ndarray:
    """Image of soft-edged disks.

    Parameters
    ----------
    centers_px : numpy.ndarray, shape (n, 2)
        Disk centres in detector pixels (``qx`` along axis 0, ``qy`` along axis 1).
    weights : numpy.ndarray, shape (n,)
        Integrated intensity of each disk.
    qshape : tuple of int
        Detector shape.
    radius : float
        Disk radius (pixels).
    edge : float
        Width of the logistic edge (pixels).

    Returns
    -------
    numpy.ndarray, float64, shape ``qshape``
    """
    img = np.zeros(qshape, np.float64)
    half = int(np.ceil(radius + 4 * edge)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    area = np.pi * radius**2
    for (cx, cy), w in zip(np.asarray(centers_px, float), np.asarray(weights, float)):
        ix, iy = int(round(cx)), int(round(cy))
        if ix + half < 0 or iy + half < 0 or ix - half >= qshape[0] or iy - half >= qshape[1]:
            continue
        r = np.hypot(xx - (cx - ix), yy - (cy - iy))
        disk = 1.0 / (1.0 + np.exp((r - radius) / edge))
        disk *= w / area
        x0, x1 = max(ix - half, 0), min(ix + half + 1, qshape[0])
        y0, y1 = max(iy - half, 0), min(iy + half + 1, qshape[1])
        img[x0:x1, y0:y1] += disk[x0 - (ix - half) : x1 - (ix - half), y0 - (iy - half) : y1 - (iy - half)]
    return img


def au_nanoparticle_scan(
    scan_shape: tuple[int, int] = (64, 64),
    qshape: tuple[int, int] = (128, 128),
    q_pixel_size: float = 0.021,
    disk_radius: float = 2.5,
    particles: Sequence[Particle] | None = None,
    beam_counts: float = 2.0e4,
    bragg_fraction: float = 0.25,
    ring_counts: float = 400.0,
    ring_q: float = 0.32,
    drift_px: float = 1.0,
    k_max: float = 1.25,
    seed: int = 0,
) -> SyntheticScan:
    """Render a 4D-STEM scan of Au nanoparticles on an amorphous support.

    Each particle is a sphere (thickness profile ``sqrt(1 - d^2 / R^2)``) in one
    zone-axis orientation; its kinematic spots (py4DSTEM ``Crystal``) are drawn as
    disks whose intensity scales with the local thickness. Every position also
    holds the direct beam (dimmed where the particles are thick), a weak amorphous
    ring, and a direct-beam position that drifts linearly across the scan. Counts
    are Poisson-sampled.

    Parameters
    ----------
    scan_shape, qshape : tuple of int
        Probe positions and detector pixels.
    q_pixel_size : float
        1/A per detector pixel.
    disk_radius : float
        Disk radius (detector pixels).
    particles : sequence of Particle, optional
        Default :func:`default_particles`.
    beam_counts : float
        Expected electrons per pattern in the direct beam (vacuum).
    bragg_fraction : float
        Fraction of the beam scattered into Bragg disks at full thickness.
    ring_counts : float
        Expected electrons per pattern in the amorphous ring.
    ring_q : float
        Radius (1/A) of the amorphous ring.
    drift_px : float
        Drift of the direct beam across the scan (detector pixels, along both axes).
    k_max : float
        Largest scattering vector (1/A) simulated.
    seed : int
        Seed of the Poisson noise.

    Returns
    -------
    SyntheticScan
    """
    import py4DSTEM

    rng = np.random.default_rng(seed)
    particles = list(default_particles(scan_shape) if particles is None else particles)
    crystal = au_crystal(k_max * 1.1)
    patterns = [_zone_axis_spots(crystal, p.zone_axis, p.rotation_deg, k_max) for p in particles]

    sx, sy = scan_shape
    rx, ry = np.mgrid[0:sx, 0:sy].astype(float)
    thickness = np.zeros((len(particles), sx, sy))
    for k, p in enumerate(particles):
        d2 = ((rx - p.center[0]) ** 2 + (ry - p.center[1]) ** 2) / p.radius**2
        thickness[k] = np.sqrt(np.clip(1.0 - d2, 0.0, None))
    particle_map = np.where(thickness.max(axis=0) > 0, thickness.argmax(axis=0), -1)

    # direct-beam drift: linear along the scan rows (so one set of images per row)
    qx0 = qshape[0] / 2.0 + 0.3 + drift_px * (rx / max(sx - 1, 1) - 0.5)
    qy0 = qshape[1] / 2.0 - 0.2 + np.zeros_like(ry)

    qq_x, qq_y = np.mgrid[0 : qshape[0], 0 : qshape[1]].astype(float)
    data = np.empty((sx, sy) + tuple(qshape), np.float32)
    total_t = thickness.sum(axis=0)  # (sx, sy)
    for i in range(sx):
        cx, cy = qx0[i, 0], qy0[i, 0]
        beam = render_disks(np.array([[cx, cy]]), np.array([beam_counts]), qshape, disk_radius)
        r_q = np.hypot(qq_x - cx, qq_y - cy) * q_pixel_size
        ring = np.exp(-0.5 * ((r_q - ring_q) / 0.06) ** 2) + 0.3 * np.exp(-0.5 * (r_q / 0.25) ** 2)
        ring *= ring_counts / ring.sum()
        imgs = np.empty((len(particles),) + tuple(qshape))
        for k, spots in enumerate(patterns):
            centers = np.stack([cx + spots[:, 0] / q_pixel_size, cy + spots[:, 1] / q_pixel_size], axis=1)
            w = spots[:, 2] / max(spots[:, 2].sum(), 1e-12) * bragg_fraction * beam_counts
            imgs[k] = render_disks(centers, w, qshape, disk_radius)
        t_row = thickness[:, i, :]  # (K, sy)
        row = np.einsum("ks,kxy->sxy", t_row, imgs)
        row += (1.0 - bragg_fraction * np.clip(total_t[i], 0, 1))[:, None, None] * beam[None]
        row += ring[None]
        data[i] = rng.poisson(row).astype(np.float32)
    datacube = py4DSTEM.DataCube(data=data, name="au_nanoparticles")
    datacube.calibration.set_Q_pixel_size(q_pixel_size)
    datacube.calibration.set_Q_pixel_units("A^-1")
    return SyntheticScan(
        datacube=datacube,
        particle_map=particle_map,
        thickness=thickness,
        particles=particles,
        q_pixel_size=q_pixel_size,
        origin=(qx0, qy0),
        disk_radius=disk_radius,
        meta={"zone_axes": [p.zone_axis for p in particles], "space_group": 225, "crystal_system": 6},
    )


def braggvectors_from_pointlists(
    pointlists_px: Sequence[np.ndarray],
    scan_shape: tuple[int, int],
    qshape: tuple[int, int] = (128, 128),
):
    """A raw (uncalibrated) ``BraggVectors`` from per-position pixel pointlists.

    Parameters
    ----------
    pointlists_px : sequence of numpy.ndarray, each (n_i, 3)
        ``qx, qy`` in detector pixels and intensity, one per position in C order.
    scan_shape : tuple of int
    qshape : tuple of int

    Returns
    -------
    py4DSTEM.BraggVectors
    """
    import py4DSTEM
    from emdfile import PointList

    bv = py4DSTEM.BraggVectors(tuple(scan_shape), tuple(qshape))
    dtype = bv.raw[0, 0].data.dtype
    ny = scan_shape[1]
    for p, pl in enumerate(pointlists_px):
        pl = np.asarray(pl, float).reshape(-1, 3)
        if not len(pl):
            continue
        d = np.zeros(len(pl), dtype)
        d["qx"], d["qy"], d["intensity"] = pl[:, 0], pl[:, 1], pl[:, 2]
        bv._v_uncal[p // ny, p % ny] = PointList(d)
    return bv


def random_braggvectors(
    scan_shape: tuple[int, int] = (256, 256),
    spots: tuple[int, int] = (30, 60),
    qshape: tuple[int, int] = (256, 256),
    q_pixel_size: float = 0.01,
    origin: tuple[float, float] = (128.3, 127.6),
    seed: int = 0,
    calibrate: bool = True,
):
    """A calibrated ``BraggVectors`` with a direct beam and a random lattice per position.

    Each position holds the direct beam at ``origin`` (brightest) and spots of a
    random 2D lattice (reciprocal vectors of 0.25..0.6 1/A) inside 1.2 1/A, trimmed
    or repeated to a random count in ``spots``.

    Parameters
    ----------
    scan_shape : tuple of int
    spots : tuple of int
        Inclusive range of the number of diffracted spots per position.
    qshape : tuple of int
    q_pixel_size : float
        1/A per pixel (stored in the calibration when ``calibrate``).
    origin : tuple of float
        Direct-beam position (pixels), stored in the calibration when ``calibrate``.
    seed : int
    calibrate : bool
        Set origin and Q pixel size in the calibration.

    Returns
    -------
    py4DSTEM.BraggVectors
    """
    rng = np.random.default_rng(seed)
    n_pos = int(scan_shape[0]) * int(scan_shape[1])
    # a handful of random lattices, reused across positions (like grains)
    grid = np.arange(-6, 7)
    hh, kk = np.meshgrid(grid, grid, indexing="ij")
    hk = np.stack([hh.ravel(), kk.ravel()], axis=1)
    hk = hk[np.any(hk != 0, axis=1)]
    lattices = []
    for _ in range(32):
        a = rng.uniform(0.25, 0.6)
        b = rng.uniform(0.25, 0.6)
        gamma = rng.uniform(np.radians(60), np.radians(120))
        rot = rng.uniform(0, 2 * np.pi)
        g1 = a * np.array([np.cos(rot), np.sin(rot)])
        g2 = b * np.array([np.cos(rot + gamma), np.sin(rot + gamma)])
        q = hk @ np.stack([g1, g2])
        r = np.hypot(q[:, 0], q[:, 1])
        q = q[r < 1.2][np.argsort(r[r < 1.2])]
        inten = np.exp(-np.hypot(q[:, 0], q[:, 1]) / 0.4)
        lattices.append(np.concatenate([q, inten[:, None]], axis=1))
    which = rng.integers(0, len(lattices), n_pos)
    counts = rng.integers(spots[0], spots[1] + 1, n_pos)
    pls = []
    for p in range(n_pos):
        lat = lattices[which[p]]
        idx = np.arange(counts[p]) % len(lat)
        sp = lat[idx].copy()
        sp[:, :2] = sp[:, :2] / q_pixel_size + rng.normal(0, 0.2, (len(sp), 2))
        sp[:, 0] += origin[0]
        sp[:, 1] += origin[1]
        sp[:, 2] *= rng.uniform(0.5, 1.5, len(sp))
        beam = np.array([[origin[0] + rng.normal(0, 0.2), origin[1] + rng.normal(0, 0.2), 10.0]])
        pls.append(np.concatenate([beam, sp]))
    bv = braggvectors_from_pointlists(pls, scan_shape, qshape)
    if calibrate:
        bv.calibration.set_origin((origin[0], origin[1]))
        bv.calibration.set_Q_pixel_size(q_pixel_size)
        bv.calibration.set_Q_pixel_units("A^-1")
        bv.setcal()
    return bv


def detect_braggvectors(
    datacube: Any,
    disk_radius: float,
    q_pixel_size: float,
    min_absolute_intensity: float = 1.0,
    min_peak_spacing: float | None = None,
    edge_boundary: int = 4,
    max_peaks: int = 70,
):
    """py4DSTEM disk detection and calibration sized for a small detector.

    Runs ``find_Bragg_disks`` with a synthetic-probe template (a disk of
    ``disk_radius`` with a sigmoid edge filter), with the peak spacing and edge
    boundary set for the detector (py4DSTEM's defaults, 60 and 20 pixels, are
    meant for large detectors and find about one peak on a 128-pixel detector);
    then measures the origin (brightest disk at each position), fits it with a
    plane, and sets the Q pixel size in 1/A.

    Parameters
    ----------
    datacube : py4DSTEM.DataCube
    disk_radius : float
        Disk radius (detector pixels).
    q_pixel_size : float
        1/A per detector pixel.
    min_absolute_intensity : float
        Smallest correlation peak kept (template-normalised counts per pixel).
    min_peak_spacing : float, optional
        Smallest distance between peaks (pixels); default ``3 * disk_radius``.
    edge_boundary : int
        Peaks closer than this to the detector edge are dropped (pixels).
    max_peaks : int
        Most peaks kept per pattern.

    Returns
    -------
    py4DSTEM.BraggVectors
        Calibrated (origin, Q pixel size in 1/A).
    """
    from py4DSTEM.braggvectors import Probe

    qshape = datacube.Qshape
    probe = Probe.generate_synthetic_probe(radius=disk_radius, width=1.0, Qshape=qshape)
    kernel = probe.get_kernel(
        mode="sigmoid", origin=(qshape[0] / 2.0, qshape[1] / 2.0), radii=(1.2 * disk_radius, 3.0 * disk_radius)
    )
    spacing = 3.0 * disk_radius if min_peak_spacing is None else min_peak_spacing
    bv = datacube.find_Bragg_disks(
        template=kernel,
        corrPower=1,
        sigma_cc=1,
        subpixel="poly",
        minAbsoluteIntensity=min_absolute_intensity,
        minRelativeIntensity=0.0,
        minPeakSpacing=spacing,
        edgeBoundary=edge_boundary,
        maxNumPeaks=max_peaks,
    )
    bv.measure_origin()
    bv.fit_origin(plot=False, robust=True)
    bv.calibration.set_Q_pixel_size(q_pixel_size)
    bv.calibration.set_Q_pixel_units("A^-1")
    bv.setcal()
    return bv
