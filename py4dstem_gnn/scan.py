"""The stages of :func:`py4dstem_gnn.classify_braggvectors` over a scan, each a function of its own.

vectors (:func:`read_scan`) -> geometry + match (:func:`match_scan`: one net measurement serves the
scale estimate and the match) -> network where needed + decide (:func:`network_scan`: the stage
function :func:`py4dstem_gnn.network_stage.network_and_decide` that :func:`py4dstem_gnn.predict_pointlists`
runs too) -> labels on the scan grid (:func:`decide_scan`) -> filters + maps (:func:`build_maps`), and
the calibration check the match gives for free (:func:`check_q_scale`). Each works on flat arrays over
the classified positions (:class:`ScanSpots`), so a stage can be run, timed and tested alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batching import RaggedSpots
from .braggvectors import RaggedVectors, calibrated_vectors, remove_direct_beam
from .confidence.conformal import cs_set_mask, mask_size
from .filters import filter_maps
from .labels import CRYSTAL_SYSTEMS, INVALID, N_CRYSTAL_SYSTEMS
from .network_stage import StageOutput, crystal_system_confidence, network_and_decide

__all__ = ["ScanSpots", "read_scan", "match_scan", "network_scan", "decide_scan", "build_maps", "check_q_scale",
           "SLICE_LABELS", "MATCH_SLICE_LABELS"]

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
#: Slices added by the match stage (``phases`` not ``None``).
MATCH_SLICE_LABELS: tuple[str, ...] = (
    "phase", "match_score", "zone_axis_u", "zone_axis_v", "zone_axis_w", "in_plane_angle", "q_scale",
)




@dataclass
class ScanSpots:
    """The diffracted spots of a scan, ready for the stages after reading.

    Attributes
    ----------
    spots : RaggedSpots
        Diffracted spots (direct beam removed) of the positions that are classified.
    run : numpy.ndarray
        (m,) flat position index of each classified position (``n_spots >= min_spots``).
    n_spots : numpy.ndarray
        (Rx * Ry,) diffracted spots per position.
    intensity : numpy.ndarray
        (Rx * Ry,) sum of the Bragg intensities (direct beam included).
    shape : tuple
        ``(Rx, Ry)``.
    """

    spots: RaggedSpots
    run: np.ndarray
    n_spots: np.ndarray
    intensity: np.ndarray
    shape: tuple

    def pointlists(self) -> list[np.ndarray]:
        """The classified positions' spots as a list of (n_i, 3) arrays (views)."""
        o = self.spots.offsets
        return [self.spots.spots[o[i]:o[i + 1]] for i in range(len(o) - 1)]


def read_scan(braggvectors: Any, min_spots: int, direct_beam_tolerance: float, raw_vectors: bool = False,
              q_pixel_size: float | None = None, origin: tuple[float, float] | None = None) -> ScanSpots:
    """Stage 1, vectors: calibrated spots of the whole scan, direct beam removed (read once, vectorised)."""
    from . import validation

    vectors = calibrated_vectors(braggvectors, raw_vectors=raw_vectors, q_pixel_size=q_pixel_size, origin=origin)
    keep, offsets = validation.finite_vectors(vectors.qx, vectors.qy, vectors.intensity, vectors.offsets)
    if not keep.all():
        vectors = RaggedVectors(vectors.qx[keep], vectors.qy[keep], vectors.intensity[keep], offsets, vectors.shape)
    validation.check_q_range(vectors.qx, vectors.qy, "the calibrated BraggVectors")
    shape = vectors.shape
    intensity = np.bincount(vectors.position_index, weights=vectors.intensity, minlength=vectors.counts.size)
    diffracted, _removed = remove_direct_beam(vectors, direct_beam_tolerance)
    del vectors  # large scans: keep one copy of the vectors at a time
    n_spots = diffracted.counts
    run = np.flatnonzero(n_spots >= min_spots)
    in_run = np.repeat(n_spots >= min_spots, n_spots)
    spots = np.stack([diffracted.qx[in_run], diffracted.qy[in_run], diffracted.intensity[in_run]], axis=1)
    offs = np.zeros(run.size + 1, np.int64)
    np.cumsum(n_spots[run], out=offs[1:])
    return ScanSpots(RaggedSpots(spots.astype(np.float32), offs), run, n_spots, intensity, shape)


def match_scan(scan: ScanSpots, bank: Any, config: Any = None, progress: bool = False) -> Any:
    """Stages 2-3, geometry and match: the measured net of every classified position against the bank.

    The nets are measured once (:func:`py4dstem_gnn.geometry.pattern_geometry`) and serve both the
    scan's scale estimate (:func:`py4dstem_gnn.matching.matcher.estimate_scale`, from 50 positions on)
    and the match.

    Parameters
    ----------
    scan : ScanSpots
    bank : TemplateBank or None
        ``None``: no match stage (returns ``None``).
    config : MatchConfig, optional
    progress : bool

    Returns
    -------
    MatchResult or None
    """
    if bank is None:
        return None
    from dataclasses import replace

    from .geometry import pattern_geometry
    from .matching import MatchConfig, match_patterns
    from .matching.matcher import estimate_scale

    cfg = config or MatchConfig()
    pls = scan.pointlists()
    geo = pattern_geometry(pls)
    centre = estimate_scale(pls, bank, cfg, geometry=geo) if len(pls) >= 50 else None
    if centre is not None and abs(centre - 1) > 0.01:
        logger.info("the scan's confident matches need a scale of %.3f (measured / templates): matching around it", centre)
        cfg = replace(cfg, scale_centre=centre)
    return match_patterns(pls, bank, cfg, geometry=geo, progress=progress)


def network_scan(scan: ScanSpots, match: Any, bank: Any, params: Any, net: Any, dev: Any, batch_size: int | None,
                 progress: bool, autocast: bool, q_sg: float | None, times: dict) -> StageOutput | None:
    """Stages 4-5, network where needed and decide, over the classified positions.

    One call of :func:`py4dstem_gnn.network_stage.network_and_decide` (what
    :func:`py4dstem_gnn.predict_pointlists` runs): the network where the match is not decisive (on
    every position without a match stage), the decision and the match fields.

    Parameters
    ----------
    scan : ScanSpots
    match : MatchResult or None
        From :func:`match_scan`.
    bank : TemplateBank or None
    params : DecisionParams or None
    net : torch.nn.Module
    dev : torch.device
    batch_size : int or None
    progress, autocast : bool
    q_sg : float or None
        Conformal quantile of the space-group head (set sizes), ``None``: no sets.
    times : dict
        Receives ``"model"``: seconds in the network (when it ran).

    Returns
    -------
    StageOutput or None
        ``None`` when no position is classified.
    """
    if scan.run.size == 0:
        return None
    model_times: dict[str, float] = {}
    stage = network_and_decide(scan.spots, match, bank, params, net, dev, batch_size=batch_size, progress=progress,
                               autocast=autocast, sg_set_q=q_sg, timings=model_times)
    if "model" in model_times:
        times["model"] = model_times["model"]
    return stage


def decide_scan(scan: ScanSpots, stage: StageOutput | None, bank: Any, conf_cal: Any, q_cs: float | None) -> dict[str, Any]:
    """Stage 5 on the scan grid: the decided labels of every position (the network's alone without a match).

    Parameters
    ----------
    scan : ScanSpots
    stage : StageOutput or None
        From :func:`network_scan` (``None``: no position classified).
    bank : TemplateBank or None
        The bank matched against (``None``: no match stage).
    conf_cal : callable or None
        The model card's confidence calibration (used without a match stage).
    q_cs : float or None
        Conformal quantile of the crystal-system head (sets), ``None``: no sets.

    Returns
    -------
    dict
        Per position (``Rx * Ry``): ``ran``, ``cs``, ``sg``, ``confidence``, ``probs`` (n, 7), ``cs_set``,
        ``sg_set_size``; with a match stage also ``phase``, ``phases``, ``phase_lat_inv``,
        ``phase_conv_map``, ``match_score``, ``zone_axis``, ``in_plane_angle``, ``q_scale``,
        ``orientation``, ``network_ran``.
    """
    n_pos, run = scan.n_spots.size, scan.run
    out = {"ran": np.zeros(n_pos, bool), "cs": np.full(n_pos, INVALID, np.int64), "sg": np.full(n_pos, INVALID, np.int64),
           "confidence": np.zeros(n_pos, np.float32), "probs": np.zeros((n_pos, N_CRYSTAL_SYSTEMS), np.float32),
           "cs_set": np.full(n_pos, INVALID, np.int64), "sg_set_size": np.full(n_pos, INVALID, np.int64)}
    out["ran"][run] = True
    if stage is None or run.size == 0:
        if bank is not None:
            out.update(_empty_match_fields(n_pos))
        return out
    net_out, need = stage.network, stage.network_ran
    cs_p = net_out.crystal_system_probs
    if q_cs is not None:
        sets = cs_set_mask(cs_p, q_cs)
        out["cs_set"][run] = np.where(need, sets, INVALID)
        out["sg_set_size"][run] = net_out.sg_set_size
    dec = stage.decision
    if dec is None:
        cs_r, conf_r = crystal_system_confidence(cs_p)
        if conf_cal is not None:
            conf_r = conf_cal(cs_p)
        out["cs"][run], out["sg"][run], out["confidence"][run], out["probs"][run] = cs_r, net_out.space_group, conf_r, cs_p
        return out
    out["cs"][run], out["sg"][run], out["confidence"][run] = dec.crystal_system, dec.space_group, dec.confidence
    out["probs"][run] = dec.crystal_system_probs
    # where the match decided alone, its set is the decided system
    out["cs_set"][run] = np.where(need, out["cs_set"][run], 1 << dec.crystal_system)
    f = stage.fields
    out.update(_empty_match_fields(n_pos))
    out["phase"][run] = f["phase"]
    out["phases"] = f["phases"]
    # the lattice of each identified phase travels too: zone axis + in-plane angle -> orientation
    out["phase_lat_inv"] = [[float(x) for x in bank.lat_inv[i].reshape(9)] for i in f["bank_index"]]
    out["phase_conv_map"] = [[float(x) for x in bank.conv_map[i].reshape(9)] for i in f["bank_index"]]
    out["match_score"][run] = f["match_score"]
    out["zone_axis"][run] = f["zone_axis"]
    out["in_plane_angle"][run] = f["in_plane_angle"]
    out["q_scale"][run] = f["q_scale"]
    out["orientation"] = np.full((n_pos, 3, 3), np.nan, np.float32)
    out["orientation"][run] = f["orientation"]
    out["network_ran"] = np.zeros(n_pos, bool)
    out["network_ran"][run] = need
    return out


def _empty_match_fields(n_pos: int) -> dict[str, Any]:
    return {"phase": np.full(n_pos, INVALID, np.int64), "phases": [], "match_score": np.full(n_pos, np.nan, np.float32),
            "zone_axis": np.zeros((n_pos, 3), np.int64), "in_plane_angle": np.full(n_pos, np.nan, np.float32),
            "q_scale": np.full(n_pos, np.nan, np.float32)}


def build_maps(scan: ScanSpots, labels: dict, valid: np.ndarray, median_filter: int | None, name: str, with_match: bool):
    """Stages 6-7, filters and maps: the RealSlice (see :data:`SLICE_LABELS`, :data:`MATCH_SLICE_LABELS`)."""
    from py4DSTEM import RealSlice

    shape = scan.shape
    phase_cs = (np.array([p["crystal_system"] for p in labels["phases"]], np.int64) if with_match else None)
    filtered = filter_maps(labels["cs"].reshape(shape), labels["sg"].reshape(shape), valid.reshape(shape), median_filter,
                           labels["phase"].reshape(shape) if with_match else None, phase_cs)
    slices = SLICE_LABELS + (MATCH_SLICE_LABELS if with_match else ())
    data = np.empty((len(slices),) + shape, np.float32)
    at = {label: i for i, label in enumerate(slices)}
    data[at["crystal_system"]] = filtered[0]
    data[at["space_group"]] = filtered[1]
    data[at["confidence"]] = labels["confidence"].reshape(shape)
    data[at["n_spots"]] = scan.n_spots.reshape(shape)
    data[at["valid"]] = valid.reshape(shape)
    data[at["crystal_system_raw"]] = np.where(valid, labels["cs"], INVALID).reshape(shape)
    data[at["space_group_raw"]] = np.where(valid, labels["sg"], INVALID).reshape(shape)
    data[at["intensity"]] = scan.intensity.reshape(shape)
    p0 = at[f"p_{CRYSTAL_SYSTEMS[0]}"]
    data[p0: p0 + N_CRYSTAL_SYSTEMS] = np.moveaxis(labels["probs"].reshape(shape + (N_CRYSTAL_SYSTEMS,)), -1, 0)
    data[at["cs_set"]] = labels["cs_set"].reshape(shape)
    data[at["cs_set_size"]] = mask_size(labels["cs_set"]).reshape(shape)
    data[at["sg_set_size"]] = labels["sg_set_size"].reshape(shape)
    if with_match:
        data[at["phase"]] = filtered[2]
        data[at["match_score"]] = labels["match_score"].reshape(shape)
        for j, c in enumerate("uvw"):
            data[at[f"zone_axis_{c}"]] = labels["zone_axis"][:, j].reshape(shape)
        data[at["in_plane_angle"]] = labels["in_plane_angle"].reshape(shape)
        data[at["q_scale"]] = labels["q_scale"].reshape(shape)
    return RealSlice(data=data, name=name, slicelabels=list(slices))


def check_q_scale(q_scale: np.ndarray | None, valid: np.ndarray, min_positions: int = 20) -> float | None:
    """The calibration check the match gives for free: the factor the measured ``|q|`` needs.

    Parameters
    ----------
    q_scale : numpy.ndarray or None
        (n,) fitted scale of each position's identified phase, measured / template (NaN where none).
    valid : numpy.ndarray
        (n,) bool: positions that keep their labels (the confident ones).
    min_positions : int
        Fewer matched valid positions than this: no estimate.

    Returns
    -------
    float or None
        ``1 / median(q_scale)`` over valid matched positions: multiply the Q pixel size by it (the
        warning is :func:`py4dstem_gnn.diagnostics.warn_scan_outcome`'s); ``None`` without enough matches.
    """
    if q_scale is None:
        return None
    ok = np.asarray(valid, bool) & np.isfinite(q_scale)
    if ok.sum() < min_positions:
        return None
    return float(1.0 / np.median(q_scale[ok]))


