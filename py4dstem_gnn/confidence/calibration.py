"""Calibrated confidence: the estimated probability that the crystal-system label is right.

The model's crystal-system probabilities rank patterns, but their values are not the chance of
being right (the network is over- or under-confident, and it was trained on a class-balanced
draw). This module turns a *raw score* of the probabilities into a calibrated probability with a
monotone map fitted on validation data, and derives the default abstention threshold from a
stated accuracy goal. Both travel in the weights' JSON card, so
:func:`py4dstem_gnn.predict_pointlists` and :func:`py4dstem_gnn.classify_braggvectors` return
calibrated confidences without any run-time fitting.

Raw scores (:func:`raw_score`, all "higher = more certain", computed from the crystal-system
probabilities ``p`` of one pattern):

``margin``     ``p(1st) - p(2nd)`` (the paper's score; the package's confidence before calibration)
``max_prob``   ``p(1st)``
``entropy``    ``1 - H(p) / log(7)``, one minus the normalised Shannon entropy

Calibration map (:func:`fit_isotonic`): isotonic regression of "label right" (0/1) on the raw
score by pool-adjacent-violators, with tied scores pooled first and adjacent blocks then merged
until every block holds at least ``min_block`` patterns (merging neighbours of a monotone
sequence keeps it monotone, and it bounds the noise of each block's accuracy). The map is the
piecewise-linear interpolation between the blocks' (mean score, accuracy) points, constant beyond
the first and last block, hence monotone non-decreasing and within ``[0, 1]``. It is stored as
the two lists ``x`` (block mean scores) and ``y`` (block accuracies); no scikit-learn is needed.

Threshold rule (:func:`threshold_for_goal`): the smallest threshold ``t`` on the calibrated
confidence such that the patterns with ``confidence >= t`` reach the accuracy goal (default 0.9)
on the calibration data, with at least ``min_labelled`` patterns labelled. Because selective
accuracy need not be monotone in ``t``, the smallest qualifying ``t`` is the one that labels the
most patterns. The goal, the achieved coverage and accuracy are recorded with it.

Aggregated views (:func:`py4dstem_gnn.aggregate_views`) have their own maps, one per number of
views ``k`` (``by_views``), fitted on aggregates of ``k`` validation patterns of one material;
a ``k`` with no map uses the largest calibrated ``k`` below it (a logged warning).

Fitting on a stored pattern set and writing the card:
:func:`py4dstem_gnn.confidence.fit.calibrate_weights`, also run as
``python -m py4dstem_gnn.confidence.fit --weights default --val data/bloch_val.h5``. The
safetensors file and its SHA-256 never change; the calibration records the SHA-256 of the weights
it was fitted for and is ignored (raw score, logged warning) if the weights differ.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..labels import N_CRYSTAL_SYSTEMS

__all__ = [
    "RAW_SCORES",
    "LEGACY_MARGIN_THRESHOLD",
    "raw_score",
    "fit_isotonic",
    "ConfidenceCalibration",
    "threshold_for_goal",
    "model_calibrations",
    "apply_model_calibration",
    "warn_uncalibrated",
]

logger = logging.getLogger(__name__)

#: Names of the raw scores that :func:`raw_score` computes from crystal-system probabilities.
RAW_SCORES: tuple[str, ...] = ("margin", "max_prob", "entropy")
#: Threshold on the raw margin used when a model's card holds no calibration (the paper's value).
LEGACY_MARGIN_THRESHOLD: float = 0.005


def raw_score(crystal_system_probs: np.ndarray, name: str = "margin") -> np.ndarray:
    """A raw certainty score of every pattern (higher = more certain).

    Parameters
    ----------
    crystal_system_probs : numpy.ndarray, shape (n, 7)
        Crystal-system probabilities.
    name : {"margin", "max_prob", "entropy"}
        See the module docstring.

    Returns
    -------
    numpy.ndarray of float64, shape (n,)
    """
    p = np.asarray(crystal_system_probs, dtype=np.float64).reshape(-1, N_CRYSTAL_SYSTEMS)
    if p.shape[0] == 0:
        return np.zeros(0)
    if name == "margin":
        top2 = np.partition(p, N_CRYSTAL_SYSTEMS - 2, axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]
    if name == "max_prob":
        return p.max(axis=1)
    if name == "entropy":
        q = np.clip(p, 1e-12, 1.0)
        h = -(q * np.log(q)).sum(axis=1)
        return np.clip(1.0 - h / math.log(N_CRYSTAL_SYSTEMS), 0.0, 1.0)
    raise ValueError(f"unknown raw score {name!r}; choose one of {RAW_SCORES}")


def fit_isotonic(
    score: np.ndarray, correct: np.ndarray, min_block: int = 40
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Monotone map from a score to the probability of being right (see the module docstring).

    Parameters
    ----------
    score : numpy.ndarray, shape (n,)
        Raw scores (finite).
    correct : numpy.ndarray of bool, shape (n,)
        Whether each pattern's label is right.
    min_block : int
        Fewest patterns per block after merging (all patterns in one block if ``n < min_block``).

    Returns
    -------
    x : numpy.ndarray, shape (m,)
        Mean score of each block, strictly increasing.
    y : numpy.ndarray, shape (m,)
        Accuracy of each block, non-decreasing, in ``[0, 1]``.
    count : numpy.ndarray of int64, shape (m,)
        Patterns per block.
    """
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    c = np.asarray(correct, dtype=np.float64).reshape(-1)
    if s.shape != c.shape:
        raise ValueError(f"score and correct differ in length: {s.shape} vs {c.shape}")
    if s.size == 0:
        raise ValueError("no patterns to fit a calibration on")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    uniq, inv = np.unique(s, return_inverse=True)  # tied scores pooled first
    w = np.bincount(inv).astype(np.float64)
    hits = np.bincount(inv, weights=c)
    ssum = np.bincount(inv, weights=s)
    # pool adjacent violators on the tie blocks (ascending score)
    blocks: list[list[float]] = []  # [weight, hits, score sum]
    for wi, hi, si in zip(w, hits, ssum):
        blocks.append([wi, hi, si])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][0] > blocks[-1][1] / blocks[-1][0]:
            b = blocks.pop()
            blocks[-1] = [blocks[-1][0] + b[0], blocks[-1][1] + b[1], blocks[-1][2] + b[2]]
    # merge blocks smaller than min_block with their closer neighbour (keeps monotonicity)
    while len(blocks) > 1:
        sizes = [b[0] for b in blocks]
        i = int(np.argmin(sizes))
        if sizes[i] >= min_block:
            break
        if i == 0:
            j = 1
        elif i == len(blocks) - 1:
            j = i - 1
        else:
            v = blocks[i][1] / blocks[i][0]
            left, right = blocks[i - 1][1] / blocks[i - 1][0], blocks[i + 1][1] / blocks[i + 1][0]
            j = i - 1 if (v - left) <= (right - v) else i + 1
        a, b = min(i, j), max(i, j)
        blocks[a] = [blocks[a][0] + blocks[b][0], blocks[a][1] + blocks[b][1], blocks[a][2] + blocks[b][2]]
        del blocks[b]
    arr = np.asarray(blocks, dtype=np.float64)
    return arr[:, 2] / arr[:, 0], arr[:, 1] / arr[:, 0], arr[:, 0].astype(np.int64)


def _interp(raw: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw, dtype=np.float64)
    if x.size == 1:
        return np.full(raw.shape, float(y[0]))
    return np.interp(raw, x, y)


@dataclass
class ConfidenceCalibration:
    """A fitted confidence calibration (see the module docstring).

    Attributes
    ----------
    score : str
        Raw score the map applies to (one of :data:`RAW_SCORES`).
    x, y : numpy.ndarray
        Map points (mean raw score, accuracy) for single patterns.
    n : int
        Patterns it was fitted on.
    by_views : dict
        ``k -> (x, y, n)`` for aggregates of ``k >= 2`` views.
    threshold : float or None
        Default threshold on the calibrated confidence (:func:`threshold_for_goal`).
    info : dict
        Everything else recorded in the card (goal, coverage, data, date...).
    """

    score: str
    x: np.ndarray
    y: np.ndarray
    n: int
    by_views: dict[int, tuple[np.ndarray, np.ndarray, int]] = field(default_factory=dict)
    threshold: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def _points(self, n_views: int) -> tuple[np.ndarray, np.ndarray]:
        if n_views <= 1:
            return self.x, self.y
        if n_views in self.by_views:
            return self.by_views[n_views][:2]
        lower = [k for k in self.by_views if k < n_views]
        if not lower:
            logger.warning("no confidence calibration for %d views; using the single-pattern map", n_views)
            return self.x, self.y
        k = max(lower)
        logger.warning("no confidence calibration for %d views; using the map for %d views", n_views, k)
        return self.by_views[k][:2]

    def __call__(self, crystal_system_probs: np.ndarray, n_views: np.ndarray | int | None = None) -> np.ndarray:
        """Calibrated confidence (float32, ``(n,)``) of crystal-system probabilities.

        Parameters
        ----------
        crystal_system_probs : numpy.ndarray, shape (n, 7)
        n_views : int or numpy.ndarray of int, optional
            Number of views combined into each row (aggregated predictions); 1 by default.
        """
        raw = raw_score(crystal_system_probs, self.score)
        if n_views is None:
            return _interp(raw, self.x, self.y).astype(np.float32)
        views = np.broadcast_to(np.asarray(n_views, dtype=np.int64), raw.shape)
        out = np.empty(raw.shape, np.float64)
        for k in np.unique(views):
            sel = views == k
            x, y = self._points(int(k))
            out[sel] = _interp(raw[sel], x, y)
        return out.astype(np.float32)

    def to_card(self) -> dict[str, Any]:
        """Plain-JSON form (the card's ``"confidence_calibration"``)."""
        out: dict[str, Any] = {
            "score": self.score,
            "x": [float(v) for v in self.x],
            "y": [float(v) for v in self.y],
            "n": int(self.n),
        }
        if self.by_views:
            out["by_views"] = {
                str(k): {"x": [float(v) for v in x], "y": [float(v) for v in y], "n": int(n)}
                for k, (x, y, n) in sorted(self.by_views.items())
            }
        out.update(self.info)
        return out

    @classmethod
    def from_card(cls, entry: dict[str, Any], threshold: float | None = None) -> "ConfidenceCalibration":
        """Read the card's ``"confidence_calibration"`` entry (and the card's threshold).

        Raises
        ------
        ValueError
            If the entry is malformed (unknown score, unequal or non-monotone lists).
        """
        def points(d: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, int]:
            x = np.asarray(d["x"], dtype=np.float64)
            y = np.asarray(d["y"], dtype=np.float64)
            if x.ndim != 1 or x.shape != y.shape or x.size == 0:
                raise ValueError("calibration lists x and y must be non-empty and of equal length")
            if np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0) or y.min() < 0 or y.max() > 1:
                raise ValueError("calibration map must have increasing x and non-decreasing y in [0, 1]")
            return x, y, int(d.get("n", 0))

        try:
            score = str(entry["score"])
            if score not in RAW_SCORES:
                raise ValueError(f"unknown raw score {score!r}")
            x, y, n = points(entry)
            by_views = {int(k): points(v) for k, v in dict(entry.get("by_views", {})).items()}
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed confidence calibration: {err}") from err
        info = {k: v for k, v in entry.items() if k not in ("score", "x", "y", "n", "by_views")}
        return cls(score, x, y, n, by_views, None if threshold is None else float(threshold), info)


def threshold_for_goal(
    confidence: np.ndarray, correct: np.ndarray, goal: float = 0.9, min_labelled: int = 30
) -> dict[str, Any]:
    """Smallest confidence threshold whose labelled patterns reach an accuracy goal.

    Parameters
    ----------
    confidence : numpy.ndarray, shape (n,)
        Calibrated confidences of the calibration patterns.
    correct : numpy.ndarray of bool, shape (n,)
    goal : float
        Accuracy the labelled patterns must reach.
    min_labelled : int
        Fewest patterns a threshold must label to count (guards against a lucky handful).

    Returns
    -------
    dict
        ``threshold`` (one of the given confidences, exactly: the float32 confidences of
        :class:`ConfidenceCalibration` compare the same way at run time), ``accuracy_goal``,
        ``coverage`` and ``accuracy`` of ``confidence >= threshold`` on these patterns (None
        when nothing is labelled), ``n_labelled``, ``n``, ``min_labelled`` and
        ``goal_reached``. If no threshold qualifies, ``threshold`` is 1.0 and ``goal_reached``
        False.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    corr = np.asarray(correct, dtype=bool).reshape(-1)
    if conf.shape != corr.shape:
        raise ValueError("confidence and correct differ in length")
    if not 0.0 < goal <= 1.0:
        raise ValueError(f"goal must be in (0, 1]; got {goal}")
    n = conf.size
    threshold, reached = 1.0, False
    if n:
        order = np.argsort(-conf, kind="stable")
        cs = conf[order]
        hits = np.cumsum(corr[order])
        last = np.r_[np.flatnonzero(np.diff(cs) != 0), n - 1]  # end of each tie block
        m = last + 1
        acc = hits[last] / m
        ok = (acc >= goal - 1e-12) & (m >= min_labelled)
        if ok.any():
            threshold = float(cs[last[np.flatnonzero(ok).max()]])  # most labelled = smallest t
            reached = True
    lab = conf >= threshold
    n_lab = int(lab.sum())
    return {
        "threshold": threshold,
        "accuracy_goal": float(goal),
        "coverage": n_lab / n if n else None,
        "accuracy": float(corr[lab].mean()) if n_lab else None,
        "n_labelled": n_lab,
        "n": int(n),
        "min_labelled": int(min_labelled),
        "goal_reached": bool(reached and n_lab and corr[lab].mean() >= goal - 1e-12),
    }


# --------------------------------------------------------------------------------------
# reading calibrations from a loaded model
# --------------------------------------------------------------------------------------


def model_calibrations(net: Any) -> tuple[ConfidenceCalibration | None, Any]:
    """The confidence calibration and conformal calibration recorded in a model's card.

    :func:`py4dstem_gnn.weights.load_model` attaches the card as ``net.card``; models built in
    code have none. A calibration fitted for other weights (its ``weights_sha256`` differs from
    the card's ``sha256``) is ignored with a logged warning.

    Returns
    -------
    confidence : ConfidenceCalibration or None
    conformal : py4dstem_gnn.confidence.conformal.ConformalCalibration or None
    """
    from .conformal import ConformalCalibration

    card = getattr(net, "card", None)
    if not isinstance(card, dict):
        return None, None
    sha = card.get("sha256")
    out: list[Any] = []
    for key, reader in (
        ("confidence_calibration", lambda e: ConfidenceCalibration.from_card(e, card.get("confidence_threshold"))),
        ("conformal", ConformalCalibration.from_card),
    ):
        entry = card.get(key)
        if not entry:
            out.append(None)
            continue
        fitted_for = entry.get("weights_sha256")
        if fitted_for and sha and fitted_for != sha:
            logger.warning("the card's %r was fitted for other weights (sha256 %s...); ignoring it", key, fitted_for[:12])
            out.append(None)
            continue
        out.append(reader(entry))
    return out[0], out[1]


def apply_model_calibration(pred: Any, net: Any) -> Any:
    """Set ``pred.confidence`` to the calibrated confidence of ``net``'s card (in place).

    Also records in ``pred.meta``: ``confidence_calibrated`` (bool), ``confidence_calibration``
    and ``conformal`` (the calibrations, when present). Without a calibration the raw margin
    stays, with one logged warning per model.

    Returns
    -------
    Prediction
        ``pred`` itself.
    """
    cal, conformal = model_calibrations(net)
    if cal is not None:
        pred.confidence = cal(pred.crystal_system_probs)
        pred.meta["confidence_calibration"] = cal
    else:
        warn_uncalibrated(net)
    if conformal is not None:
        pred.meta["conformal"] = conformal
    pred.meta["confidence_calibrated"] = cal is not None
    return pred


def warn_uncalibrated(net: Any) -> None:
    """One warning per model object: confidence is the raw margin."""
    if getattr(net, "_uncalibrated_warned", False):
        return
    logger.warning(
        "the model has no confidence calibration in its card: confidence is the raw margin "
        "p(1st) - p(2nd), not a probability of being right (fit one with py4dstem_gnn.confidence.fit)"
    )
    try:
        net._uncalibrated_warned = True
    except AttributeError:  # pragma: no cover - objects that refuse attributes
        pass
