"""Fitting the decision between match and network (:mod:`py4dstem_gnn.decide`) on validation patterns.

The combination weights, the score from which a phase is named, the score from which the network is
skipped, the confidence calibration and the default threshold are fitted on held-out validation
patterns under three conditions, with equal weight, so that the parameters hold for what users meet:

* ``known``: the patterns' materials are in the bank (a user measuring a known compound);
* ``unseen``: every phase of the patterns' material groups (same prototype or formula + space group)
  is removed from the bank (a phase no bank holds: the match must step aside);
* ``perturbed``: known materials, but each pattern is scaled by ``1 ± U(1, 3) %`` and strained by
  ``± 1 %`` along a random in-plane direction (DFT-relaxed cells against experimental ones, the
  user's calibration, ellipticity).

Nothing here touches test sets.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from ..decide import DecisionParams, decide

__all__ = ["perturb_patterns", "fit_decision"]

logger = logging.getLogger(__name__)


def perturb_patterns(pointlists: Sequence[np.ndarray], seed: int = 0, iso: tuple[float, float] = (0.01, 0.03),
                     strain: float = 0.01) -> list[np.ndarray]:
    """Scaled and strained copies of spot patterns (a stand-in for cells unlike the bank's)."""
    rng = np.random.default_rng(seed)
    out = []
    for pl in pointlists:
        pl = np.array(pl, dtype=np.float32, copy=True)
        s = 1 + rng.choice([-1, 1]) * rng.uniform(*iso)
        t = rng.uniform(0, np.pi)
        e = rng.uniform(-strain, strain)
        d = np.array([np.cos(t), np.sin(t)])
        M = s * (np.eye(2) + e * np.outer(d, d))
        pl[:, :2] = pl[:, :2] @ M.T
        out.append(pl)
    return out


def _nll(logp: np.ndarray, y: np.ndarray) -> float:
    logp = logp - logp.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logp).sum(axis=1))
    return float(np.mean(lse - logp[np.arange(len(y)), y]))


def fit_decision(conditions: dict[str, dict[str, Any]], goal: float = 0.9,
                 betas: Sequence[float] = (2, 4, 6, 8, 10, 12, 15, 20, 30, 40),
                 floors: Sequence[float] = (0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9)) -> DecisionParams:
    """Fit :class:`~py4dstem_gnn.decide.DecisionParams` on validation conditions.

    Parameters
    ----------
    conditions : dict
        name -> ``{"match": MatchResult, "cs_probs": (n, 7), "sg_probs": (n, 230), "cs": (n,), "sg": (n,),
        "phase_cs": (P,), "phase_sg": (P,), "phase_ok": callable(phase index array, rows) -> bool array}``.
    goal : float
        Accuracy goal of the default confidence threshold.

    Returns
    -------
    DecisionParams
    """
    t0 = time.perf_counter()
    params = DecisionParams()
    # 1. combination weights by negative log-likelihood, each condition weighted equally
    def total(beta, floor, key):
        out = 0.0
        for c in conditions.values():
            m = c["match"]
            score = (m.cs_score if key == "cs" else m.sg_score).astype(np.float64)
            s = np.maximum(np.nan_to_num(score, neginf=-1.0), floor)
            net = np.log(np.maximum(c["cs_probs" if key == "cs" else "sg_probs"].astype(np.float64), 1e-30))
            y = c["cs"] if key == "cs" else c["sg"] - 1
            out += _nll(net + beta * s, y)
        return out / len(conditions)

    best = {}
    for key in ("cs", "sg"):
        grid = [(total(b, f, key), b, f) for b in betas for f in floors]
        best[key] = min(grid)
        logger.info("%s: NLL %.4f at beta %s, floor %s (network alone: %.4f)", key, best[key][0], best[key][1],
                    best[key][2], total(0.0, 0.0, key))
    params = replace(params, beta_cs=float(best["cs"][1]), floor_cs=float(best["cs"][2]),
                     beta_sg=float(best["sg"][1]), floor_sg=float(best["sg"][2]))
    # 2. skip the network from the score where the match alone is right >= 99 % (pooled)
    sc, ok = [], []
    for c in conditions.values():
        m = c["match"]
        dec = decide(m, c["cs_probs"], c["sg_probs"], params, c["phase_cs"],
                     network_ran=np.zeros(len(c["cs"]), bool), space_group_of_phase=c["phase_sg"])
        sc.append(np.nan_to_num(m.score[:, 0].astype(np.float64), neginf=-1.0))
        ok.append(dec.crystal_system == c["cs"])
    sc, ok = np.concatenate(sc), np.concatenate(ok)
    params.skip_network_score = _lowest_threshold(sc, ok, 0.99, min_count=100, default=1.01)
    # 3. name a phase from the score where the named phase's crystal system is right >= 95 %
    sc, ok = [], []
    for c in conditions.values():
        m = c["match"]
        top = m.phase[:, 0]
        has = top >= 0
        sc.append(np.where(has, np.nan_to_num(m.score[:, 0].astype(np.float64), neginf=-1.0), -1.0))
        ok.append(has & (np.asarray(c["phase_cs"])[np.maximum(top, 0)] == c["cs"]))
    sc, ok = np.concatenate(sc), np.concatenate(ok)
    params.phase_min_score = _lowest_threshold(sc, ok, 0.95, min_count=100, default=0.95)
    # 4. confidence calibration (isotonic) and the default threshold, on the decisions as the pipeline makes them
    raw, right = [], []
    for c in conditions.values():
        m = c["match"]
        need = ~(np.nan_to_num(m.score[:, 0], neginf=-1.0) >= params.skip_network_score)
        dec = decide(m, c["cs_probs"], c["sg_probs"], params, c["phase_cs"], need, c["phase_sg"])
        raw.append(dec.crystal_system_probs[np.arange(len(c["cs"])), dec.crystal_system])
        right.append(dec.crystal_system == c["cs"])
    raw, right = np.concatenate(raw).astype(np.float64), np.concatenate(right)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, right.astype(float))
    xs = np.unique(np.quantile(raw, np.linspace(0, 1, 101)))
    params.calibration_x = [float(x) for x in xs]
    params.calibration_y = [float(y) for y in iso.predict(xs)]
    conf = params.calibrate(raw)
    params.threshold = _lowest_threshold(conf, right, goal, min_count=50, default=None)
    params.goal = float(goal)
    logger.info("decision fitted in %.1f s: %s", time.perf_counter() - t0, {k: v for k, v in params.__dict__.items()
                                                                            if not k.startswith("calibration")})
    return params


def _lowest_threshold(score: np.ndarray, ok: np.ndarray, goal: float, min_count: int, default):
    """Lowest ``t`` such that the patterns with ``score >= t`` are right at least ``goal`` of the time."""
    order = np.argsort(-score, kind="stable")
    s, o = score[order], ok[order].astype(np.float64)
    acc = np.cumsum(o) / np.arange(1, len(o) + 1)
    good = np.flatnonzero((acc >= goal) & (np.arange(1, len(o) + 1) >= min_count))
    if len(good) == 0:
        return default
    return float(s[good[-1]])
