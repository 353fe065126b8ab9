"""py4DSTEM ``BraggVectors`` in, ``RealSlice`` maps of crystal system and space group out.

The public entry point is :func:`classify_braggvectors`. It

1. checks its input (:func:`~py4dstem_gnn.braggvectors.check_braggvectors`), reads the
   raw Bragg vectors of the whole scan **once** into flat arrays and applies the
   calibration (origin, ellipse, pixel size, rotation/flip -- the order of
   ``BraggVectors.cal``) vectorised over the scan
   (:func:`~py4dstem_gnn.braggvectors.calibrated_vectors`); the result equals
   ``bv.cal[rx, ry]`` at every position;
2. removes the direct beam by position: at every position the spot nearest the
   calibrated origin, if it lies within ``direct_beam_tolerance`` (1/A)
   (:func:`~py4dstem_gnn.braggvectors.remove_direct_beam`);
3. counts the diffracted spots, runs the model (batched by spot count, see
   :mod:`py4dstem_gnn.predict`) on the positions with at least ``min_spots``;
4. post-processes: positions with fewer than ``min_spots`` diffracted spots or a
   confidence below ``confidence_threshold`` are invalid; a
   ``median_filter`` × ``median_filter`` majority filter over the *valid*
   neighbours relabels valid positions (invalid positions stay invalid);
5. returns a plain :class:`py4DSTEM.RealSlice`.

The returned RealSlice holds float32 slices (RealSlice slices share one dtype;
label codes are small integers, exact in float32 -- cast with ``.astype(int)``):

``crystal_system``          0..6 (triclinic .. cubic), -1 invalid (filtered)
``space_group``             1..230, -1 invalid (filtered)
``confidence``              estimated probability that the crystal-system label is right
                            (calibration in the weights' card; the raw margin of the two
                            largest probabilities for a model without one), 0 where the
                            model was not run
``n_spots``                 diffracted spots (direct beam excluded)
``valid``                   1 where the labels are valid, else 0
``crystal_system_raw``      the model's crystal system before the majority filter
                            (-1 where the model was not run or the position is invalid)
``space_group_raw``         the same for the space group
``intensity``               sum of the Bragg-vector intensities (direct beam included)
``p_<system>``              probability of each crystal system (7 slices), 0 where the
                            model was not run
``cs_set``                  conformal crystal-system set at the chosen coverage, a 7-bit
                            mask (bit ``c`` = system code ``c``, see
                            :func:`py4dstem_gnn.conformal.decode_mask`), -1 where the model
                            was not run or the weights have no conformal calibration
``cs_set_size``             number of crystal systems in the set (1..7), -1 likewise
``sg_set_size``             number of space groups in the space-group set (1..230), -1 likewise

Sets are given at every position the model ran on, including positions below the confidence
threshold: a set is a calibrated statement of its own (the true class is in it with the
coverage probability), and it shows *why* a position abstained ("tetragonal | cubic").

The parameters are stored in the RealSlice's metadata ``"py4dstem_gnn"``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from scipy import ndimage

from .braggvectors import (  # re-exported: the reading stage lives in braggvectors.py
    RaggedVectors,
    calibrated_vectors,
    check_braggvectors,
    remove_direct_beam,
)
from .predict import (
    RaggedSpots,
    _load,
    _predict_spot_lists,
    crystal_system_confidence,
)
from .confidence.calibration import LEGACY_MARGIN_THRESHOLD, model_calibrations, warn_uncalibrated
from .confidence.conformal import check_coverage, cs_set_mask, mask_size
from .labels import CRYSTAL_SYSTEMS, INVALID, N_CRYSTAL_SYSTEMS, SG_TO_CS

__all__ = [
    "classify_braggvectors",
    "check_braggvectors",
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
) + tuple(f"p_{name}" for name in CRYSTAL_SYSTEMS) + ("cs_set", "cs_set_size", "sg_set_size")


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


def _resolve_threshold(threshold: float | None, calibration: Any) -> float:
    """The confidence threshold to apply: as given, or the card's default."""
    if threshold is not None:
        return float(threshold)
    if calibration is not None and calibration.threshold is not None:
        return float(calibration.threshold)
    if calibration is not None:
        logger.warning("the model's card records a confidence calibration but no default threshold; labelling every position")
        return 0.0
    logger.warning(
        "the model's card records no calibrated confidence threshold; using %s on the raw margin",
        LEGACY_MARGIN_THRESHOLD,
    )
    return LEGACY_MARGIN_THRESHOLD


def classify_braggvectors(
    braggvectors: Any,
    model: Any = "default",
    device: str = "auto",
    batch_size: int | None = None,
    min_spots: int = 5,
    median_filter: int | None = 5,
    confidence_threshold: float | None = None,
    progress: bool = True,
    coverage: float | None = None,
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
    confidence_threshold : float or None
        Positions whose confidence (estimated probability that the crystal-system
        label is right) is below this value are invalid. ``None`` takes the
        default recorded in the weights' card (the smallest threshold meeting the
        card's accuracy goal on validation data); a model without one falls back to
        0.005 on the raw margin (logged warning). ``0`` switches it off.
    progress : bool
        Show a tqdm progress bar over the scan.
    coverage : float or None
        Coverage level of the conformal sets (slices ``cs_set``, ``cs_set_size``,
        ``sg_set_size``); ``None`` takes the card's default (0.9 for the shipped
        calibration). The next calibrated level up is used between grid points.
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
        ``n_spots``, ``valid``, the unfiltered labels, the Bragg intensity sum,
        the seven crystal-system probabilities and the conformal sets (``cs_set``
        7-bit mask, ``cs_set_size``, ``sg_set_size``; -1 where not available). Attach it with
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
    validation.check_classify_parameters(
        min_spots, median_filter, 0.0 if confidence_threshold is None else confidence_threshold
    )
    if coverage is not None:
        check_coverage(coverage)
    batch_size = validation.check_batch_size(batch_size)
    direct_beam_tolerance = validation.check_tolerance(direct_beam_tolerance)
    validation.check_model(model)
    check_braggvectors(braggvectors)
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

    conf_cal, conformal = model_calibrations(net)
    if conf_cal is None:
        warn_uncalibrated(net)
    confidence_threshold = _resolve_threshold(confidence_threshold, conf_cal)
    q_cs = q_sg = None
    if conformal is not None:
        q_cs, q_sg = conformal.quantiles(coverage)
    elif coverage is not None:
        logger.warning("the model's card has no conformal calibration: coverage=%s ignored, sets are -1", coverage)
    model_times: dict[str, float] = {}
    extras: dict[str, np.ndarray] = {}
    cs_p, sg_lab = _predict_spot_lists(
        ragged, net, dev, batch_size, progress, autocast, model_times, space_group_probs=False,
        sg_set_q=q_sg, extras=extras,
    )
    del ragged
    times["model"] = model_times.get("model", 0.0)

    t0 = time.perf_counter()
    n_pos = n_spots.size
    cs_raw = np.full(n_pos, INVALID, np.int64)
    sg_raw = np.full(n_pos, INVALID, np.int64)
    conf = np.zeros(n_pos, np.float32)
    probs = np.zeros((n_pos, N_CRYSTAL_SYSTEMS), np.float32)
    cs_set = np.full(n_pos, INVALID, np.int64)
    sg_size = np.full(n_pos, INVALID, np.int64)
    if run.size:
        cs_r, conf_r = crystal_system_confidence(cs_p)
        if conf_cal is not None:
            conf_r = conf_cal(cs_p)
        cs_raw[run], sg_raw[run], conf[run], probs[run] = cs_r, sg_lab, conf_r, cs_p
        if q_cs is not None:
            cs_set[run] = cs_set_mask(cs_p, q_cs)
            sg_size[run] = extras["sg_set_size"]
    ran = np.zeros(n_pos, bool)
    ran[run] = True
    valid = ran & (n_spots >= min_spots) & (conf >= confidence_threshold)
    cs_f, sg_f = _filter_maps(cs_raw.reshape(shape), sg_raw.reshape(shape), valid.reshape(shape), median_filter)

    data = np.empty((len(SLICE_LABELS),) + shape, np.float32)
    at = {label: i for i, label in enumerate(SLICE_LABELS)}
    data[at["crystal_system"]] = cs_f
    data[at["space_group"]] = sg_f
    data[at["confidence"]] = conf.reshape(shape)
    data[at["n_spots"]] = n_spots.reshape(shape)
    data[at["valid"]] = valid.reshape(shape)
    data[at["crystal_system_raw"]] = np.where(valid, cs_raw, INVALID).reshape(shape)
    data[at["space_group_raw"]] = np.where(valid, sg_raw, INVALID).reshape(shape)
    data[at["intensity"]] = intensity.reshape(shape)
    p0 = at[f"p_{CRYSTAL_SYSTEMS[0]}"]
    data[p0 : p0 + N_CRYSTAL_SYSTEMS] = np.moveaxis(probs.reshape(shape + (N_CRYSTAL_SYSTEMS,)), -1, 0)
    data[at["cs_set"]] = cs_set.reshape(shape)
    data[at["cs_set_size"]] = mask_size(cs_set).reshape(shape)
    data[at["sg_set_size"]] = sg_size.reshape(shape)
    maps = RealSlice(data=data, name=name, slicelabels=list(SLICE_LABELS))
    params = {
        "model": model if isinstance(model, str) else type(model).__name__,
        "device": str(dev),
        "min_spots": int(min_spots),
        "median_filter": int(median_filter or 1),
        "confidence_threshold": float(confidence_threshold),
        "direct_beam_tolerance": float(direct_beam_tolerance),
        "calibration_mode": "raw" if raw_vectors else "calibrated",
        "confidence_definition": (
            "estimated probability that the crystal-system label is right (calibrated on validation data)"
            if conf_cal is not None
            else "p(first) - p(second) of the crystal-system probabilities (the weights have no calibration)"
        ),
        "coverage": None if conformal is None else float(conformal.levels[conformal.level_index(
            conformal.default_coverage if coverage is None else coverage)]),
        "cs_set_encoding": "bit c set = crystal-system code c in the conformal set; -1 not available",
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
