"""Classification metrics for crystal-system and space-group predictions (pure numpy).

Everything here works on plain arrays (labels, probabilities, group keys), so that the model and
the random-forest baseline are scored by the same code:

* :func:`accuracy`, :func:`confusion_matrix`, :func:`precision_recall_f1` (per class, with macro
  and support-weighted averages: the layout of Table 2 of Nathani et al.);
* :func:`grouped_accuracy`: accuracy within groups, e.g. space-group accuracy grouped by the
  true crystal system (Table 4);
* :func:`reliability_bins`, :func:`expected_calibration_error`: calibration of the top-class
  probability;
* :func:`fit_temperature`, :func:`apply_temperature`: temperature scaling (one scalar ``T``
  dividing the log-probabilities, fitted by minimising the negative log-likelihood on a
  validation set with a bounded golden-section search over ``log T``);
* :func:`draw_views`, :func:`aggregate_probs`, :func:`aggregate_log_probs`, :func:`consistent_argmax`:
  combining ``k`` randomly drawn patterns (orientations) of each material (the multi-view figures of
  :func:`py4dstem_gnn.evaluation.protocols.evaluate_protocols`);
* :func:`group_bootstrap`, :func:`group_bootstrap_difference`:
  intervals that resample whole material groups (defined in
  :mod:`py4dstem_gnn.evaluation.bootstrap`, re-exported here).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from ..labels import SG_TO_CS
from .bootstrap import (
    BootstrapInterval,
    group_bootstrap,
    group_bootstrap_difference,
    group_resampling_weights,
    percentile_interval,
    ratio_replicates,
)

__all__ = [
    "accuracy",
    "confusion_matrix",
    "precision_recall_f1",
    "grouped_accuracy",
    "reliability_bins",
    "expected_calibration_error",
    "negative_log_likelihood",
    "fit_temperature",
    "apply_temperature",
    "draw_views",
    "aggregate_probs",
    "aggregate_log_probs",
    "consistent_argmax",
    "BootstrapInterval",
    "group_bootstrap",
    "group_bootstrap_difference",
    "group_resampling_weights",
    "ratio_replicates",
    "percentile_interval",
]

_TINY = float(np.finfo(np.float32).tiny)


# ----------------------------------------------------------------------------- basics
def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of equal labels; ``nan`` for empty input.

    Parameters
    ----------
    y_true, y_pred : numpy.ndarray
        ``(n,)`` labels.

    Returns
    -------
    float
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shape mismatch {y_true.shape} vs {y_pred.shape}")
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None
) -> np.ndarray:
    """Confusion matrix with rows = true class, columns = predicted class.

    Parameters
    ----------
    y_true, y_pred : numpy.ndarray
        ``(n,)`` integer labels in ``0 .. n_classes - 1``.
    n_classes : int, optional
        Number of classes; ``max(label) + 1`` by default.

    Returns
    -------
    numpy.ndarray
        ``(n_classes, n_classes)`` int64 counts.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shape mismatch {y_true.shape} vs {y_pred.shape}")
    if n_classes is None:
        n_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    if y_true.size and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def precision_recall_f1(cm: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class precision, recall, F1 and support from a confusion matrix.

    Classes with no prediction get precision 0 (and F1 0), classes with no true sample get
    recall ``nan`` and are left out of the averages (the scikit-learn ``zero_division=0``
    convention for precision).

    Parameters
    ----------
    cm : numpy.ndarray
        ``(C, C)`` confusion matrix, rows = true class.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1``, ``support`` (arrays of length ``C``) and
        ``macro_precision``, ``macro_recall``, ``macro_f1``, ``weighted_f1``, ``accuracy``
        (floats; averages over classes with support > 0).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.full_like(tp, np.nan), where=support > 0)
    denom = precision + np.nan_to_num(recall)
    f1 = np.divide(
        2 * precision * np.nan_to_num(recall), denom, out=np.zeros_like(tp), where=denom > 0
    )
    f1 = np.where(support > 0, f1, np.nan)
    present = support > 0
    total = support.sum()
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support.astype(np.int64),
        "macro_precision": float(precision[present].mean()) if present.any() else float("nan"),
        "macro_recall": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "weighted_f1": float((f1[present] * support[present]).sum() / total) if total else float("nan"),
        "accuracy": float(tp.sum() / total) if total else float("nan"),
    }


def grouped_accuracy(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy within each group (e.g. space-group accuracy per true crystal system).

    Parameters
    ----------
    y_true, y_pred : numpy.ndarray
        ``(n,)`` labels.
    groups : numpy.ndarray
        ``(n,)`` group index in ``0 .. n_groups - 1`` of each sample.
    n_groups : int
        Number of groups.

    Returns
    -------
    accuracy : numpy.ndarray
        ``(n_groups,)`` float, ``nan`` for empty groups.
    count : numpy.ndarray
        ``(n_groups,)`` int64 samples per group.
    """
    groups = np.asarray(groups, dtype=np.int64)
    correct = (np.asarray(y_true) == np.asarray(y_pred)).astype(np.float64)
    count = np.bincount(groups, minlength=n_groups)
    hits = np.bincount(groups, weights=correct, minlength=n_groups)
    acc = np.divide(hits, count, out=np.full(n_groups, np.nan), where=count > 0)
    return acc, count.astype(np.int64)


# ----------------------------------------------------------------------------- calibration
def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> dict[str, np.ndarray]:
    """Equal-width confidence bins on ``[0, 1]`` with their accuracy and mean confidence.

    Parameters
    ----------
    confidence : numpy.ndarray
        ``(n,)`` probability assigned to the predicted class.
    correct : numpy.ndarray
        ``(n,)`` bool, whether the prediction is right.
    n_bins : int
        Number of bins; bin ``b`` is ``(b/n, (b+1)/n]`` (the first also holds 0).

    Returns
    -------
    dict
        ``edges (n_bins + 1,)``, ``count``, ``accuracy`` and ``confidence`` (``nan`` in empty
        bins), each ``(n_bins,)``.
    """
    conf = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    corr = np.asarray(correct, dtype=np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    acc = np.divide(np.bincount(idx, corr, n_bins), count, out=np.full(n_bins, np.nan), where=count > 0)
    mean_conf = np.divide(
        np.bincount(idx, conf, n_bins), count, out=np.full(n_bins, np.nan), where=count > 0
    )
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1),
        "count": count.astype(np.int64),
        "accuracy": acc,
        "confidence": mean_conf,
    }


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> float:
    """Expected calibration error ``sum_b (n_b / n) |acc_b - conf_b|`` over equal-width bins.

    Parameters
    ----------
    confidence : numpy.ndarray
        ``(n,)`` probability of the predicted class (top-class probability).
    correct : numpy.ndarray
        ``(n,)`` bool.
    n_bins : int
        Number of equal-width bins on ``[0, 1]``.

    Returns
    -------
    float
        ECE in ``[0, 1]``; ``nan`` for empty input.
    """
    b = reliability_bins(confidence, correct, n_bins)
    n = b["count"].sum()
    if n == 0:
        return float("nan")
    full = b["count"] > 0
    gap = np.abs(b["accuracy"][full] - b["confidence"][full])
    return float((b["count"][full] * gap).sum() / n)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def apply_temperature(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities ``softmax(log_probs / T)``.

    Parameters
    ----------
    log_probs : numpy.ndarray
        ``(n, C)`` logits or log-probabilities (equivalent up to a per-row constant).
    temperature : float
        ``T > 0``; ``T > 1`` softens, ``T < 1`` sharpens.

    Returns
    -------
    numpy.ndarray
        ``(n, C)`` probabilities.
    """
    if not temperature > 0:
        raise ValueError("temperature must be positive")
    return np.exp(_log_softmax(np.asarray(log_probs, dtype=np.float64) / temperature))


def negative_log_likelihood(log_probs: np.ndarray, y_true: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``softmax(log_probs / T)`` at the true labels."""
    lp = _log_softmax(np.asarray(log_probs, dtype=np.float64) / temperature)
    y = np.asarray(y_true, dtype=np.int64)
    return float(-lp[np.arange(len(y)), y].mean())


def fit_temperature(
    log_probs: np.ndarray,
    y_true: np.ndarray,
    bounds: tuple[float, float] = (0.05, 20.0),
    tol: float = 1e-4,
) -> float:
    """Temperature minimising the validation negative log-likelihood.

    A golden-section search over ``log T`` in ``bounds`` (the NLL is unimodal in ``T`` for
    temperature scaling).

    Parameters
    ----------
    log_probs : numpy.ndarray
        ``(n, C)`` validation logits or log-probabilities (use ``log(max(p, tiny))`` for
        probabilities).
    y_true : numpy.ndarray
        ``(n,)`` true class indices.
    bounds : tuple of float
        Search interval for ``T``.
    tol : float
        Stop when the bracket in ``log T`` is narrower than this.

    Returns
    -------
    float
        Fitted temperature ``T``.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    if len(y) == 0:
        return 1.0
    a, b = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc = negative_log_likelihood(lp, y, math.exp(c))
    fd = negative_log_likelihood(lp, y, math.exp(d))
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = negative_log_likelihood(lp, y, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = negative_log_likelihood(lp, y, math.exp(d))
    return float(math.exp((a + b) / 2.0))


# ----------------------------------------------------------------------------- multi-view
def draw_views(groups: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``k`` random patterns of every group, without replacement.

    Groups with fewer than ``k`` patterns keep all of them.

    Parameters
    ----------
    groups : numpy.ndarray
        ``(n,)`` group key (e.g. material id) of each pattern.
    k : int
        Patterns per group.
    rng : numpy.random.Generator
        Source of randomness (seed it for reproducible draws).

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices of the chosen patterns.
    """
    groups = np.asarray(groups)
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, inv = np.unique(groups, return_inverse=True)
    order = np.lexsort((rng.random(n), inv))  # by group, random within group
    sorted_inv = inv[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_inv)) + 1]
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return np.sort(order[rank < k]).astype(np.int64)


def aggregate_probs(
    probs: np.ndarray,
    groups: np.ndarray,
    method: Literal["log", "mean"] = "log",
) -> tuple[np.ndarray, np.ndarray]:
    """Combine the probabilities of the patterns of each group.

    Parameters
    ----------
    probs : numpy.ndarray
        ``(n, C)`` per-pattern probabilities.
    groups : numpy.ndarray
        ``(n,)`` group keys.
    method : {"log", "mean"}
        ``"log"``: mean of log-probabilities (floored at the float32 ``tiny``) renormalised, the
        rule of :func:`py4dstem_gnn.predict.aggregate_views`; ``"mean"``: arithmetic mean
        (soft voting).

    Returns
    -------
    keys : numpy.ndarray
        Sorted distinct group keys.
    combined : numpy.ndarray
        ``(n_groups, C)`` probabilities.
    """
    if method == "log":
        return aggregate_log_probs(np.log(np.maximum(np.asarray(probs, dtype=np.float64), _TINY)), groups)
    if method != "mean":
        raise ValueError(f"unknown aggregation method {method!r}")
    keys, acc, _ = _group_sums(np.asarray(probs, dtype=np.float64), groups)
    return keys, acc / acc.sum(axis=1, keepdims=True)


def _group_sums(rows: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted keys, per-key sums of ``rows`` and per-key counts."""
    keys, inv = np.unique(np.asarray(groups), return_inverse=True)
    if len(keys) == 0:
        return keys, np.zeros((0, rows.shape[1])), np.zeros(0, dtype=np.int64)
    counts = np.bincount(inv, minlength=len(keys))
    order = np.argsort(inv, kind="stable")  # rows of one group contiguous: one reduceat, no add.at
    starts = np.r_[0, np.cumsum(counts[:-1])].astype(np.int64)
    return keys, np.add.reduceat(rows[order], starts, axis=0), counts


def aggregate_log_probs(log_probs: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``"log"`` rule of :func:`aggregate_probs` on precomputed ``log(max(p, tiny))``.

    Compute the logarithms once when the same patterns are combined in many draws.

    Returns
    -------
    keys : numpy.ndarray
        Sorted distinct group keys.
    combined : numpy.ndarray
        ``(n_groups, C)`` probabilities (normalised geometric mean per group).
    """
    log_probs = np.asarray(log_probs, dtype=np.float64)
    keys, acc, counts = _group_sums(log_probs, groups)
    if len(keys):
        acc = acc / counts[:, None]
        acc = np.exp(acc - acc.max(axis=1, keepdims=True))
    return keys, acc / np.maximum(acc.sum(axis=1, keepdims=True), _TINY)


def consistent_argmax(cs_probs: np.ndarray, sg_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crystal system (argmax) and the most probable space group within it (1-based).

    The same rule as :class:`py4dstem_gnn.predict.Prediction`.
    """
    cs = np.asarray(cs_probs).argmax(axis=1).astype(np.int64)
    allowed = SG_TO_CS[None, :] == cs[:, None]
    sg = np.where(allowed, np.asarray(sg_probs), -np.inf).argmax(axis=1).astype(np.int64) + 1
    return cs, sg
