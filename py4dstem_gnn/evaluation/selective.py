"""Selective prediction: how well a score separates right from wrong labels, and set coverage.

A map that abstains where it is unsure is judged by its **risk–coverage curve**: sweep a threshold
``t`` over a per-pattern certainty score; the *coverage* is the fraction of patterns with
``score >= t`` (labelled), the *selective accuracy* the accuracy of those labels, and the *risk*
one minus it (Geifman & El-Yaniv 2017).

Area under the curve. With the patterns sorted by decreasing score and ``acc(k)`` the accuracy of
the ``k`` most certain ones,

    MSA  = (1/n) * sum_{k=1..n} acc(k)        (mean selective accuracy)
    AURC = 1 - MSA = (1/n) * sum_k risk(k)     (area under the risk–coverage curve)

Lower AURC is better; it mixes the model's accuracy with the score's ranking, so scores of one
model are compared on the same patterns, and ``E-AURC = AURC - AURC(oracle)`` (the oracle ranks
every right label first) isolates the ranking. Tied scores are handled as a random order among
the tied patterns (the expected value). A pattern weight ``w_i`` (a bootstrap count) counts the
pattern ``w_i`` times, so a weighted AURC equals the AURC of the resampled set.

Intervals resample whole material groups (:mod:`py4dstem_gnn.evaluation.bootstrap`); every score
of one comparison uses the same resamples, so differences are paired.

Candidate scores (:func:`candidate_scores`): the raw scores of
:mod:`py4dstem_gnn.confidence.calibration` (``margin``, ``max_prob``, ``entropy``) and any extra per-pattern
array (e.g. the lattice-fit quality of :mod:`py4dstem_gnn.geometry`, a "readable" head, an
out-of-distribution score), higher = more certain; NaN counts as least certain.

Conformal sets (:mod:`py4dstem_gnn.confidence.conformal`) are judged by empirical coverage and mean set size
per protocol × regime (:func:`coverage_by_condition`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..confidence.calibration import RAW_SCORES, raw_score, threshold_for_goal
from .bootstrap import BootstrapInterval, group_resampling_weights, percentile_interval, ratio_replicates

__all__ = [
    "RiskCoverage",
    "risk_coverage_curve",
    "mean_selective_accuracy",
    "aurc",
    "oracle_aurc",
    "candidate_scores",
    "ScoreComparison",
    "compare_scores",
    "selective_by_condition",
    "coverage_by_condition",
    "risk_coverage_figure",
]


@dataclass
class RiskCoverage:
    """A risk–coverage curve, one point per distinct score (most certain first).

    Attributes
    ----------
    threshold : numpy.ndarray
        Score threshold ``t`` (patterns with ``score >= t`` are labelled), decreasing.
    coverage : numpy.ndarray
        Fraction labelled, increasing to 1.
    accuracy : numpy.ndarray
        Selective accuracy of the labelled patterns.
    n_labelled : numpy.ndarray
        Patterns labelled.
    """

    threshold: np.ndarray
    coverage: np.ndarray
    accuracy: np.ndarray
    n_labelled: np.ndarray

    @property
    def risk(self) -> np.ndarray:
        """``1 - accuracy``."""
        return 1.0 - self.accuracy

    def accuracy_at(self, coverage: float) -> float:
        """Selective accuracy at the smallest curve point covering at least ``coverage``."""
        i = int(np.searchsorted(self.coverage, coverage - 1e-12))
        return float(self.accuracy[min(i, self.accuracy.size - 1)]) if self.accuracy.size else float("nan")


def _clean(score: np.ndarray) -> np.ndarray:
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    return np.where(np.isnan(s), -np.inf, s)


def risk_coverage_curve(score: np.ndarray, correct: np.ndarray) -> RiskCoverage:
    """Risk–coverage curve of a score (higher = more certain).

    Parameters
    ----------
    score : numpy.ndarray, shape (n,)
        Certainty of each pattern (NaN = least certain).
    correct : numpy.ndarray of bool, shape (n,)

    Returns
    -------
    RiskCoverage
    """
    s = _clean(score)
    c = np.asarray(correct, dtype=bool).reshape(-1)
    if s.shape != c.shape:
        raise ValueError(f"score and correct differ in length: {s.shape} vs {c.shape}")
    n = s.size
    if n == 0:
        empty = np.zeros(0)
        return RiskCoverage(empty, empty, empty, np.zeros(0, np.int64))
    order = np.argsort(-s, kind="stable")
    ss = s[order]
    hits = np.cumsum(c[order])
    last = np.r_[np.flatnonzero(np.diff(ss) != 0), n - 1]
    m = last + 1
    return RiskCoverage(ss[last], m / n, hits[last] / m, m.astype(np.int64))


def _msa_weighted(ss: np.ndarray, cs: np.ndarray, w: np.ndarray) -> np.ndarray | float:
    """Mean selective accuracy for sorted scores ``ss`` (desc), correctness ``cs`` and weights.

    ``w`` is ``(n,)`` or ``(b, n)`` (one row per bootstrap replicate); returns ``(b,)`` or a
    float. A pattern of weight ``w`` counts as ``w`` copies, and the units of a tie block (equal
    scores, copies included) are taken in random order: unit ``j`` of a block preceded by weight
    ``W0`` with ``H0`` right labels, of weight ``Wb`` and accuracy ``r``, has expected selective
    accuracy ``(H0 + j r) / (W0 + j)``, whose sum over ``j = 1..Wb`` is
    ``Wb r + (H0 - r W0) (psi(W0 + Wb + 1) - psi(W0 + 1))`` (``psi`` the digamma function).
    """
    from scipy.special import digamma

    w2 = np.atleast_2d(np.asarray(w, dtype=np.float64))
    starts = np.r_[0, np.flatnonzero(np.diff(ss) != 0) + 1]
    blk_w = np.add.reduceat(w2, starts, axis=1)
    blk_h = np.add.reduceat(w2 * cs[None, :], starts, axis=1)
    w0 = np.cumsum(blk_w, axis=1) - blk_w
    h0 = np.cumsum(blk_h, axis=1) - blk_h
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(blk_w > 0, blk_h / np.where(blk_w > 0, blk_w, 1.0), 0.0)
        total_acc = blk_w * r + (h0 - r * w0) * (digamma(w0 + blk_w + 1.0) - digamma(w0 + 1.0))
        total = blk_w.sum(axis=1)
        msa = np.where(total > 0, total_acc.sum(axis=1) / np.where(total > 0, total, 1.0), np.nan)
    return msa if np.ndim(w) == 2 else float(msa[0])


def mean_selective_accuracy(score: np.ndarray, correct: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean selective accuracy ``(1/n) sum_k acc(k)`` (see the module docstring); ``nan`` if empty."""
    s = _clean(score)
    c = np.asarray(correct, dtype=np.float64).reshape(-1)
    if s.size == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    w = np.ones(s.size) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)[order]
    return float(_msa_weighted(s[order], c[order], w))


def aurc(score: np.ndarray, correct: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the risk–coverage curve, ``1 - mean_selective_accuracy`` (lower is better)."""
    return 1.0 - mean_selective_accuracy(score, correct, weights)


def oracle_aurc(correct: np.ndarray) -> float:
    """AURC of the ideal ranking (all right labels first) at the same accuracy."""
    c = np.asarray(correct, dtype=np.float64)
    return aurc(c, c)


def candidate_scores(
    crystal_system_probs: np.ndarray,
    extra_scores: Mapping[str, np.ndarray] | None = None,
    names: Sequence[str] = RAW_SCORES,
) -> dict[str, np.ndarray]:
    """The raw scores of the probabilities plus any extra per-pattern scores, by name.

    Parameters
    ----------
    crystal_system_probs : numpy.ndarray, shape (n, 7)
    extra_scores : mapping of str to numpy.ndarray, optional
        Further ``(n,)`` scores (higher = more certain), e.g. a lattice-fit quality.
    names : sequence of str
        Raw scores to compute (:data:`py4dstem_gnn.confidence.calibration.RAW_SCORES`).
    """
    out = {name: raw_score(crystal_system_probs, name) for name in names}
    n = np.asarray(crystal_system_probs).shape[0]
    for name, arr in (extra_scores or {}).items():
        arr = np.asarray(arr, dtype=np.float64).reshape(-1)
        if arr.size != n:
            raise ValueError(f"extra score {name!r} has {arr.size} values for {n} patterns")
        out[str(name)] = arr
    return out


@dataclass
class ScoreComparison:
    """How one score ranks the patterns (see :func:`compare_scores`).

    Attributes
    ----------
    name : str
    aurc : BootstrapInterval
        AURC with its group-bootstrap interval.
    e_aurc : float
        AURC minus the oracle AURC.
    minus_reference : BootstrapInterval
        Paired AURC difference to the reference score (negative = better than it).
    coverage_at_goal : float
        Largest fraction labelled whose selective accuracy reaches the goal (0 if none).
    accuracy_at_half : float
        Selective accuracy at 50 % coverage.
    goal : float
    """

    name: str
    aurc: BootstrapInterval
    e_aurc: float
    minus_reference: BootstrapInterval
    coverage_at_goal: float
    accuracy_at_half: float
    goal: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "name": self.name, "aurc": self.aurc.as_dict(), "e_aurc": self.e_aurc,
            "minus_reference": self.minus_reference.as_dict(), "coverage_at_goal": self.coverage_at_goal,
            "accuracy_at_half": self.accuracy_at_half, "goal": self.goal,
        }


def _boot_aurc(score: np.ndarray, correct: np.ndarray, pattern_w: np.ndarray, chunk: int = 100) -> np.ndarray:
    s = _clean(score)
    order = np.argsort(-s, kind="stable")
    ss, cs = s[order], np.asarray(correct, dtype=np.float64)[order]
    out = [1.0 - _msa_weighted(ss, cs, pattern_w[i : i + chunk][:, order]) for i in range(0, pattern_w.shape[0], chunk)]
    return np.concatenate(out) if out else np.zeros(0)


def compare_scores(
    crystal_system_probs: np.ndarray,
    cs_true: np.ndarray,
    groups: np.ndarray,
    extra_scores: Mapping[str, np.ndarray] | None = None,
    *,
    names: Sequence[str] = RAW_SCORES,
    reference: str = "margin",
    goal: float = 0.9,
    min_labelled: int = 30,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> list[ScoreComparison]:
    """Compare certainty scores by AURC on the same patterns, with paired group-bootstrap intervals.

    Parameters
    ----------
    crystal_system_probs : numpy.ndarray, shape (n, 7)
    cs_true : numpy.ndarray, shape (n,)
        True crystal-system codes.
    groups : numpy.ndarray, shape (n,)
        Material group of every pattern (the bootstrap resamples groups).
    extra_scores : mapping, optional
        Extra ``(n,)`` scores (see :func:`candidate_scores`).
    names : sequence of str
        Raw scores to include.
    reference : str
        Score the paired differences are taken against.
    goal, min_labelled
        Accuracy goal and fewest labelled patterns for ``coverage_at_goal``
        (:func:`py4dstem_gnn.confidence.calibration.threshold_for_goal`).
    n_boot, seed, ci
        Bootstrap replicates, seed and interval coverage.

    Returns
    -------
    list of ScoreComparison
        Sorted by AURC (best first).
    """
    p = np.asarray(crystal_system_probs, dtype=np.float64)
    correct = p.argmax(axis=1) == np.asarray(cs_true).reshape(-1)
    scores = candidate_scores(p, extra_scores, names)
    if reference not in scores:
        raise ValueError(f"reference score {reference!r} is not among {sorted(scores)}")
    keys, gi = np.unique(np.asarray(groups), return_inverse=True)
    if gi.size != correct.size:
        raise ValueError("groups must hold one key per pattern")
    pattern_w = group_resampling_weights(len(keys), n_boot, seed)[:, gi]
    base = oracle_aurc(correct)
    reps = {name: _boot_aurc(s, correct, pattern_w) for name, s in scores.items()}
    point = {name: aurc(s, correct) for name, s in scores.items()}
    rows = []
    for name, s in scores.items():
        s_clean = _clean(s)
        finite = np.isfinite(s_clean)
        floor = s_clean[finite].min() - 1.0 if finite.any() else 0.0
        rule = threshold_for_goal(np.where(finite, s_clean, floor), correct, goal, min_labelled)
        rows.append(ScoreComparison(
            name=name,
            aurc=percentile_interval(point[name], reps[name], ci, correct.size, len(keys)),
            e_aurc=point[name] - base,
            minus_reference=percentile_interval(point[name] - point[reference], reps[name] - reps[reference], ci, correct.size, len(keys)),
            coverage_at_goal=float(rule["coverage"]) if rule["goal_reached"] else 0.0,
            accuracy_at_half=risk_coverage_curve(s, correct).accuracy_at(0.5),
            goal=float(goal),
        ))
    return sorted(rows, key=lambda r: r.aurc.mean)


def _conditions(n: int, protocol: np.ndarray | None, regime: np.ndarray | None) -> list[tuple[str, str, np.ndarray]]:
    prot = np.full(n, "all", dtype=object) if protocol is None else np.asarray(protocol, dtype=object).reshape(-1)
    reg = np.full(n, "all", dtype=object) if regime is None else np.asarray(regime, dtype=object).reshape(-1)
    if prot.size != n or reg.size != n:
        raise ValueError("protocol and regime must hold one label per pattern")
    out = []
    for p in sorted(set(prot.tolist()), key=str):
        for r in sorted(set(reg.tolist()), key=str):
            sel = (prot == p) & (reg == r)
            if sel.any():
                out.append((str(p), str(r), sel))
    return out


def selective_by_condition(
    confidence: np.ndarray,
    correct: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    protocol: np.ndarray | None = None,
    regime: np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> list[dict[str, Any]]:
    """Labelled fraction, selective accuracy and AURC at a threshold, per protocol × regime.

    Parameters
    ----------
    confidence : numpy.ndarray, shape (n,)
        Confidence of each pattern (calibrated or raw).
    correct : numpy.ndarray of bool, shape (n,)
    groups : numpy.ndarray, shape (n,)
        Material group of each pattern.
    threshold : float
        Patterns with ``confidence >= threshold`` are labelled.
    protocol, regime : numpy.ndarray, optional
        Per-pattern labels (e.g. ``"known"`` / ``"unseen-material"``, ``"zone_axis"`` /
        ``"random"``); one condition ``"all"`` if omitted.

    Returns
    -------
    list of dict
        ``protocol``, ``regime``, ``n``, ``n_groups``, ``threshold``, ``labelled``,
        ``selective_accuracy``, ``aurc`` (each ``{"mean", "low", "high", ...}``) and ``accuracy``
        (all patterns, no abstention).
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    corr = np.asarray(correct, dtype=bool).reshape(-1)
    keys, gi = np.unique(np.asarray(groups), return_inverse=True)
    w = group_resampling_weights(len(keys), n_boot, seed)
    lab = conf >= threshold
    rows = []
    for p, r, sel in _conditions(conf.size, protocol, regime):
        m_lab, r_lab, n, ng = ratio_replicates(lab, gi, w, sel)
        m_acc, r_acc, n_l, ng_l = ratio_replicates(corr, gi, w, sel & lab)
        m_all, r_all, _, _ = ratio_replicates(corr, gi, w, sel)
        a_point = aurc(conf[sel], corr[sel])
        a_reps = _boot_aurc(conf[sel], corr[sel], w[:, gi[sel]])
        rows.append({
            "protocol": p, "regime": r, "n": n, "n_groups": ng, "threshold": float(threshold),
            "labelled": percentile_interval(m_lab, r_lab, ci, n, ng).as_dict(),
            "selective_accuracy": percentile_interval(m_acc, r_acc, ci, n_l, ng_l).as_dict(),
            "accuracy": percentile_interval(m_all, r_all, ci, n, ng).as_dict(),
            "aurc": percentile_interval(a_point, a_reps, ci, n, ng).as_dict(),
        })
    return rows


def coverage_by_condition(
    covered: np.ndarray,
    set_size: np.ndarray,
    groups: np.ndarray,
    protocol: np.ndarray | None = None,
    regime: np.ndarray | None = None,
    *,
    nominal: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> list[dict[str, Any]]:
    """Empirical coverage and mean set size of prediction sets, per protocol × regime.

    Parameters
    ----------
    covered : numpy.ndarray of bool, shape (n,)
        Whether the true class is in each set (for crystal-system masks:
        ``(mask >> cs_true) & 1``).
    set_size : numpy.ndarray, shape (n,)
    groups : numpy.ndarray, shape (n,)
        Material group of each pattern.
    protocol, regime : numpy.ndarray, optional
        Per-pattern condition labels; one condition ``"all"`` if omitted.
    nominal : float, optional
        Nominal coverage, copied into the rows (with ``within_2_points`` and
        ``within_interval``).

    Returns
    -------
    list of dict
        ``protocol``, ``regime``, ``n``, ``n_groups``, ``coverage`` and ``mean_set_size``
        (``{"mean", "low", "high", ...}``) and, with ``nominal``, the checks.
    """
    cov = np.asarray(covered, dtype=np.float64).reshape(-1)
    size = np.asarray(set_size, dtype=np.float64).reshape(-1)
    keys, gi = np.unique(np.asarray(groups), return_inverse=True)
    if not (cov.size == size.size == gi.size):
        raise ValueError("covered, set_size and groups must have the same length")
    w = group_resampling_weights(len(keys), n_boot, seed)
    rows = []
    for p, r, sel in _conditions(cov.size, protocol, regime):
        m_c, r_c, n, ng = ratio_replicates(cov, gi, w, sel)
        m_s, r_s, _, _ = ratio_replicates(size, gi, w, sel)
        c_int = percentile_interval(m_c, r_c, ci, n, ng)
        row = {"protocol": p, "regime": r, "n": n, "n_groups": ng, "coverage": c_int.as_dict(),
               "mean_set_size": percentile_interval(m_s, r_s, ci, n, ng).as_dict()}
        if nominal is not None:
            row["nominal"] = float(nominal)
            row["within_2_points"] = bool(abs(c_int.mean - nominal) <= 0.02)
            row["within_interval"] = bool(c_int.low <= nominal <= c_int.high)
        rows.append(row)
    return rows


def risk_coverage_figure(curves: Mapping[str, RiskCoverage], title: str | None = None, goal: float | None = 0.9) -> Any:
    """Selective accuracy against coverage for several scores (a matplotlib Figure, no pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 4.0), layout="constrained")
    ax = fig.subplots()
    for name, rc in curves.items():
        ax.plot(np.r_[0.0, rc.coverage], 100 * np.r_[rc.accuracy[:1], rc.accuracy], label=name, drawstyle="steps-pre")
    if goal is not None:
        ax.axhline(100 * goal, color="grey", lw=0.8, ls="--", label=f"goal {100 * goal:.0f} %")
    ax.set_xlabel("coverage (fraction labelled)")
    ax.set_ylabel("accuracy of labelled patterns (%)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 101)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig
