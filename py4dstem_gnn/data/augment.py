"""Realism augmentations for simulated pointlists (on by default in training).

Simulated patterns are perfect; experimental ``BraggVectors`` are not. Every
augmentation acts on a batch of pointlists (``(n_i, 3)`` arrays ``qx, qy, I`` in 1/A,
direct beam near ``q = 0``) at once, vectorised over the concatenated spots, and draws
all its randomness from the ``rng`` passed in (so a seeded generator reproduces a
batch). Per pattern, in this order:

1. **Calibration error** -- an affine map of ``(qx, qy)``: isotropic scale error
   (uniform within ``±scale_error``, default ±0.5 %), ellipticity (stretch
   ``1 ± ellipticity`` along a random axis, default up to 0.3 %) and an in-plane rotation
   (uniform within ``±rotation_deg``, default ±1°; the simulated orientations already
   cover all in-plane rotations, this mimics a mis-calibrated detector rotation).
2. **Spot-position jitter** -- Gaussian noise on ``qx, qy`` with a per-pattern sigma
   uniform in ``[0, jitter]`` (default 0.003 1/A; Bragg-disk fits are good to a
   fraction of a pixel).
3. **Intensity distortion** -- ``I -> I ** gamma`` with ``gamma`` uniform in
   ``gamma_range`` (dynamical scattering flattens kinematic intensity ratios), times
   log-normal noise (sigma ``intensity_noise``).
4. **Missing weak spots** -- spots fainter than a per-pattern fraction of the brightest
   diffracted spot (log-uniform in ``weak_threshold``) are removed, plus a random
   fraction (up to ``dropout``) of the remaining diffracted spots, plus everything beyond
   a detector cut-off drawn uniformly in ``q_max_range``.
5. **Spurious spots** -- a Poisson number (mean ``spurious_rate``) of false detections,
   uniform in the disk of the pattern's largest ``|q|``, with intensities up to
   ``spurious_intensity`` times the typical (geometric-mean) diffracted intensity.

The direct beam (the spot within ``direct_beam_tolerance`` of ``q = 0``) is never
dropped. **Thickness variation** is approximated kinematically, in the sampler rather
than here: the excitation-error envelope of a foil of thickness ``t`` has a width
``~ 1/t``, so drawing ``sigma_excitation_error`` per pattern (see
:func:`random_excitation_sigma`, passed to
:func:`py4dstem_gnn.data.kinematic.sample_kinematic`) mimics a range of thicknesses; the
gamma distortion of step 3 stands in for the dynamical (thickness-dependent)
redistribution of intensity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = ["AugmentConfig", "augment_pointlists", "random_excitation_sigma", "DETECTED_STATISTICS"]

#: Detection statistics per detector preset (:mod:`py4dstem_gnn.data.detector`), measured by
#: ``python benchmarks/detection.py measure`` on the zone-axis test set (3,906 Bloch-wave patterns; see
#: ``benchmarks/results/detection.md``): robust per-coordinate position sigma (1/A, median error / 1.177),
#: 10th / 90th percentile of the per-pattern detection threshold relative to the brightest diffracted
#: spot, share of in-field spots above it still lost, false peaks per pattern, field half-width (1/A).
DETECTED_STATISTICS: dict[str, dict[str, float]] = {
    "hybrid128_lowdose": dict(position_sigma=0.350 / 1.177 * 0.025, threshold_p10=6.5e-3, threshold_p90=0.33,
                              missed_above_threshold=0.181, false_per_pattern=1.13, q_max=1.5),
    "hybrid256": dict(position_sigma=0.251 / 1.177 * 0.0125, threshold_p10=2.5e-3, threshold_p90=0.070,
                      missed_above_threshold=0.140, false_per_pattern=2.12, q_max=1.525),
    "cmos512_highdose": dict(position_sigma=0.136 / 1.177 * 0.008, threshold_p10=1.4e-3, threshold_p90=0.031,
                             missed_above_threshold=0.129, false_per_pattern=3.09, q_max=1.984),
}


@dataclass
class AugmentConfig:
    """Strengths of the augmentations (set one to 0 to switch it off).

    The defaults are those of a calibrated experiment (:meth:`calibrated`, where the numbers are
    explained); :meth:`uncalibrated` and ``preset("legacy")`` (the strengths used before) are the
    alternatives.

    Attributes
    ----------
    scale_error : float
        Half-width of the uniform calibration scale error (0.02 = ±2 %).
    ellipticity : float
        Largest stretch along a random axis (0.01 = 1 %).
    rotation_deg : float
        Half-width of the uniform in-plane rotation error, degrees.
    jitter : float
        Largest per-pattern sigma of the spot-position noise, 1/A.
    gamma_range : tuple of float
        Range of the intensity exponent.
    intensity_noise : float
        Sigma of the multiplicative log-normal intensity noise.
    weak_threshold : tuple of float
        Log-uniform range of the relative detection threshold (fraction of the brightest
        diffracted spot).
    dropout : float
        Largest fraction of diffracted spots removed at random.
    q_max_range : tuple of float
        Range of the detector cut-off ``|q|``, 1/A (None: no cut-off).
    spurious_rate : float
        Mean number of spurious spots per pattern.
    spurious_intensity : float
        Spurious intensities are uniform in ``[0, spurious_intensity] * typical`` (geometric mean of
        the diffracted intensities).
    direct_beam_tolerance : float
        Spots closer than this to ``q = 0`` (before augmentation) count as the direct beam.
    """

    scale_error: float = 0.005
    ellipticity: float = 0.003
    rotation_deg: float = 1.0
    jitter: float = 0.003
    gamma_range: tuple[float, float] = (0.7, 1.0)
    intensity_noise: float = 0.2
    weak_threshold: tuple[float, float] = (1e-4, 5e-3)
    dropout: float = 0.05
    q_max_range: tuple[float, float] | None = (1.4, 2.0)
    spurious_rate: float = 0.5
    spurious_intensity: float = 1.0
    direct_beam_tolerance: float = 0.02

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def calibrated(cls) -> "AugmentConfig":
        """Corruption of an experiment calibrated with py4DSTEM (the training default and the "corrupted"
        copy of every stored test set).

        Numbers and why: a py4DSTEM calibration from a known standard (or the pattern's own lattice)
        fixes the reciprocal-space scale to a few parts per thousand and the ellipticity from the
        fitted elliptical origin (``fit_origin``/ellipse fit) to ~0.1–0.3 %: ``scale_error`` ±0.5 %,
        ``ellipticity`` ≤ 0.3 %; the detector rotation is irrelevant to a rotation-invariant input but
        kept small (±1°); Bragg-disk fits are good to a fraction of a detector pixel (pixels are
        ~0.01–0.02 1/Å): ``jitter`` ≤ 0.003 1/Å; intensities suffer dynamical redistribution the
        kinematic rule does not capture and detector noise (``gamma`` 0.7–1, log-normal 0.2); weak spots
        are lost (relative threshold 1e-4 to 5e-3 of the brightest diffracted spot, ≤ 5 % random
        dropout) and the detector edge cuts at 1.4–2.0 1/Å; about one false detection every two
        patterns.
        """
        return cls()

    @classmethod
    def uncalibrated(cls) -> "AugmentConfig":
        """Corruption of an experiment whose reciprocal-space calibration was taken from nominal camera
        length and never refined: ±3 % scale, ≤ 2 % ellipticity (uncorrected projector distortion),
        ±5° detector rotation, 0.008 1/Å position noise; spots as in :meth:`calibrated`. For measuring
        robustness and for training a model meant for such data (``train --augment uncalibrated``).
        """
        c = cls.calibrated()
        c.scale_error, c.ellipticity, c.rotation_deg, c.jitter = 0.03, 0.02, 5.0, 0.008
        return c

    @classmethod
    def detected(cls, detector: str = "hybrid128_lowdose") -> "AugmentConfig":
        """Corruption fitted to what py4DSTEM's ``find_Bragg_disks`` does to Bloch-wave spot lists on a
        detector preset of :mod:`py4dstem_gnn.data.detector` (issue 22).

        Numbers from ``python benchmarks/detection.py measure`` (``benchmarks/results/detection.md`` and
        ``.json``, zone-axis test set, 3,906 patterns per preset), see :data:`DETECTED_STATISTICS`:

        * ``jitter``: detected-vs-true position error, robust per-coordinate sigma
          ``median |error| / 1.177`` (Rayleigh), times ``sqrt(3)`` because the augmentation draws each
          pattern's sigma uniformly in ``[0, jitter]``;
        * ``weak_threshold``: the 10th and 90th percentiles over patterns of the intensity, relative to
          the brightest diffracted spot, that best separates found from lost spots (far above the
          calibrated preset's 1e-4 to 5e-3: at 2e4 electrons a spot needs ~0.4 % of the beam);
        * ``dropout``: twice the share of spots above that threshold still lost (merged or crowded),
          since each pattern draws its dropout uniformly in ``[0, dropout]``;
        * ``q_max_range``: the square detector field inside the edge boundary, from its half-width
          (``preset.q_max``) to its corner (``sqrt(2)`` times that);
        * ``spurious_rate``: false peaks per pattern;
        * calibration error and intensity distortion as :meth:`calibrated` (the measured radial bias was
          +0.02 to +0.22 %, inside its ±0.5 % scale error).

        Parameters
        ----------
        detector : str
            A preset name with measured statistics: ``"hybrid128_lowdose"``, ``"hybrid256"`` or
            ``"cmos512_highdose"``.
        """
        try:
            st = DETECTED_STATISTICS[detector]
        except KeyError:
            raise ValueError(f"no detection statistics for {detector!r}; choose one of "
                             f"{sorted(DETECTED_STATISTICS)}") from None
        c = cls.calibrated()
        c.jitter = float(np.sqrt(3.0) * st["position_sigma"])
        c.weak_threshold = (float(st["threshold_p10"]), float(st["threshold_p90"]))
        c.dropout = float(min(2.0 * st["missed_above_threshold"], 0.9))
        c.q_max_range = (float(st["q_max"]), float(np.sqrt(2.0) * st["q_max"]))
        c.spurious_rate = float(st["false_per_pattern"])
        return c

    @classmethod
    def preset(cls, name: str) -> "AugmentConfig":
        """``"calibrated"``, ``"uncalibrated"``, ``"legacy"`` (the strengths used before the presets) or
        ``"detected[:<detector preset>]"`` (:meth:`detected`)."""
        if name == "calibrated":
            return cls.calibrated()
        if name == "uncalibrated":
            return cls.uncalibrated()
        if name.startswith("detected"):
            return cls.detected(name.partition(":")[2] or "hybrid128_lowdose")
        if name == "legacy":
            return cls(scale_error=0.02, ellipticity=0.01, rotation_deg=2.0, jitter=0.005, gamma_range=(0.6, 1.0),
                       intensity_noise=0.2, weak_threshold=(1e-4, 2e-2), dropout=0.1, q_max_range=(1.2, 2.0),
                       spurious_rate=1.0, spurious_intensity=1.0)
        raise ValueError(f"unknown augmentation preset {name!r}; choose calibrated, uncalibrated, legacy or "
                         "detected[:<detector preset>]")


def random_excitation_sigma(
    n: int, rng: np.random.Generator, low: float = 0.01, high: float = 0.04
) -> np.ndarray:
    """Per-pattern excitation-error sigmas (1/A), log-uniform in ``[low, high]``.

    A kinematic stand-in for thickness variation (envelope width ``~ 1/thickness``): sources draw
    ``[sigma / 2, 2 sigma]`` around their spot-selection rule's sigma, i.e. foils from about half to
    twice the reference 20 nm.
    """
    return np.exp(rng.uniform(np.log(low), np.log(high), size=n))


def augment_pointlists(
    pointlists: Sequence[np.ndarray],
    rng: np.random.Generator,
    config: AugmentConfig | None = None,
) -> list[np.ndarray]:
    """Apply the realism augmentations to a batch of pointlists.

    Parameters
    ----------
    pointlists : sequence of numpy.ndarray
        (n_i, 3) arrays qx, qy [1/A], intensity; not modified.
    rng : numpy.random.Generator
        Source of all randomness.
    config : AugmentConfig, optional
        Strengths (defaults: :class:`AugmentConfig`).

    Returns
    -------
    list of numpy.ndarray
        New float32 (m_i, 3) arrays, direct beam first where there is one.
    """
    cfg = config or AugmentConfig()
    B = len(pointlists)
    if B == 0:
        return []
    counts = np.array([len(p) for p in pointlists], dtype=np.int64)
    spots = (np.concatenate([np.asarray(p, np.float64).reshape(-1, 3) for p in pointlists])
             if counts.sum() else np.zeros((0, 3)))
    seg = np.repeat(np.arange(B), counts)
    q = spots[:, :2].copy()
    inten = np.maximum(spots[:, 2].copy(), 0.0)
    # direct beam: the spot nearest q = 0 of each pattern, if within the tolerance
    r0 = np.hypot(q[:, 0], q[:, 1])
    is_beam = np.zeros(len(seg), bool)
    if len(seg):
        order0 = np.lexsort((r0, seg))
        first = order0[np.concatenate([[0], np.cumsum(counts)[:-1]])[counts > 0]]
        is_beam[first] = r0[first] < cfg.direct_beam_tolerance

    # 1. calibration error: A = s * Rot(theta) @ (I + e (u u^T - v v^T))
    s = 1.0 + rng.uniform(-cfg.scale_error, cfg.scale_error, B)
    e = rng.uniform(0.0, cfg.ellipticity, B)
    phi = rng.uniform(0.0, np.pi, B)
    th = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg, B))
    c2, s2 = np.cos(2 * phi), np.sin(2 * phi)
    E = np.empty((B, 2, 2))
    E[:, 0, 0] = 1 + e * c2
    E[:, 0, 1] = e * s2
    E[:, 1, 0] = e * s2
    E[:, 1, 1] = 1 - e * c2
    Rt = np.empty((B, 2, 2))
    Rt[:, 0, 0] = np.cos(th)
    Rt[:, 0, 1] = -np.sin(th)
    Rt[:, 1, 0] = np.sin(th)
    Rt[:, 1, 1] = np.cos(th)
    A = s[:, None, None] * (Rt @ E)
    q = np.einsum("nij,nj->ni", A[seg], q)

    # 2. jitter
    sig = rng.uniform(0.0, cfg.jitter, B)
    q = q + rng.standard_normal(q.shape) * sig[seg, None]

    # 3. intensity distortion (relative to each pattern's brightest diffracted spot)
    diff_I = np.where(is_beam, 0.0, inten)
    imax = np.zeros(B)
    np.maximum.at(imax, seg, diff_I)
    imax_safe = np.where(imax > 0, imax, 1.0)
    gamma = rng.uniform(cfg.gamma_range[0], cfg.gamma_range[1], B)
    rel = inten / imax_safe[seg]
    inten = imax_safe[seg] * np.power(np.maximum(rel, 0.0), gamma[seg])
    if cfg.intensity_noise > 0:
        inten = inten * np.exp(cfg.intensity_noise * rng.standard_normal(len(inten)))

    # 4. missing spots
    lo, hi = cfg.weak_threshold
    thr = np.exp(rng.uniform(np.log(lo), np.log(hi), B)) if hi > 0 else np.zeros(B)
    keep = inten >= thr[seg] * imax_safe[seg]
    if cfg.dropout > 0:
        p = rng.uniform(0.0, cfg.dropout, B)
        keep &= rng.random(len(inten)) >= p[seg]
    if cfg.q_max_range is not None:
        qmax = rng.uniform(cfg.q_max_range[0], cfg.q_max_range[1], B)
        keep &= np.hypot(q[:, 0], q[:, 1]) <= qmax[seg]
    keep |= is_beam

    # 5. spurious spots
    n_sp = rng.poisson(cfg.spurious_rate, B) if cfg.spurious_rate > 0 else np.zeros(B, np.int64)
    r_all = np.hypot(q[:, 0], q[:, 1])
    rmax = np.zeros(B)
    np.maximum.at(rmax, seg[keep], r_all[keep])
    # typical diffracted intensity of each pattern: geometric mean of the kept diffracted spots
    dsel = keep & ~is_beam & (inten > 0)
    nd = np.bincount(seg[dsel], minlength=B)
    logsum = np.bincount(seg[dsel], weights=np.log(inten[dsel]), minlength=B)
    med = np.where(nd > 0, np.exp(logsum / np.maximum(nd, 1)), imax_safe)
    sp_seg = np.repeat(np.arange(B), n_sp)
    n_tot = int(n_sp.sum())
    if n_tot:
        rad = np.sqrt(rng.random(n_tot)) * np.maximum(rmax[sp_seg], 0.3)
        ang = rng.uniform(0, 2 * np.pi, n_tot)
        sp = np.stack([rad * np.cos(ang), rad * np.sin(ang),
                       rng.random(n_tot) * cfg.spurious_intensity * med[sp_seg]], axis=1)
    else:
        sp = np.zeros((0, 3))

    out_spots = np.concatenate([np.column_stack([q, inten])[keep], sp])
    out_seg = np.concatenate([seg[keep], sp_seg])
    out_beam = np.concatenate([is_beam[keep], np.zeros(n_tot, bool)])
    order = np.lexsort((~out_beam, out_seg))  # by pattern, direct beam first
    out_spots = out_spots[order].astype(np.float32)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(out_seg, minlength=B))])
    return [out_spots[bounds[b]:bounds[b + 1]] for b in range(B)]
