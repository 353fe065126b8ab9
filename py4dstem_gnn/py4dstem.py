"""py4DSTEM ``BraggVectors`` in, ``RealSlice`` maps of crystal system and space group out.

The public entry point is :func:`classify_braggvectors`. It

1. reads the raw Bragg vectors of the whole scan **once** into flat arrays and applies
   the calibration (origin, ellipse, pixel size, rotation/flip -- the order of
   ``BraggVectors.cal``) vectorised over the scan (:func:`calibrated_vectors`);
   the result equals ``bv.cal[rx, ry]`` at every position;
2. removes the direct beam by position: at every position the spot nearest the
   calibrated origin, if it lies within ``direct_beam_tolerance`` (1/A);
3. counts the diffracted spots, runs the model (batched by spot count, see
   :mod:`py4dstem_gnn.inference`) on the positions with at least ``min_spots``;
4. post-processes: positions with fewer than ``min_spots`` diffracted spots or a
   confidence below ``confidence_threshold`` are invalid; a
   ``median_filter`` × ``median_filter`` majority filter over the *valid*
   neighbours relabels valid positions (invalid positions stay invalid);
5. returns a plain :class:`py4DSTEM.RealSlice`.

The returned RealSlice holds float32 slices (RealSlice slices share one dtype;
label codes are small integers, exact in float32 -- cast with ``.astype(int)``):

``crystal_system``          0..6 (triclinic .. cubic), -1 invalid (filtered)
``space_group``             1..230, -1 invalid (filtered)
``confidence``              margin of the two largest crystal-system probabilities, 0 where
                            the model was not run
``n_spots``                 diffracted spots (direct beam excluded)
``valid``                   1 where the labels are valid, else 0
``crystal_system_raw``      the model's crystal system before the majority filter
                            (-1 where the model was not run or the position is invalid)
``space_group_raw``         the same for the space group
``intensity``               sum of the Bragg-vector intensities (direct beam included)
``p_<system>``              probability of each crystal system (7 slices), 0 where the
                            model was not run

The parameters are stored in the RealSlice's metadata ``"py4dstem_gnn"``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from .inference import (
    RaggedSpots,
    _load,
    _predict_spot_lists,
    crystal_system_confidence,
)
from .labels import CRYSTAL_SYSTEMS, INVALID, N_CRYSTAL_SYSTEMS, SG_TO_CS

__all__ = [
    "classify_braggvectors",
    "calibrated_vectors",
    "RaggedVectors",
    "remove_direct_beam",
    "majority_filter",
    "SLICE_LABELS",
]

logger = logging.getLogger(__name__)

#: Slice labels of the RealSlice returned by :func:`classify_braggvectors`, in order.
SLICE_LABELS: tuple[str, ...] = (
    "crystal_system",
    "space_group",
    "confidence",
    "n_spots",
    "valid",
    "crystal_system_raw",
    "space_group_raw",
    "intensity",
) + tuple(f"p_{name}" for name in CRYSTAL_SYSTEMS)


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
# post-processing
# --------------------------------------------------------------------------------------


def _box_count(mask: np.ndarray, size: int) -> np.ndarray:
    """Number of True pixels in the ``size`` × ``size`` window around each pixel."""
    counts = ndimage.uniform_filter(mask.astype(np.float32), size=size, mode="constant", cval=0.0)
    return np.rint(counts * (size * size)).astype(np.int32)


def majority_filter(
    labels: np.ndarray,
    valid: np.ndarray,
    size: int,
    within: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Spatial majority filter over valid neighbours.

    Each valid pixel takes the label held by most valid pixels of the ``size`` ×
    ``size`` window centred on it; ties are resolved in favour of the pixel's own
    label, then the smallest label. Invalid pixels are not voted on and stay
    ``-1``.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (Rx, Ry)
        Label map (values at invalid pixels are ignored).
    valid : numpy.ndarray of bool, shape (Rx, Ry)
    size : int
        Window side (pixels). ``1`` returns the labels unchanged at valid pixels.
    within : numpy.ndarray of int, shape (Rx, Ry), optional
        Restrict the winning label at each pixel to labels ``l`` with
        ``groups[l] == within[pixel]`` (used to keep space groups inside the
        filtered crystal system).
    groups : numpy.ndarray, optional
        Group of each label value (indexable by label), needed with ``within``.

    Returns
    -------
    numpy.ndarray of int64, shape (Rx, Ry)
        Filtered labels, ``-1`` at invalid pixels.
    """
    labels = np.asarray(labels)
    valid = np.asarray(valid, bool)
    out = np.full(labels.shape, INVALID, np.int64)
    if not valid.any():
        return out
    size = int(size)
    if size <= 1:
        out[valid] = labels[valid]
        return out
    best_score = np.full(labels.shape, -1.0, np.float32)
    best = np.full(labels.shape, INVALID, np.int64)
    for lab in np.unique(labels[valid]):
        is_lab = valid & (labels == lab)
        score = _box_count(is_lab, size).astype(np.float32) + 0.5 * is_lab
        better = score > best_score
        if within is not None:
            better &= within == groups[lab]
        best_score[better] = score[better]
        best[better] = lab
    out[valid] = best[valid]
    return out


def _filter_maps(
    cs: np.ndarray, sg: np.ndarray, valid: np.ndarray, size: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Majority-filter the crystal-system map, then the space groups within it."""
    if size is None or int(size) <= 1:
        return np.where(valid, cs, INVALID), np.where(valid, sg, INVALID)
    cs_f = majority_filter(cs, valid, int(size))
    sg_groups = np.concatenate([[INVALID - 1], SG_TO_CS])  # index by space-group number
    sg_f = majority_filter(sg, valid, int(size), within=cs_f, groups=sg_groups)
    return cs_f, sg_f


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------


def classify_braggvectors(
    braggvectors: Any,
    model: Any = "default",
    device: str = "auto",
    batch_size: int | None = None,
    min_spots: int = 5,
    median_filter: int | None = 5,
    confidence_threshold: float = 0.005,
    progress: bool = True,
    *,
    direct_beam_tolerance: float = 0.05,
    raw_vectors: bool = False,
    q_pixel_size: float | None = None,
    origin: tuple[float, float] | None = None,
    autocast: bool = False,
    name: str = "crystal_maps",
    timings: dict[str, float] | None = None,
):
    """Crystal-system and space-group maps of a 4D-STEM scan from its Bragg vectors.

    Parameters
    ----------
    braggvectors : py4DSTEM.BraggVectors
        Calibrated Bragg vectors: origin and Q pixel size (1/A) set (ellipse and
        rotation are applied when the calibration state has them), as
        ``braggvectors.cal[rx, ry]`` returns them.
    model : str, path or PEAGGMoE
        ``"default"`` for the shipped weights, a path to saved weights, or a loaded model.
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    batch_size : int, optional
        Patterns per batch; ``None`` chooses memory-bounded batches automatically.
    min_spots : int
        Positions with fewer diffracted spots (direct beam excluded) are invalid.
    median_filter : int or None
        Side of the spatial majority filter applied to the label maps over valid
        neighbours; ``None`` or ``1`` switches it off.
    confidence_threshold : float
        Positions whose confidence (margin between the two most probable crystal
        systems) is below this value are invalid; ``0`` switches it off.
    progress : bool
        Show a tqdm progress bar over the scan.
    direct_beam_tolerance : float
        Largest distance (1/A) from the calibrated origin at which the nearest spot
        is taken as the direct beam and removed.
    raw_vectors : bool
        Opt in to raw (uncalibrated) vectors: they are shifted by ``origin`` (the
        calibrated origin if any, else the detector centre) and scaled by
        ``q_pixel_size``; no ellipse or rotation correction.
    q_pixel_size : float, optional
        1/A per detector pixel; required with ``raw_vectors=True``.
    origin : tuple, optional
        ``(qx0, qy0)`` in pixels for ``raw_vectors=True``.
    autocast : bool
        bfloat16 autocast for the model.
    name : str
        Name of the returned RealSlice.
    timings : dict, optional
        If given, filled with seconds spent in ``"read"`` (reading + calibration +
        beam removal), ``"model"`` and ``"post"`` (filters + RealSlice).

    Returns
    -------
    py4DSTEM.RealSlice
        Float32 slices (see :data:`SLICE_LABELS`): ``crystal_system`` (0..6, -1
        invalid), ``space_group`` (1..230, -1 invalid), ``confidence``,
        ``n_spots``, ``valid``, the unfiltered labels, the Bragg intensity sum and
        the seven crystal-system probabilities. Attach it with
        ``braggvectors.attach(maps)``; it saves with ``py4DSTEM.save`` and reads
        back with ``py4DSTEM.read`` without this package.

    Raises
    ------
    ValueError
        If the vectors are not calibrated (the message names the missing
        calibration), they reach beyond
        :data:`py4dstem_gnn.validation.MAX_Q` 1/A (probably pixel units), the
        scan is empty, or a parameter is out of range.
    TypeError
        If ``braggvectors`` is not a BraggVectors or a parameter has the wrong
        type.
    FileNotFoundError
        If ``model`` names weights that are not found.

    Bragg vectors with NaN or inf values are dropped (one logged warning); see
    ``docs/guarantees.md``.

    Notes
    -----
    Order of the post-processing: positions with ``n_spots < min_spots`` or
    ``confidence < confidence_threshold`` are invalid; the majority filter then
    relabels each valid position with the most frequent label among the valid
    positions of its window (space groups: among those of the filtered crystal
    system), so invalid positions neither vote nor get filled.
    """
    from py4DSTEM import RealSlice
    from emdfile import Metadata

    from . import validation

    # checks first, before reading the scan (docs/guarantees.md)
    validation.check_classify_parameters(min_spots, median_filter, confidence_threshold)
    batch_size = validation.check_batch_size(batch_size)
    direct_beam_tolerance = validation.check_tolerance(direct_beam_tolerance)
    validation.check_model(model)
    if not hasattr(braggvectors, "Rshape") or not hasattr(braggvectors, "calibration"):
        raise TypeError(f"expected a py4DSTEM BraggVectors; got {type(braggvectors).__name__}")
    if int(np.prod([int(s) for s in braggvectors.Rshape])) == 0:
        raise ValueError(f"the scan is empty (Rshape {tuple(braggvectors.Rshape)}); there is nothing to classify")
    dev = validation.check_device(device)
    net = _load(model, dev)  # before reading: a bad model name fails fast
    times = timings if timings is not None else {}

    t0 = time.perf_counter()
    vectors = calibrated_vectors(
        braggvectors, raw_vectors=raw_vectors, q_pixel_size=q_pixel_size, origin=origin
    )
    keep, offsets = validation.finite_vectors(vectors.qx, vectors.qy, vectors.intensity, vectors.offsets)
    if not keep.all():
        vectors = RaggedVectors(vectors.qx[keep], vectors.qy[keep], vectors.intensity[keep], offsets, vectors.shape)
    validation.check_q_range(vectors.qx, vectors.qy, "the calibrated BraggVectors")
    shape = vectors.shape
    intensity = np.bincount(vectors.position_index, weights=vectors.intensity, minlength=vectors.counts.size)
    diffracted, _removed = remove_direct_beam(vectors, direct_beam_tolerance)
    n_vectors = int(vectors.qx.size)
    del vectors  # large scans: keep one copy of the vectors at a time
    n_spots = diffracted.counts
    run = np.flatnonzero(n_spots >= min_spots)
    in_run = np.repeat(n_spots >= min_spots, n_spots)
    spots = np.stack([diffracted.qx[in_run], diffracted.qy[in_run], diffracted.intensity[in_run]], axis=1)
    offsets = np.zeros(run.size + 1, np.int64)
    np.cumsum(n_spots[run], out=offsets[1:])
    ragged = RaggedSpots(spots.astype(np.float32), offsets)
    del diffracted, spots, in_run
    times["read"] = time.perf_counter() - t0
    logger.info(
        "read %d positions (%d vectors) in %.2f s; classifying %d positions with >= %d diffracted spots",
        n_spots.size, n_vectors, times["read"], run.size, min_spots,
    )

    model_times: dict[str, float] = {}
    cs_p, sg_lab = _predict_spot_lists(
        ragged, net, dev, batch_size, progress, autocast, model_times, space_group_probs=False
    )
    del ragged
    times["model"] = model_times.get("model", 0.0)

    t0 = time.perf_counter()
    n_pos = n_spots.size
    cs_raw = np.full(n_pos, INVALID, np.int64)
    sg_raw = np.full(n_pos, INVALID, np.int64)
    conf = np.zeros(n_pos, np.float32)
    probs = np.zeros((n_pos, N_CRYSTAL_SYSTEMS), np.float32)
    if run.size:
        cs_r, conf_r = crystal_system_confidence(cs_p)
        cs_raw[run], sg_raw[run], conf[run], probs[run] = cs_r, sg_lab, conf_r, cs_p
    ran = np.zeros(n_pos, bool)
    ran[run] = True
    valid = ran & (n_spots >= min_spots) & (conf >= confidence_threshold)
    cs_f, sg_f = _filter_maps(cs_raw.reshape(shape), sg_raw.reshape(shape), valid.reshape(shape), median_filter)

    data = np.empty((len(SLICE_LABELS),) + shape, np.float32)
    data[0] = cs_f
    data[1] = sg_f
    data[2] = conf.reshape(shape)
    data[3] = n_spots.reshape(shape)
    data[4] = valid.reshape(shape)
    data[5] = np.where(valid, cs_raw, INVALID).reshape(shape)
    data[6] = np.where(valid, sg_raw, INVALID).reshape(shape)
    data[7] = intensity.reshape(shape)
    data[8:] = np.moveaxis(probs.reshape(shape + (N_CRYSTAL_SYSTEMS,)), -1, 0)
    maps = RealSlice(data=data, name=name, slicelabels=list(SLICE_LABELS))
    params = {
        "model": model if isinstance(model, str) else type(model).__name__,
        "device": str(dev),
        "min_spots": int(min_spots),
        "median_filter": int(median_filter or 1),
        "confidence_threshold": float(confidence_threshold),
        "direct_beam_tolerance": float(direct_beam_tolerance),
        "calibration_mode": "raw" if raw_vectors else "calibrated",
        "confidence_definition": "p(first) - p(second) of the crystal-system probabilities",
        "crystal_systems": list(CRYSTAL_SYSTEMS),
        "slicelabels": list(SLICE_LABELS),
        "invalid": INVALID,
    }
    maps.metadata = Metadata(name="py4dstem_gnn", data=params)
    times["post"] = time.perf_counter() - t0
    logger.info(
        "classified %d/%d valid positions (model %.2f s, post-processing %.2f s)",
        int(valid.sum()), n_pos, times["model"], times["post"],
    )
    return maps


# --------------------------------------------------------------------------------------
# command line: py4dstem-gnn classify
# --------------------------------------------------------------------------------------


def _find_braggvectors(obj: Any, name: str | None) -> Any:
    """The BraggVectors in what ``py4DSTEM.read`` returned (itself, or by name in its tree)."""
    from py4DSTEM import BraggVectors

    if isinstance(obj, BraggVectors) and (name is None or obj.name == name):
        return obj
    root = getattr(obj, "root", None) or obj
    candidates = []

    def walk(node: Any) -> None:
        if isinstance(node, BraggVectors):
            candidates.append(node)
        for child in getattr(node, "_branch", {}).values() if hasattr(node, "_branch") else []:
            walk(child)

    walk(root)
    if name is not None:
        candidates = [c for c in candidates if c.name == name]
    if not candidates:
        raise ValueError(f"no BraggVectors{' named ' + repr(name) if name else ''} found in the file")
    if len(candidates) > 1:
        raise ValueError(f"several BraggVectors in the file ({[c.name for c in candidates]}); choose one with --braggvectors")
    return candidates[0]


def configure_parser(parser: Any) -> None:
    """Arguments of ``py4dstem-gnn classify``."""
    parser.add_argument("input", help="py4DSTEM file (EMD/HDF5) holding calibrated BraggVectors")
    parser.add_argument("-o", "--output", default=None, help="output file (default: <input>_maps.h5)")
    parser.add_argument("--braggvectors", default=None, help="name of the BraggVectors in the file (if several)")
    parser.add_argument("--model", default="default", help="weights name or path (default: the shipped weights)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--min-spots", type=int, default=5)
    parser.add_argument("--median-filter", type=int, default=5)
    parser.add_argument("--confidence-threshold", type=float, default=0.005)
    parser.add_argument("--figure", default=None, help="also write the crystal-system figure (PNG) here")
    parser.add_argument("--no-progress", action="store_true")


def run_cli(args: Any) -> int:
    """Run ``py4dstem-gnn classify``: read, classify, attach, save (and plot)."""
    from pathlib import Path

    import py4DSTEM

    if not Path(args.input).is_file():
        raise FileNotFoundError(f"input file {args.input} does not exist")
    obj = py4DSTEM.read(args.input)
    bv = _find_braggvectors(obj, args.braggvectors)
    maps = classify_braggvectors(
        bv,
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        min_spots=args.min_spots,
        median_filter=args.median_filter,
        confidence_threshold=args.confidence_threshold,
        progress=not args.no_progress,
    )
    bv.attach(maps)
    out = Path(args.output) if args.output else Path(args.input).with_name(Path(args.input).stem + "_maps.h5")
    py4DSTEM.save(str(out), bv, mode="o")
    logger.warning("wrote %s (RealSlice %r attached to the BraggVectors %r)", out, maps.name, bv.name)
    if args.figure:
        from .plot import crystal_system_figure

        crystal_system_figure(maps).savefig(args.figure, dpi=120)
        logger.warning("wrote %s", args.figure)
    return 0
