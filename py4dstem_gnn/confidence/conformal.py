"""Split-conformal prediction sets: which crystal systems (and how many space groups) a pattern allows.

A single zone-axis pattern can be ambiguous by physics (a square net from cubic <100> or
tetragonal [001]; a hexagonal net from hexagonal, trigonal or cubic <111>). Instead of one label,
a prediction set lists every class the model cannot rule out at a chosen coverage level: on data
exchangeable with the calibration data, the true class lies in the set with probability at least
the coverage (split conformal prediction, Vovk et al. 2005; Angelopoulos & Bates 2021).

Score. The nonconformity score is ``1 - p(true class)`` (the "LAC" or "THR" score, Sadinle et al.
2019). Its set at level ``1 - alpha`` is ``{c : p(c) >= 1 - q}`` with ``q`` the conformal
quantile of the calibration scores: the top classes down to a probability cut, which is the
smallest mean set size achievable at that marginal coverage. The adaptive APS score (Romano et al.
2020) spreads coverage more evenly over easy and hard patterns but gives larger sets on average
and needs randomisation to be exact; with seven classes and a model whose probabilities are
often flat, LAC's small sets are the readable choice, and coverage per protocol and regime is
measured rather than assumed (:func:`py4dstem_gnn.evaluation.selective.coverage_by_condition`).
The most probable class always joins the set, so sets are never empty (this only adds coverage).

Calibration. ``q`` is the ``ceil((n + 1) * level)``-th smallest of the ``n`` calibration scores
(1.0, i.e. the full set, when that rank exceeds ``n``). It is stored for a grid of levels
(:data:`DEFAULT_LEVELS`, 0.50 to 0.99 by 0.01 and 0.995); a requested coverage between grid points
uses the next level up (conservative). Aggregated views (:func:`py4dstem_gnn.aggregate_views`)
are calibrated separately for each number of views ``k``, on aggregates of ``k`` validation
patterns of one material (intersecting per-view sets would lose coverage). The same holds for the
space-group head; 230 bits do not fit a map, so the space-group set is reported as its size (it
is the top-``size`` space groups by probability, see :func:`space_group_sets`).

Masks. A crystal-system set is a 7-bit integer: bit ``c`` (value ``1 << c``) is set when crystal
system code ``c`` (0 triclinic .. 6 cubic) is in the set; :func:`decode_mask` and
:func:`mask_label` (``"tetragonal | cubic"``) read it back.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..labels import CRYSTAL_SYSTEMS, N_CRYSTAL_SYSTEMS

__all__ = [
    "DEFAULT_LEVELS",
    "check_coverage",
    "conformal_quantile",
    "ConformalCalibration",
    "cs_set_mask",
    "mask_size",
    "decode_mask",
    "mask_label",
    "mask_contains",
    "sg_set_size",
    "space_group_sets",
    "PredictionSets",
    "prediction_sets",
]

logger = logging.getLogger(__name__)

#: Coverage levels whose quantiles are stored in a weights' card.
DEFAULT_LEVELS: tuple[float, ...] = tuple(round(0.50 + 0.01 * i, 2) for i in range(50)) + (0.995,)


def check_coverage(coverage: Any) -> float:
    """A coverage level as a float in (0, 1); raises TypeError / ValueError otherwise."""
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float, np.floating, np.integer)):
        raise TypeError(f"coverage must be a number in (0, 1), e.g. 0.9; got {coverage!r}")
    if not 0.0 < float(coverage) < 1.0:  # also refuses NaN
        raise ValueError(f"coverage must be in (0, 1), e.g. 0.9; got {coverage}")
    return float(coverage)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile of calibration scores at a coverage level.

    Parameters
    ----------
    scores : numpy.ndarray, shape (n,)
        Nonconformity scores ``1 - p(true class)`` of the calibration points.
    level : float
        Coverage level ``1 - alpha`` in (0, 1).

    Returns
    -------
    float
        The ``ceil((n + 1) * level)``-th smallest score, or 1.0 (every class) when that rank
        exceeds ``n``.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    rank = math.ceil((s.size + 1) * float(level) - 1e-9)
    if rank > s.size or s.size == 0:
        return 1.0
    return float(s[max(rank, 1) - 1])


def _topk_mask(probs: np.ndarray, q: np.ndarray | float) -> np.ndarray:
    """Boolean (n, C): classes with ``p >= 1 - q``, plus the most probable class."""
    p = np.asarray(probs, dtype=np.float64)
    cut = 1.0 - np.asarray(q, dtype=np.float64).reshape(-1, 1)
    inside = p >= cut - 1e-12
    inside[np.arange(p.shape[0]), p.argmax(axis=1)] = True
    return inside


def cs_set_mask(crystal_system_probs: np.ndarray, q: np.ndarray | float) -> np.ndarray:
    """7-bit crystal-system set of every pattern (bit ``c`` set when system ``c`` is in the set).

    Parameters
    ----------
    crystal_system_probs : numpy.ndarray, shape (n, 7)
    q : float or numpy.ndarray of shape (n,)
        Conformal quantile(s) of the crystal-system head.

    Returns
    -------
    numpy.ndarray of int64, shape (n,), values 1..127
    """
    p = np.asarray(crystal_system_probs).reshape(-1, N_CRYSTAL_SYSTEMS)
    if p.shape[0] == 0:
        return np.zeros(0, np.int64)
    inside = _topk_mask(p, q)
    return (inside.astype(np.int64) << np.arange(N_CRYSTAL_SYSTEMS)).sum(axis=1)


def mask_size(mask: np.ndarray) -> np.ndarray:
    """Number of crystal systems in each mask (``-1`` stays ``-1``)."""
    m = np.asarray(mask, dtype=np.int64)
    size = ((m[..., None] >> np.arange(N_CRYSTAL_SYSTEMS)) & 1).sum(axis=-1)
    return np.where(m < 0, -1, size)


def decode_mask(mask: int) -> tuple[int, ...]:
    """Crystal-system codes of one mask, ascending (empty for ``-1``)."""
    m = int(mask)
    if m < 0:
        return ()
    return tuple(c for c in range(N_CRYSTAL_SYSTEMS) if m >> c & 1)


def mask_label(mask: int, sep: str = " | ") -> str:
    """Readable set, e.g. ``"tetragonal | cubic"``; ``"invalid"`` for ``-1``."""
    codes = decode_mask(mask)
    return sep.join(CRYSTAL_SYSTEMS[c] for c in codes) if codes else "invalid"


def mask_contains(mask: np.ndarray, crystal_system: np.ndarray) -> np.ndarray:
    """Whether each set holds the given crystal-system code (False for ``-1`` masks or codes)."""
    m = np.asarray(mask, dtype=np.int64)
    c = np.asarray(crystal_system, dtype=np.int64)
    return (m >= 0) & (c >= 0) & (((m >> np.clip(c, 0, N_CRYSTAL_SYSTEMS - 1)) & 1) == 1)


def sg_set_size(space_group_probs: np.ndarray, q: np.ndarray | float) -> np.ndarray:
    """Size (>= 1) of the space-group set of every pattern, ``(n,)`` int64."""
    p = np.asarray(space_group_probs)
    if p.shape[0] == 0:
        return np.zeros(0, np.int64)
    return _topk_mask(p, q).sum(axis=1).astype(np.int64)


def space_group_sets(space_group_probs: np.ndarray, q: np.ndarray | float, max_k: int | None = None) -> list[np.ndarray]:
    """Space groups (1-based numbers, most probable first) in every pattern's set.

    The set is the top-``size`` space groups (:func:`sg_set_size`), cut at ``max_k`` if given.
    """
    p = np.asarray(space_group_probs)
    sizes = sg_set_size(p, q)
    order = np.argsort(-p, axis=1, kind="stable")
    return [order[i, : min(int(s), max_k or int(s))] + 1 for i, s in enumerate(sizes)]


@dataclass
class ConformalCalibration:
    """Conformal quantiles per coverage level and number of views (see the module docstring).

    Attributes
    ----------
    levels : numpy.ndarray
        Coverage levels, ascending.
    by_views : dict
        ``k -> (n, cs_q, sg_q)``: calibration points and the quantiles of the crystal-system and
        space-group heads at every level, for aggregates of ``k`` views (``k = 1``: single
        patterns).
    default_coverage : float
        Coverage used when none is requested.
    info : dict
        What else the card records (score, data, date...).
    """

    levels: np.ndarray
    by_views: dict[int, tuple[int, np.ndarray, np.ndarray]]
    default_coverage: float = 0.9
    info: dict[str, Any] = field(default_factory=dict)

    def level_index(self, coverage: float) -> int:
        """Index of the smallest stored level >= ``coverage``."""
        coverage = check_coverage(coverage)
        idx = int(np.searchsorted(self.levels, coverage - 1e-9))
        if idx >= self.levels.size:
            raise ValueError(f"coverage {coverage} is above the highest calibrated level {self.levels[-1]}")
        if abs(self.levels[idx] - coverage) > 1e-9:
            logger.info("coverage %.4f is not a calibrated level; using %.3f", coverage, self.levels[idx])
        return idx

    def views_key(self, n_views: int) -> int:
        """The calibrated number of views used for ``n_views`` (largest calibrated one <= it)."""
        n_views = max(int(n_views), 1)
        if n_views in self.by_views:
            return n_views
        lower = [k for k in self.by_views if k <= n_views]
        k = max(lower) if lower else min(self.by_views)
        logger.warning("no conformal calibration for %d views; using the one for %d views (coverage not guaranteed)", n_views, k)
        return k

    def quantiles(self, coverage: float | None = None, n_views: int = 1) -> tuple[float, float]:
        """``(q_crystal_system, q_space_group)`` at a coverage level for ``n_views`` views."""
        i = self.level_index(self.default_coverage if coverage is None else coverage)
        _n, cs_q, sg_q = self.by_views[self.views_key(n_views)]
        return float(cs_q[i]), float(sg_q[i])

    def to_card(self) -> dict[str, Any]:
        """Plain-JSON form (the card's ``"conformal"``)."""
        out: dict[str, Any] = {
            "levels": [float(v) for v in self.levels],
            "default_coverage": float(self.default_coverage),
            "by_views": {
                str(k): {"n": int(n), "cs": [float(v) for v in cs], "sg": [float(v) for v in sg]}
                for k, (n, cs, sg) in sorted(self.by_views.items())
            },
        }
        out.update(self.info)
        return out

    @classmethod
    def from_card(cls, entry: dict[str, Any]) -> "ConformalCalibration":
        """Read the card's ``"conformal"`` entry; ValueError if malformed."""
        try:
            levels = np.asarray(entry["levels"], dtype=np.float64)
            by_views = {}
            for k, v in dict(entry["by_views"]).items():
                cs = np.asarray(v["cs"], dtype=np.float64)
                sg = np.asarray(v["sg"], dtype=np.float64)
                if cs.shape != levels.shape or sg.shape != levels.shape:
                    raise ValueError(f"malformed conformal calibration: views {k} needs one quantile per level")
                by_views[int(k)] = (int(v.get("n", 0)), cs, sg)
            default = float(entry.get("default_coverage", 0.9))
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed conformal calibration: {err}") from err
        if levels.ndim != 1 or levels.size == 0 or np.any(np.diff(levels) <= 0) or not by_views:
            raise ValueError("malformed conformal calibration: levels must increase and views must be given")
        info = {k: v for k, v in entry.items() if k not in ("levels", "default_coverage", "by_views")}
        return cls(levels, by_views, default, info)


@dataclass
class PredictionSets:
    """Prediction sets of ``n`` patterns (or groups) at one coverage level.

    Attributes
    ----------
    cs_mask : numpy.ndarray of int64, (n,)
        7-bit crystal-system sets (:func:`decode_mask`).
    cs_size : numpy.ndarray of int64, (n,)
        Number of crystal systems in each set.
    sg_size : numpy.ndarray of int64, (n,)
        Number of space groups in each set.
    sg_sets : list of numpy.ndarray
        Space-group numbers of each set, most probable first.
    coverage : float
        The calibrated level used.
    """

    cs_mask: np.ndarray
    cs_size: np.ndarray
    sg_size: np.ndarray
    sg_sets: list[np.ndarray]
    coverage: float

    def labels(self) -> list[str]:
        """Readable crystal-system sets (``"tetragonal | cubic"``)."""
        return [mask_label(m) for m in self.cs_mask]


def prediction_sets(
    pred: Any, coverage: float | None = None, calibration: ConformalCalibration | None = None
) -> PredictionSets:
    """Conformal sets of a :class:`~py4dstem_gnn.predict.Prediction`.

    Parameters
    ----------
    pred : Prediction
        From :func:`~py4dstem_gnn.predict_pointlists` or :func:`~py4dstem_gnn.aggregate_views`
        (its ``meta["n_views"]`` selects the per-``k`` calibration).
    coverage : float, optional
        Coverage level; the calibration's default (recorded in the weights' card) if None.
    calibration : ConformalCalibration, optional
        Defaults to ``pred.meta["conformal"]``, set when the model's card holds one.

    Raises
    ------
    ValueError
        If no calibration is available (weights without one, or a model built in code).
    """
    cal = calibration if calibration is not None else pred.meta.get("conformal")
    if cal is None:
        raise ValueError("no conformal calibration: the model's card has none (see py4dstem_gnn.confidence)")
    level_i = cal.level_index(cal.default_coverage if coverage is None else coverage)
    n = len(pred)
    views = np.asarray(pred.meta.get("n_views", np.ones(n, np.int64)), dtype=np.int64).reshape(-1)
    views = np.broadcast_to(views, (n,))
    q_cs = np.empty(n)
    q_sg = np.empty(n)
    for k in np.unique(views):
        _n, cs_q, sg_q = cal.by_views[cal.views_key(int(k))]
        q_cs[views == k] = cs_q[level_i]
        q_sg[views == k] = sg_q[level_i]
    mask = cs_set_mask(pred.crystal_system_probs, q_cs)
    return PredictionSets(
        cs_mask=mask,
        cs_size=mask_size(mask),
        sg_size=sg_set_size(pred.space_group_probs, q_sg),
        sg_sets=space_group_sets(pred.space_group_probs, q_sg),
        coverage=float(cal.levels[level_i]),
    )
