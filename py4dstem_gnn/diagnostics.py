"""Warnings that name the likely cause of a bad map, and the fix.

Two checks, both cheap (no loop over the whole scan):

- :func:`check_vectors_calibration`, before a scan is read: is the BraggVectors'
  calibration usable (origin measured, Q pixel size in 1/A, ``setcal()`` called after the
  last calibration was set)? It looks at the calibration and at the raw vectors of a few
  dozen positions spread over the scan.
- :func:`warn_scan_outcome`, after classification: did the scan come back (almost) all
  invalid, and if so was it for lack of spots (disk detection) or for lack of confidence
  (calibration, threshold)?

Each warning is a :class:`CalibrationWarning` or :class:`ScanOutcomeWarning` (both
``UserWarning``), so ``warnings.simplefilter("error", CalibrationWarning)`` turns them into
errors and ``warnings.filterwarnings("ignore", category=...)`` silences them.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

__all__ = [
    "CalibrationWarning",
    "ScanOutcomeWarning",
    "check_vectors_calibration",
    "warn_scan_outcome",
    "ALMOST_ALL_INVALID",
    "SAMPLE_POSITIONS",
]

logger = logging.getLogger(__name__)

#: A scan counts as "(almost) all invalid" when fewer than this share of its positions are valid.
ALMOST_ALL_INVALID: float = 0.01
#: Positions (at most) whose raw vectors :func:`check_vectors_calibration` looks at.
SAMPLE_POSITIONS: int = 64
#: Origin farther than this (detector pixels) from every spot at most sampled positions: suspicious.
ORIGIN_TOLERANCE_PX: float = 3.0
#: Calibrated diffracted spots are expected within this range of |q| (1/A) at most positions.
Q_EXPECTED: tuple[float, float] = (0.08, 3.0)
#: Relative Q-scale error of the matched templates above which :func:`warn_scan_outcome` names it.
Q_SCALE_TOLERANCE: float = 0.03

_PIXEL_UNITS = ("pixels", "pixel", "px", "")


class CalibrationWarning(UserWarning):
    """The BraggVectors' calibration looks missing or wrong (origin, Q pixel size, ``setcal``)."""


class ScanOutcomeWarning(UserWarning):
    """A scan came back (almost) all invalid; the message names the likely cause."""


def _warn(message: str, category: type[Warning]) -> None:
    # stacklevel 4: the code that called classify_braggvectors
    warnings.warn(message, category, stacklevel=4)


def _sample_raw(bv: Any, n: int = SAMPLE_POSITIONS) -> list[tuple[int, int, np.ndarray]]:
    """Raw vectors ``(qx, qy, I)`` in pixels at up to ``n`` positions on a regular grid over the scan."""
    rx_n, ry_n = (int(s) for s in bv.Rshape)
    side = max(1, int(np.sqrt(n)))
    out = []
    for rx in np.unique(np.linspace(0, rx_n - 1, min(side, rx_n)).round().astype(int)):
        for ry in np.unique(np.linspace(0, ry_n - 1, min(side, ry_n)).round().astype(int)):
            try:
                d = bv.raw[int(rx), int(ry)].data
            except Exception:  # noqa: BLE001 - a diagnostic never breaks the run
                continue
            if len(d):
                out.append((int(rx), int(ry), np.stack([d["qx"], d["qy"], d["intensity"]], axis=1).astype(float)))
    return out


def _value_at(value: Any, rx: int, ry: int) -> float:
    arr = np.asarray(value, dtype=float)
    return float(arr) if arr.ndim == 0 else float(arr[rx, ry])


def _origin_messages(bv: Any, cal: Any, sample: list[tuple[int, int, np.ndarray]]) -> list[str]:
    """Warnings about the origin: never measured, set by hand to the detector centre, or off the beam."""
    out: list[str] = []
    origin = cal.get_origin()
    try:
        measured = cal.get_origin_meas()
    except Exception:  # noqa: BLE001
        measured = None
    if origin is None:
        if measured is not None:
            out.append(
                "the origin was measured but never set: bv.measure_origin() stores origin_meas only. "
                "Fit it with bv.fit_origin() (or bv.calibration.set_origin(bv.calibration.get_origin_meas())), "
                "then call bv.setcal()."
            )
        else:
            out.append(
                "the origin (direct-beam position) was never measured or set, so the vectors cannot be "
                "centred on the direct beam. Run bv.measure_origin(); bv.fit_origin(), then bv.setcal()."
            )
        return out
    qshape = getattr(bv, "Qshape", None)
    scalar = all(np.ndim(o) == 0 for o in origin)
    if measured is None and scalar and qshape is not None:
        centres = [(qshape[0] / 2.0, qshape[1] / 2.0), ((qshape[0] - 1) / 2.0, (qshape[1] - 1) / 2.0)]
        if any(abs(float(origin[0]) - c[0]) < 1e-6 and abs(float(origin[1]) - c[1]) < 1e-6 for c in centres):
            out.append(
                f"the origin is the detector centre {tuple(float(o) for o in origin)} and was never measured: "
                "a direct beam a few pixels off shifts every spot. Run bv.measure_origin(); bv.fit_origin(), "
                "then bv.setcal()."
            )
    # is there a spot (the direct beam) at the origin at most sampled positions?
    if sample:
        dist = []
        for rx, ry, v in sample:
            try:
                ox, oy = _value_at(origin[0], rx, ry), _value_at(origin[1], rx, ry)
            except Exception:  # noqa: BLE001 - odd-shaped origin arrays are the reader's business
                return out
            dist.append(float(np.min(np.hypot(v[:, 0] - ox, v[:, 1] - oy))))
        med = float(np.median(dist))
        if med > ORIGIN_TOLERANCE_PX:
            out.append(
                f"the origin is {med:.1f} detector pixels from the nearest Bragg vector at a typical "
                f"position (median over {len(dist)} positions): it does not sit on the direct beam. "
                "Measure it again (bv.measure_origin(); bv.fit_origin()) and call bv.setcal()."
            )
    return out


def _pixel_messages(cal: Any, sample: list[tuple[int, int, np.ndarray]]) -> list[str]:
    """Warnings about the Q pixel size: unset (pixel units), or a scale far from 1/A."""
    qpix = cal.get_Q_pixel_size()
    units = cal.get_Q_pixel_units()
    units_s = "" if units is None else str(units).strip().lower()
    if qpix is None or float(qpix) == 1.0:
        return [
            f"the Q pixel size is {qpix!r} {units!r}: the vectors are in detector pixels, the model needs 1/A. "
            "Set bv.calibration.set_Q_pixel_size(<1/A per pixel>); bv.calibration.set_Q_pixel_units('A^-1'), "
            "then bv.setcal()."
        ]
    out = []
    if units_s in _PIXEL_UNITS:
        out.append(
            f"the Q pixel size is {float(qpix):g} but its units are {units!r}: if the size is in 1/A, say so with "
            "bv.calibration.set_Q_pixel_units('A^-1') (the model reads it as 1/A per pixel)."
        )
    origin = cal.get_origin()
    if sample and origin is not None:
        radii = []
        for rx, ry, v in sample:
            try:
                ox, oy = _value_at(origin[0], rx, ry), _value_at(origin[1], rx, ry)
            except Exception:  # noqa: BLE001
                return out
            r_px = np.hypot(v[:, 0] - ox, v[:, 1] - oy)
            r_px = r_px[r_px > ORIGIN_TOLERANCE_PX]  # diffracted spots only (not the direct beam)
            if r_px.size:
                radii.append(float(np.max(r_px)) * float(qpix))
        if radii:
            q_far = float(np.median(radii))
            if q_far > Q_EXPECTED[1]:
                out.append(
                    f"with Q pixel size {float(qpix):g} the outermost spots sit at |q| ~ {q_far:.3g} 1/A (median over "
                    f"{len(radii)} positions), beyond a typical pattern (< {Q_EXPECTED[1]:g} 1/A): the Q pixel size "
                    "looks too large (1/nm or mrad instead of 1/A?). Check bv.calibration.set_Q_pixel_size."
                )
            elif q_far < Q_EXPECTED[0]:
                out.append(
                    f"with Q pixel size {float(qpix):g} the outermost spots sit at |q| ~ {q_far:.3g} 1/A (median over "
                    f"{len(radii)} positions), closer than any lattice row (> {Q_EXPECTED[0]:g} 1/A): the Q pixel "
                    "size looks too small (1/A per pixel expected). Check bv.calibration.set_Q_pixel_size."
                )
    return out


def _setcal_messages(bv: Any, cal: Any) -> list[str]:
    """Warnings when ``setcal()`` was never called, or calibrations were set after it."""
    state = dict(getattr(bv, "calstate", {}) or {})
    available = {
        "center": cal.get_origin() is not None,
        "ellipse": cal.get_ellipse() is not None,
        "pixel": cal.get_Q_pixel_size() not in (None, 1),
        "rotate": cal.get_QR_rotation() is not None,
    }
    if not any(state.values()):
        if any(available.values()):
            present = ", ".join(k for k, v in available.items() if v)
            return [
                f"bv.setcal() was never called (bv.calstate is all False) although calibrations exist ({present}): "
                "bv.cal[rx, ry] returns raw pixel vectors. classify_braggvectors applies the origin and the "
                "Q pixel size anyway, but not an ellipse or a rotation. Call bv.setcal() after the last "
                "calibration step."
            ]
        return []
    unapplied = [k for k, v in available.items() if v and not state.get(k, False)]
    if unapplied:
        return [
            f"calibrations switched off in bv.calstate are not applied: {', '.join(unapplied)} "
            f"(bv.calstate {state}; classify_braggvectors applies the origin and Q pixel size anyway, not an "
            "ellipse or a rotation). Call bv.setcal() with no arguments to apply every calibration that exists."
        ]
    return []


def check_vectors_calibration(braggvectors: Any) -> None:
    """Warn when a BraggVectors' calibration looks missing or wrong, naming the cause and the fix.

    Looks at the calibration (origin, Q pixel size and units, ellipse, rotation), at
    ``bv.calstate`` (what ``setcal()`` switched on) and at the raw vectors of at most
    :data:`SAMPLE_POSITIONS` positions spread over the scan, so it costs milliseconds
    on any scan size.

    Parameters
    ----------
    braggvectors : py4DSTEM.BraggVectors
        The vectors about to be classified.

    Warns
    -----
    CalibrationWarning
        One warning per problem found: the origin never measured (or measured but
        never fitted/set, or set by hand to the detector centre, or not on the direct
        beam); the Q pixel size unset (1, pixel units) or with pixel units, or giving
        spots at implausible |q|; ``setcal()`` never called, or a calibration that exists
        switched off in ``bv.calstate``.

    Notes
    -----
    py4DSTEM 0.14.18 calls ``setcal()`` itself whenever a calibration is set on the
    BraggVectors' own ``Calibration``; a "never called" state is seen on vectors whose
    calibration was switched off (``setcal(center=False, ...)``) or set elsewhere.

    A warning, never an error: what is wrong for the model can be deliberate (a
    constant origin on a stable beam). The errors stay where the vectors are read
    (:func:`py4dstem_gnn.braggvectors.calibrated_vectors`).
    """
    try:
        cal = braggvectors.calibration
    except Exception:  # noqa: BLE001
        cal = None
    if cal is None:
        _warn(
            "the BraggVectors have no calibration at all (bv.calibration is missing): set the origin and the "
            "Q pixel size in 1/A, then call bv.setcal().",
            CalibrationWarning,
        )
        return
    try:
        sample = _sample_raw(braggvectors)
    except Exception:  # noqa: BLE001 - a diagnostic never breaks the run
        sample = []
    messages = _origin_messages(braggvectors, cal, sample) + _pixel_messages(cal, sample)
    messages += _setcal_messages(braggvectors, cal)
    for message in messages:
        logger.debug("calibration check: %s", message)
        _warn(message, CalibrationWarning)


def warn_scan_outcome(
    n_spots: np.ndarray,
    valid: np.ndarray,
    min_spots: int,
    q_scale_median: float | None = None,
) -> None:
    """Warn when a scan comes back (almost) all invalid, naming the likely cause.

    Parameters
    ----------
    n_spots : numpy.ndarray of int
        Diffracted spots (direct beam excluded) per position, any shape.
    valid : numpy.ndarray of bool
        Whether each position got a label (same shape).
    min_spots : int
        The ``min_spots`` the map used.
    q_scale_median : float, optional
        Median fitted scale of the confident template matches over the scan: the factor
        by which the measured ``|q|`` must be multiplied to match the templates (so the
        Q pixel size should be multiplied by it). Named when it is more than
        :data:`Q_SCALE_TOLERANCE` away from 1.

    Warns
    -----
    ScanOutcomeWarning
        When fewer than :data:`ALMOST_ALL_INVALID` of the positions are valid: "too few
        spots" (disk detection: ``minPeakSpacing``, ``edgeBoundary``, the intensity
        thresholds, or ``min_spots``) when most positions have fewer than ``min_spots``
        spots; otherwise "spots but no confidence" (a wrong calibration, e.g. the Q pixel
        size, with the matched templates' estimate when given; or a threshold too high).
        Also, on any scan, when ``q_scale_median`` says the Q pixel size is off.
    """
    n_spots = np.asarray(n_spots).reshape(-1)
    valid = np.asarray(valid, bool).reshape(-1)
    n = valid.size
    scale_note = ""
    if q_scale_median is not None and np.isfinite(q_scale_median) and q_scale_median > 0:
        off = 100.0 * (float(q_scale_median) - 1.0)
        if abs(off) > 100 * Q_SCALE_TOLERANCE:
            scale_note = (
                f"the matched templates say your Q pixel size is off by {off:+.1f} % "
                f"(multiply it by {float(q_scale_median):.3f}: bv.calibration.set_Q_pixel_size(...), then bv.setcal())"
            )
    if n == 0:
        return
    n_valid = int(valid.sum())
    if n_valid >= ALMOST_ALL_INVALID * n:
        if scale_note:
            _warn(scale_note[0].upper() + scale_note[1:] + ".", ScanOutcomeWarning)
        return
    enough = n_spots >= min_spots
    n_enough = int(enough.sum())
    head = f"{n_valid:,} of {n:,} positions are valid"
    if n_enough < 0.5 * n:
        median = float(np.median(n_spots)) if n_spots.size else 0.0
        message = (
            f"{head}: {n - n_enough:,} positions have fewer than min_spots={min_spots} diffracted spots "
            f"(median {median:g} per position). The disk detection found too few disks: size "
            "find_Bragg_disks for your detector (py4DSTEM's minPeakSpacing=60 and edgeBoundary=20 pixels "
            "suit large detectors), lower its minAbsoluteIntensity / minRelativeIntensity, or lower min_spots."
        )
    else:
        cause = scale_note or (
            "the calibration is probably wrong (a Q pixel size off by a few % to 2x, or not in 1/A, "
            "leaves spots the model does not recognise)"
        )
        message = (
            f"{head} although {n_enough:,} have at least min_spots={min_spots} spots: the model is not "
            f"confident anywhere. Likely cause: {cause}; or the confidence threshold is too high "
            "(confidence_threshold=0 shows every label)."
        )
    _warn(message, ScanOutcomeWarning)
