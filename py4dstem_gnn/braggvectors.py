"""Reading py4DSTEM ``BraggVectors``: the input check, the calibrated vectors of a whole scan, the direct beam.

:func:`calibrated_vectors` reads the raw Bragg vectors of the whole scan **once** into flat
arrays and applies the calibration (origin, ellipse, pixel size, rotation/flip -- the order
of ``BraggVectors.cal``) vectorised over the scan; the result equals ``bv.cal[rx, ry]`` at
every position. :func:`remove_direct_beam` drops, at every position, the spot nearest the
calibrated origin. :func:`check_braggvectors` refuses anything but a ``BraggVectors`` with
one line saying what to do. Used by :func:`py4dstem_gnn.classify.classify_braggvectors`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "RaggedVectors",
    "calibrated_vectors",
    "remove_direct_beam",
    "check_braggvectors",
]

logger = logging.getLogger(__name__)


@dataclass
class RaggedVectors:
    """Bragg vectors of a whole scan as flat arrays.

    Attributes
    ----------
    qx, qy, intensity : numpy.ndarray, shape (total,)
        Vectors of all positions, position after position in C order
        (``rx`` slow, ``ry`` fast).
    offsets : numpy.ndarray of int64, shape (Rx * Ry + 1,)
        Position ``p = rx * Ry + ry`` holds entries ``offsets[p]:offsets[p + 1]``.
    shape : tuple of int
        Scan shape ``(Rx, Ry)``.
    """

    qx: np.ndarray
    qy: np.ndarray
    intensity: np.ndarray
    offsets: np.ndarray
    shape: tuple[int, int]

    @property
    def counts(self) -> np.ndarray:
        """Number of vectors per position, flat (Rx * Ry,)."""
        return np.diff(self.offsets)

    @property
    def position_index(self) -> np.ndarray:
        """Flat position index of every vector, (total,)."""
        return np.repeat(np.arange(self.offsets.size - 1), self.counts)

    def at(self, rx: int, ry: int) -> np.ndarray:
        """``(n, 3)`` array ``qx, qy, I`` at one position."""
        p = rx * self.shape[1] + ry
        s = slice(self.offsets[p], self.offsets[p + 1])
        return np.stack([self.qx[s], self.qy[s], self.intensity[s]], axis=1)


# --------------------------------------------------------------------------------------
# reading and calibrating
# --------------------------------------------------------------------------------------


def _raw_structured_arrays(bv: Any) -> list[np.ndarray]:
    """Structured arrays (fields qx, qy, intensity) of every position, C order."""
    rx_n, ry_n = (int(s) for s in bv.Rshape)
    pla = getattr(bv, "_v_uncal", None)
    grid = getattr(pla, "_pointlists", None)
    if grid is not None:
        # fast path: the PointListArray's grid of PointLists, read once
        return [pl.data for row in grid for pl in row]
    return [bv.raw[rx, ry].data for rx in range(rx_n) for ry in range(ry_n)]  # pragma: no cover


def _per_vector(value: Any, pos: np.ndarray, shape: tuple[int, int]) -> np.ndarray | float:
    """A calibration value (scalar or scan-shaped array) broadcast to every vector."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return float(arr)
    if arr.shape != tuple(shape):
        raise ValueError(f"calibration array of shape {arr.shape} does not match the scan shape {shape}")
    return arr.reshape(-1)[pos]


def _calibration_state(
    bv: Any, raw_vectors: bool, q_pixel_size: float | None, origin: tuple[float, float] | None
) -> dict[str, Any]:
    """Decide which calibrations to apply; raise a clear error for missing ones."""
    cal = bv.calibration
    state = dict(getattr(bv, "calstate", {}) or {})
    if raw_vectors:
        if q_pixel_size is None or not np.isfinite(q_pixel_size) or q_pixel_size <= 0:
            raise ValueError("raw_vectors=True needs an explicit positive q_pixel_size (1/A per detector pixel)")
        if origin is None:
            origin = cal.get_origin() if cal is not None else None
        if origin is None:
            qshape = getattr(bv, "Qshape", None)
            if qshape is None:
                raise ValueError("raw_vectors=True: no origin given and the BraggVectors has no Qshape")
            origin = (qshape[0] / 2.0, qshape[1] / 2.0)
            logger.warning("raw vectors: no origin calibration; using the detector centre %s", origin)
        return {"center": True, "ellipse": False, "pixel": True, "rotate": False,
                "origin": origin, "q_pixel_size": float(q_pixel_size), "mode": "raw"}
    missing = []
    has_origin = cal is not None and cal.get_origin() is not None
    qpix = cal.get_Q_pixel_size() if cal is not None else None
    units = cal.get_Q_pixel_units() if cal is not None else None
    has_pixel = qpix is not None and qpix != 1
    if not has_origin:
        missing.append("origin (calibration.set_origin / fit_origin)")
    if not has_pixel:
        missing.append("Q pixel size (calibration.set_Q_pixel_size, in 1/A)")
    if missing:
        raise ValueError(
            "the BraggVectors are not calibrated: missing "
            + " and ".join(missing)
            + ". Calibrate them in py4DSTEM (then bv.setcal()), or pass raw_vectors=True with "
            "q_pixel_size=<1/A per pixel> (and optionally origin=(qx0, qy0) in pixels) to use raw vectors."
        )
    if units is not None and str(units).lower() in ("mrad", "rad", "mrads"):
        raise ValueError(f"the Q pixel size is in {units}; the model needs 1/A (set Q_pixel_units to 'A^-1')")
    for key in ("center", "pixel"):
        if not state.get(key, False):
            logger.info("bv.calstate has %s=False although the calibration exists; applying it", key)
            state[key] = True
    for key, getter in (("ellipse", "get_ellipse"), ("rotate", "get_QR_rotation")):
        state[key] = bool(state.get(key, False)) and getattr(cal, getter)() is not None
    state["mode"] = "calibrated"
    return state


def calibrated_vectors(
    bv: Any,
    *,
    raw_vectors: bool = False,
    q_pixel_size: float | None = None,
    origin: tuple[float, float] | None = None,
) -> RaggedVectors:
    """Calibrated Bragg vectors of the whole scan, read once and calibrated vectorised.

    Reproduces ``bv.cal[rx, ry]`` for every position: origin subtraction, ellipse
    correction, pixel size, then rotation (and flip), each only where the
    BraggVectors' calibration state applies it (origin and pixel size are always
    applied; they are required).

    Parameters
    ----------
    bv : py4DSTEM.BraggVectors
    raw_vectors : bool
        Ignore the BraggVectors' calibration and use raw detector vectors, shifted
        by ``origin`` (default: the calibrated origin if any, else the detector
        centre) and scaled by ``q_pixel_size``.
    q_pixel_size : float, optional
        1/A per detector pixel, required with ``raw_vectors=True``.
    origin : tuple of float, optional
        ``(qx0, qy0)`` in detector pixels (scalars or scan-shaped arrays), only used
        with ``raw_vectors=True``.

    Returns
    -------
    RaggedVectors

    Raises
    ------
    ValueError
        If the origin or the Q pixel size calibration is missing (and
        ``raw_vectors`` is False).
    """
    state = _calibration_state(bv, raw_vectors, q_pixel_size, origin)
    shape = (int(bv.Rshape[0]), int(bv.Rshape[1]))
    arrays = _raw_structured_arrays(bv)
    counts = np.fromiter((a.shape[0] for a in arrays), np.int64, len(arrays))
    offsets = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    if offsets[-1]:
        flat = np.concatenate([a for a in arrays if a.shape[0]])
        qx = flat["qx"].astype(np.float64)
        qy = flat["qy"].astype(np.float64)
        inten = flat["intensity"].astype(np.float64)
    else:
        qx = np.zeros(0)
        qy = np.zeros(0)
        inten = np.zeros(0)
    pos = np.repeat(np.arange(counts.size), counts)
    cal = bv.calibration

    if state["mode"] == "raw":
        qx0, qy0 = state["origin"]
        qx = (qx - _per_vector(qx0, pos, shape)) * state["q_pixel_size"]
        qy = (qy - _per_vector(qy0, pos, shape)) * state["q_pixel_size"]
        return RaggedVectors(qx, qy, inten, offsets, shape)

    if state["center"]:
        qx0, qy0 = cal.get_origin()
        qx = qx - _per_vector(qx0, pos, shape)
        qy = qy - _per_vector(qy0, pos, shape)
    if state["ellipse"]:
        a, b, theta = cal.get_ellipse()
        a = _per_vector(a, pos, shape)
        b = _per_vector(b, pos, shape)
        theta = _per_vector(theta, pos, shape)
        e = b / a
        s = np.sin(theta - np.pi / 2.0)
        c = np.cos(theta - np.pi / 2.0)
        t00 = e * s**2 + c**2
        t01 = s * c * (1 - e)
        t11 = s**2 + e * c**2
        qx, qy = t00 * qx + t01 * qy, t01 * qx + t11 * qy
    if state["pixel"]:
        qpix = float(cal.get_Q_pixel_size())
        qx = qx * qpix
        qy = qy * qpix
    if state["rotate"]:
        theta = float(cal.get_QR_rotation())
        flip = bool(cal.get_QR_flip() or False)
        first, second = (qy, qx) if flip else (qx, qy)
        ct, st = np.cos(theta), np.sin(theta)
        qx, qy = ct * first - st * second, st * first + ct * second
    return RaggedVectors(np.asarray(qx, np.float64), np.asarray(qy, np.float64), inten, offsets, shape)


def remove_direct_beam(
    vectors: RaggedVectors, tolerance: float = 0.05
) -> tuple[RaggedVectors, np.ndarray]:
    """Remove, at every position, the spot nearest ``q = 0`` if within ``tolerance``.

    Same rule as :func:`py4dstem_gnn.features.split_direct_beam`, vectorised over
    the scan.

    Parameters
    ----------
    vectors : RaggedVectors
        Calibrated vectors (origin at the direct beam).
    tolerance : float
        Largest distance (1/A) at which a spot counts as the direct beam.

    Returns
    -------
    diffracted : RaggedVectors
        The vectors without the direct beam.
    removed : numpy.ndarray of bool, shape (Rx, Ry)
        Whether a direct beam was found at each position.
    """
    counts = vectors.counts
    n_pos = counts.size
    removed = np.zeros(n_pos, bool)
    keep = np.ones(vectors.qx.size, bool)
    if vectors.qx.size:
        r2 = vectors.qx**2 + vectors.qy**2
        nonempty = np.flatnonzero(counts)
        seg_min = np.minimum.reduceat(r2, vectors.offsets[nonempty])
        pos = vectors.position_index
        min_full = np.full(n_pos, np.inf)
        min_full[nonempty] = seg_min
        is_min = r2 == min_full[pos]
        cand = np.flatnonzero(is_min)
        # first spot attaining the minimum at each position (argmin semantics)
        _, first = np.unique(pos[cand], return_index=True)
        beam = cand[first]
        beam = beam[r2[beam] <= tolerance**2]
        keep[beam] = False
        removed[pos[beam]] = True
    new_counts = counts - removed.astype(np.int64)
    offsets = np.zeros(n_pos + 1, np.int64)
    np.cumsum(new_counts, out=offsets[1:])
    out = RaggedVectors(vectors.qx[keep], vectors.qy[keep], vectors.intensity[keep], offsets, vectors.shape)
    return out, removed.reshape(vectors.shape)


# --------------------------------------------------------------------------------------
# input check
# --------------------------------------------------------------------------------------


def _what_to_do(obj: Any) -> str:
    """The hint of :func:`check_braggvectors` for a wrong input."""
    kind = type(obj).__name__
    if kind in ("CalibratedVectorGetter", "RawVectorGetter"):
        return (
            "pass `bv` (the BraggVectors itself), not `bv.cal` or `bv.raw`: classify_braggvectors reads "
            "the calibration from the BraggVectors and applies it to the whole scan at once"
        )
    if kind == "DataCube":
        return (
            "run braggvectors = datacube.find_Bragg_disks(template=kernel, ...) first, calibrate them "
            "(origin and Q pixel size in 1/A, then braggvectors.setcal()) and pass those"
        )
    if kind == "PointListArray":
        return "pass the BraggVectors that find_Bragg_disks returned (its .raw / .cal are PointListArrays)"
    if kind in ("Root", "Node", "Array", "RealSlice", "DiffractionSlice", "Calibration"):
        return "pass the BraggVectors itself (e.g. py4DSTEM.read(path, datapath=...) or root.tree('braggvectors'))"
    if isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__"):
        return "read the file first: braggvectors = py4DSTEM.read(path) (or use `py4dstem-gnn classify path`)"
    return "for plain (n, 3) spot lists use py4dstem_gnn.predict_pointlists instead"


def check_braggvectors(obj: Any) -> None:
    """Refuse anything but a py4DSTEM ``BraggVectors`` with one line saying what to do.

    Parameters
    ----------
    obj : object
        What was passed to :func:`classify_braggvectors`.

    Raises
    ------
    TypeError
        ``"classify_braggvectors needs a py4DSTEM BraggVectors (got DataCube): run ..."``,
        naming the type passed and the next step.
    """
    from py4DSTEM import BraggVectors

    if isinstance(obj, BraggVectors):
        return
    raise TypeError(
        f"classify_braggvectors needs a py4DSTEM BraggVectors (got {type(obj).__name__}): {_what_to_do(obj)}"
    )
