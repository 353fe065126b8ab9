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
3. counts the diffracted spots; on the positions with at least ``min_spots`` it measures the
   2D nets once and matches them against the template bank (:func:`~py4dstem_gnn.scan.match_scan`),
   then runs the network where the match is not decisive and decides
   (:func:`~py4dstem_gnn.scan.network_scan`: :func:`py4dstem_gnn.network_stage.network_and_decide`,
   the stage :func:`py4dstem_gnn.predict_pointlists` runs too; the model batched by spot count);
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
from typing import Any, Sequence

import numpy as np

from .braggvectors import (  # re-exported: the reading stage lives in braggvectors.py
    RaggedVectors,
    calibrated_vectors,
    check_braggvectors,
    remove_direct_beam,
)
from .decide import load_decision_params
from .filters import majority_filter, valid_positions
from .matching import resolve_bank
from .predict import _load
from .scan import (
    MATCH_SLICE_LABELS,
    SLICE_LABELS,
    build_maps,
    check_q_scale,
    decide_scan,
    match_scan,
    network_scan,
    read_scan,
)
from .confidence.calibration import LEGACY_MARGIN_THRESHOLD, model_calibrations, warn_uncalibrated
from .confidence.conformal import check_coverage
from .labels import CRYSTAL_SYSTEMS, INVALID

__all__ = [
    "classify_braggvectors",
    "check_braggvectors",
    "calibrated_vectors",
    "RaggedVectors",
    "remove_direct_beam",
    "majority_filter",
    "phase_table",
    "read_scan",
    "match_scan",
    "network_scan",
    "decide_scan",
    "build_maps",
    "SLICE_LABELS",
    "MATCH_SLICE_LABELS",
]

logger = logging.getLogger(__name__)



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
    phases: Any = "pool",
    elements: Sequence[str] | None = None,
    match_config: Any = None,
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
    phases : "pool", None, or a list of structures
        What to match against (:func:`py4dstem_gnn.predict_pointlists`): the shipped bank of the
        whole structure pool (default), CIF paths / ASE ``Atoms`` / py4DSTEM ``Crystal`` objects
        (multi-phase mapping of the phases you name), or ``None`` (the network alone).
    elements : sequence of str, optional
        Keep only phases made of these elements (e.g. from EDS).
    match_config : MatchConfig, optional
        Tolerances of the matcher.
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
        beam removal), ``"match"`` (geometry + match), ``"model"`` and ``"post"`` (decision,
        filters, RealSlice).

    Returns
    -------
    py4DSTEM.RealSlice
        Float32 slices (see :data:`SLICE_LABELS`): ``crystal_system`` (0..6, -1
        invalid), ``space_group`` (1..230, -1 invalid), ``confidence``,
        ``n_spots``, ``valid``, the unfiltered labels, the Bragg intensity sum,
        the seven crystal-system probabilities and the conformal sets (``cs_set``
        7-bit mask, ``cs_set_size``, ``sg_set_size``; -1 where not available); with the match
        stage also ``phase`` (index into the phase table, :func:`phase_table`; -1 none),
        ``match_score``, ``zone_axis_u/v/w``, ``in_plane_angle`` (degrees), ``q_scale``. Attach it with
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
    from emdfile import Metadata

    from . import diagnostics, validation

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
    if not raw_vectors:
        diagnostics.check_vectors_calibration(braggvectors)
    if int(np.prod([int(s) for s in braggvectors.Rshape])) == 0:
        raise ValueError(f"the scan is empty (Rshape {tuple(braggvectors.Rshape)}); there is nothing to classify")
    dev = validation.check_device(device)
    net = _load(model, dev)  # before reading: a bad model name fails fast
    bank = resolve_bank(phases, elements)  # before reading: a bad phase list fails fast
    times = timings if timings is not None else {}

    t0 = time.perf_counter()
    scan = read_scan(braggvectors, min_spots, direct_beam_tolerance, raw_vectors, q_pixel_size, origin)
    times["read"] = time.perf_counter() - t0
    logger.info("read %d positions in %.2f s; classifying %d positions with >= %d diffracted spots",
                scan.n_spots.size, times["read"], scan.run.size, min_spots)

    t0 = time.perf_counter()
    params = load_decision_params() if bank is not None else None
    match = match_scan(scan, bank, match_config, progress)
    times["match"] = time.perf_counter() - t0

    conf_cal, conformal = model_calibrations(net)
    if conf_cal is None and bank is None:
        warn_uncalibrated(net)
    q_cs = q_sg = None
    if conformal is not None:
        q_cs, q_sg = conformal.quantiles(coverage)
    elif coverage is not None:
        logger.warning("the model's card has no conformal calibration: coverage=%s ignored, sets are -1", coverage)
    t0 = time.perf_counter()
    times["model"] = 0.0  # the network's share of what follows (0 where the match decided everywhere)
    stage = network_scan(scan, match, bank, params, net, dev, batch_size, progress, autocast, q_sg, times)
    labels = decide_scan(scan, stage, bank, conf_cal, q_cs)
    if bank is not None:
        threshold = (float(confidence_threshold) if confidence_threshold is not None else
                     params.threshold if params.threshold is not None else _resolve_threshold(None, conf_cal))
    else:
        threshold = _resolve_threshold(confidence_threshold, conf_cal)
    valid = valid_positions(labels["ran"], scan.n_spots, labels["confidence"], min_spots, threshold)
    maps = build_maps(scan, labels, valid, median_filter, name, bank is not None)
    meta = _parameters(model, dev, min_spots, median_filter, threshold, direct_beam_tolerance, raw_vectors, conf_cal,
                       conformal, coverage, bank, labels, phases, elements)
    try:  # the scan's real-space calibration travels with the maps (scale bars before bv.attach)
        meta["R_pixel_size"] = float(braggvectors.calibration.get_R_pixel_size())
        meta["R_pixel_units"] = str(braggvectors.calibration.get_R_pixel_units())
    except Exception:  # noqa: BLE001 - an uncalibrated scan: scale bars in pixels
        pass
    maps.metadata = Metadata(name="py4dstem_gnn", data=meta)
    times["post"] = time.perf_counter() - t0 - times["model"]  # decision, filters, RealSlice
    q_med = check_q_scale(labels.get("q_scale"), valid)
    diagnostics.warn_scan_outcome(scan.n_spots, valid, min_spots, q_med)
    logger.info("classified %d/%d valid positions (match %.2f s, model %.2f s, post-processing %.2f s)",
                int(valid.sum()), scan.n_spots.size, times["match"], times.get("model", 0.0), times["post"])
    return maps


def _parameters(model, dev, min_spots, median_filter, threshold, direct_beam_tolerance, raw_vectors, conf_cal, conformal,
                coverage, bank, labels, phases, elements) -> dict:
    params = {
        "model": model if isinstance(model, str) else type(model).__name__,
        "device": str(dev),
        "min_spots": int(min_spots),
        "median_filter": int(median_filter or 1),
        "confidence_threshold": float(threshold),
        "direct_beam_tolerance": float(direct_beam_tolerance),
        "calibration_mode": "raw" if raw_vectors else "calibrated",
        "confidence_definition": (
            "estimated probability that the crystal-system label is right (match + network decision, calibrated on validation data)"
            if bank is not None else
            "estimated probability that the crystal-system label is right (calibrated on validation data)"
            if conf_cal is not None
            else "p(first) - p(second) of the crystal-system probabilities (the weights have no calibration)"
        ),
        "coverage": None if conformal is None else float(conformal.levels[conformal.level_index(
            conformal.default_coverage if coverage is None else coverage)]),
        "cs_set_encoding": "bit c set = crystal-system code c in the conformal set; -1 not available",
        "crystal_systems": list(CRYSTAL_SYSTEMS),
        "invalid": INVALID,
    }
    if bank is not None:
        table = labels["phases"]
        params.update({
            "phases_searched": phases if isinstance(phases, str) else f"{bank.n_phases} user phases",
            "elements": list(elements) if elements else None,
            "n_phases_searched": int(bank.n_phases),
            # the phase table travels as parallel lists (py4DSTEM metadata stores lists and strings)
            "phase_formula": [p["formula"] for p in table],
            "phase_space_group": [p["space_group"] for p in table],
            "phase_crystal_system": [p["crystal_system"] for p in table],
            "phase_source": [p["source"] for p in table],
            # py4DSTEM Metadata writes arrays, not nested lists
            "phase_lat_inv": np.asarray(labels.get("phase_lat_inv", []), np.float64).reshape(-1, 9),
            "phase_conv_map": np.asarray(labels.get("phase_conv_map", []), np.float64).reshape(-1, 9),
            "phase_frame": "reciprocal basis (rows, 1/A) of the cell the templates were made in (spglib standard "
                           "primitive cell; orientations in py4DSTEM's convention, g_lab = g_crystal @ R)",
            "network_ran_share": float(labels["network_ran"][labels["ran"]].mean()) if labels["ran"].any() else 0.0,
        })
    params["slicelabels"] = list(SLICE_LABELS + (MATCH_SLICE_LABELS if bank is not None else ()))
    return params


def phase_table(maps: Any) -> list[dict[str, Any]]:
    """The phase table of maps returned by :func:`classify_braggvectors` (also after ``py4DSTEM.read``).

    Returns
    -------
    list of dict
        One entry per value of the ``phase`` slice: ``formula``, ``space_group``, ``crystal_system``,
        ``source``; empty for maps made without the match stage.
    """
    md = maps.metadata["py4dstem_gnn"]
    try:
        forms = list(md["phase_formula"])
    except KeyError:
        return []
    cols = [list(md[f"phase_{k}"]) for k in ("space_group", "crystal_system", "source")]
    return [{"formula": str(f), "space_group": int(sg), "crystal_system": int(cs), "source": str(src)}
            for f, sg, cs, src in zip(forms, *cols)]
