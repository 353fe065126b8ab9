"""One decision per pattern: the match against known structures where it is strong, the network elsewhere.

The match stage (:mod:`py4dstem_gnn.matching`) gives, per pattern, the best score any phase of each
crystal system and each space group reached (``cs_score``, ``sg_score``); the network gives
probabilities. :func:`decide` combines them softly,

``log p(c) = log p_network(c) + beta * max(cs_score_c, floor)`` (normalised),

and the same for space groups, so that a strong match decides, a weak or absent one (a phase no bank
holds, a grain far from any zone axis) leaves the network in charge, and a middling one shifts the
network's odds. Where the network was not run (the match alone was decisive) its probabilities are
taken as uniform. The best phase is named (``phase``) when its score reaches ``phase_min_score`` and
its crystal system is the decided one. The confidence is the decided crystal system's probability
mapped through an isotonic calibration fitted on held-out validation patterns (known materials,
materials left out of the bank, and cells perturbed like DFT-relaxed ones), stored with the shipped
bank (:class:`DecisionParams`); the default confidence threshold is fitted alongside.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .labels import N_CRYSTAL_SYSTEMS, N_SPACE_GROUPS, SG_TO_CS

__all__ = ["DecisionParams", "Decision", "decide", "load_decision_params", "DECISION_PATH"]

logger = logging.getLogger(__name__)

#: Where the fitted decision parameters of the shipped bank + network live.
DECISION_PATH: Path = Path(__file__).resolve().parents[1] / "weights" / "decision.json"

_TINY = 1e-30


@dataclass
class DecisionParams:
    """Parameters of the match/network combination (fitted on validation data).

    Attributes
    ----------
    beta_cs, beta_sg : float
        Weight of the match scores against the network's log-probabilities.
    floor_cs, floor_sg : float
        Score assumed for a class no candidate of the match reached.
    phase_min_score : float
        Best-match score from which the phase is named.
    skip_network_score : float
        Best-match score from which the network is not run (the match decides alone).
    calibration_x, calibration_y : list of float
        Isotonic map from the decided crystal system's probability to the probability it is right.
    threshold : float or None
        Default confidence threshold (the lowest meeting ``goal`` on validation data).
    goal : float
        Accuracy goal behind ``threshold``.
    provenance : dict
        What they were fitted on (command, data, network, bank).
    """

    beta_cs: float = 10.0
    floor_cs: float = 0.5
    beta_sg: float = 10.0
    floor_sg: float = 0.5
    phase_min_score: float = 0.9
    skip_network_score: float = 0.97
    calibration_x: list = field(default_factory=list)
    calibration_y: list = field(default_factory=list)
    threshold: float | None = None
    goal: float = 0.9
    provenance: dict = field(default_factory=dict)

    def calibrate(self, p: np.ndarray) -> np.ndarray:
        """Calibrated confidence from the decided class's probability (identity without a fit)."""
        p = np.asarray(p, dtype=np.float64)
        if not self.calibration_x:
            return p.astype(np.float32)
        return np.interp(p, self.calibration_x, self.calibration_y).astype(np.float32)

    def save(self, path: str | Path = DECISION_PATH) -> Path:
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path


def load_decision_params(path: str | Path | None = None) -> DecisionParams:
    """The fitted parameters shipped beside the bank, or the defaults (with a logged warning)."""
    candidates = [Path(path)] if path else [DECISION_PATH, Path(__file__).resolve().parent / "_weights" / "decision.json"]
    for p in candidates:
        if p.is_file():
            d = json.loads(p.read_text())
            return DecisionParams(**{k: v for k, v in d.items() if k in DecisionParams.__dataclass_fields__})
    logger.warning("no fitted decision parameters found (%s): using uncalibrated defaults", candidates[0])
    return DecisionParams()


@dataclass
class Decision:
    """Decided labels of ``n`` patterns.

    Attributes
    ----------
    crystal_system, space_group : numpy.ndarray
        (n,) int64 decided labels (-1 where there is neither a match nor a network output).
    confidence : numpy.ndarray
        (n,) float32 calibrated probability that ``crystal_system`` is right.
    crystal_system_probs, space_group_probs : numpy.ndarray
        (n, 7), (n, 230) float32 combined probabilities.
    phase : numpy.ndarray
        (n,) int64 bank phase named (-1: none).
    phase_rank : numpy.ndarray
        (n,) int64 rank of that phase among the match's candidates (-1: none).
    by_match : numpy.ndarray
        (n,) bool: the network was not run (the match decided alone).
    """

    crystal_system: np.ndarray
    space_group: np.ndarray
    confidence: np.ndarray
    crystal_system_probs: np.ndarray
    space_group_probs: np.ndarray
    phase: np.ndarray
    phase_rank: np.ndarray
    by_match: np.ndarray


def _softmax_log(logp: np.ndarray) -> np.ndarray:
    logp = logp - logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def network_needed(match: Any, params: DecisionParams) -> np.ndarray:
    """(n,) bool: patterns whose best match is not decisive on its own."""
    return ~(np.asarray(match.score[:, 0]) >= params.skip_network_score)


def decide(match: Any | None, cs_probs: np.ndarray | None, sg_probs: np.ndarray | None, params: DecisionParams,
           crystal_system_of_phase: np.ndarray | None = None, network_ran: np.ndarray | None = None,
           space_group_of_phase: np.ndarray | None = None) -> Decision:
    """Combine match scores and network probabilities into one decision per pattern.

    Parameters
    ----------
    match : MatchResult or None
        From :func:`py4dstem_gnn.matching.match_patterns`; ``None``: the network alone.
    cs_probs, sg_probs : numpy.ndarray or None
        (n, 7) and (n, 230) network probabilities (rows where the network did not run are ignored).
    params : DecisionParams
    crystal_system_of_phase : numpy.ndarray, optional
        (P,) crystal system of each bank phase (needed with a match).
    network_ran : numpy.ndarray, optional
        (n,) bool: rows where ``cs_probs`` / ``sg_probs`` hold network outputs (default all).
    space_group_of_phase : numpy.ndarray, optional
        (P,) space group of each bank phase: where a phase is named, its space group is the decided one.

    Returns
    -------
    Decision
    """
    if match is None and cs_probs is None:
        raise ValueError("decide needs a match, network probabilities, or both")
    n = len(match) if match is not None else len(cs_probs)
    ran = np.ones(n, bool) if network_ran is None else np.asarray(network_ran, bool)
    log_cs = np.full((n, N_CRYSTAL_SYSTEMS), -np.log(N_CRYSTAL_SYSTEMS))
    log_sg = np.full((n, N_SPACE_GROUPS), -np.log(N_SPACE_GROUPS))
    if cs_probs is not None:
        log_cs[ran] = np.log(np.maximum(np.asarray(cs_probs, np.float64)[ran], _TINY))
        log_sg[ran] = np.log(np.maximum(np.asarray(sg_probs, np.float64)[ran], _TINY))
    phase = np.full(n, -1, np.int64)
    rank = np.full(n, -1, np.int64)
    if match is not None:
        cs_s = np.maximum(np.nan_to_num(match.cs_score.astype(np.float64), neginf=-1.0), params.floor_cs)
        sg_s = np.maximum(np.nan_to_num(match.sg_score.astype(np.float64), neginf=-1.0), params.floor_sg)
        log_cs = log_cs + params.beta_cs * cs_s
        log_sg = log_sg + params.beta_sg * sg_s
    cs_p = _softmax_log(log_cs)
    sg_p = _softmax_log(log_sg)
    cs = cs_p.argmax(axis=1).astype(np.int64)
    # space group: the most probable one of the decided crystal system
    masked = np.where(SG_TO_CS[None, :] == cs[:, None], sg_p, -1.0)
    sg = masked.argmax(axis=1).astype(np.int64) + 1
    if match is not None:
        cand_cs = np.where(match.phase >= 0, np.asarray(crystal_system_of_phase)[np.maximum(match.phase, 0)], -2)
        ok = (cand_cs == cs[:, None]) & (match.score >= params.phase_min_score)
        has = ok.any(axis=1)
        first = ok.argmax(axis=1)
        rank[has] = first[has]
        phase[has] = match.phase[has, first[has]]
        if space_group_of_phase is not None:  # a named phase fixes the space group
            sg[has] = np.asarray(space_group_of_phase)[phase[has]]
    conf = params.calibrate(cs_p[np.arange(n), cs])
    by_match = ~ran if match is not None else np.zeros(n, bool)
    return Decision(cs, sg, conf, cs_p, sg_p, phase, rank, by_match)
