"""Bootstrap intervals over material groups (re-exported by :mod:`py4dstem_gnn.evaluation.metrics`).

Patterns of one material, and materials of one structure group (same prototype or same
formula and space group), are correlated: an interval that resamples patterns, or even
materials, is too narrow. The functions here resample whole *groups* with replacement
(``n_groups`` draws, multinomial counts), keep every unit (pattern or material) of a drawn
group as many times as it was drawn, and recompute the mean over units:

    mean* = sum_g w_g S_g / sum_g w_g N_g,     S_g = sum of the values of group g, N_g = its units,

the ratio estimator of a clustered sample. Intervals are percentile intervals of the
replicates; the point estimate is the mean of the data.

:func:`group_resampling_weights` and :func:`ratio_replicates` are the building blocks, so that
several statistics (classifiers, subsets such as one crystal system, clean and corrupted copies
of the same patterns) can share one set of resamples and be compared pairwise
(:func:`group_bootstrap_difference`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BootstrapInterval",
    "group_resampling_weights",
    "ratio_replicates",
    "percentile_interval",
    "group_bootstrap",
    "group_bootstrap_difference",
]


@dataclass(frozen=True)
class BootstrapInterval:
    """A mean and its bootstrap interval.

    Attributes
    ----------
    mean : float
        Statistic on the data (``nan`` when empty).
    low, high : float
        Percentile interval of the replicates.
    n : int
        Units (patterns or materials) behind the statistic.
    n_groups : int
        Distinct groups among them.
    ci : float
        Coverage of the interval (0.95).
    """

    mean: float
    low: float
    high: float
    n: int
    n_groups: int
    ci: float

    @property
    def half_width(self) -> float:
        """Half the interval width."""
        return 0.5 * (self.high - self.low)

    def as_dict(self) -> dict[str, Any]:
        """Plain floats and ints (JSON-serialisable)."""
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n,
                "n_groups": self.n_groups, "ci": self.ci}


def group_resampling_weights(n_groups: int, n_boot: int = 1000, seed: int | np.random.Generator = 0) -> np.ndarray:
    """How often each group is drawn in each replicate.

    Parameters
    ----------
    n_groups : int
        Number of groups.
    n_boot : int
        Number of replicates.
    seed : int or numpy.random.Generator
        Seed (or generator) of the draws.

    Returns
    -------
    numpy.ndarray
        ``(n_boot, n_groups)`` float64 counts, each row summing to ``n_groups``.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if n_groups == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(np.float64)


def ratio_replicates(
    values: np.ndarray, group_index: np.ndarray, weights: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, np.ndarray, int, int]:
    """Mean of ``values`` and its replicates under group resampling weights.

    Parameters
    ----------
    values : numpy.ndarray
        ``(n,)`` per-unit values (bool or float).
    group_index : numpy.ndarray
        ``(n,)`` group of each unit, ``0 .. weights.shape[1] - 1``.
    weights : numpy.ndarray
        ``(n_boot, n_groups)`` from :func:`group_resampling_weights`.
    mask : numpy.ndarray, optional
        ``(n,)`` bool: use only these units (a subset keeps the resampling of the whole set).

    Returns
    -------
    mean : float
        Mean over the (masked) units; ``nan`` if none.
    replicates : numpy.ndarray
        ``(n_boot,)``; ``nan`` where a replicate drew none of the units.
    n, n_groups : int
        Units and distinct groups used.
    """
    values = np.asarray(values, dtype=np.float64)
    gi = np.asarray(group_index, dtype=np.int64)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        values, gi = values[mask], gi[mask]
    G = weights.shape[1]
    sums = np.bincount(gi, weights=values, minlength=G)
    counts = np.bincount(gi, minlength=G).astype(np.float64)
    n = int(counts.sum())
    mean = float(sums.sum() / n) if n else float("nan")
    num, den = weights @ sums, weights @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return mean, reps, n, int(np.count_nonzero(counts))


def percentile_interval(mean: float, replicates: np.ndarray, ci: float = 0.95, n: int = 0,
                        n_groups: int = 0) -> BootstrapInterval:
    """Percentile interval of bootstrap replicates (``nan`` replicates ignored)."""
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0 or not np.isfinite(mean):
        low = high = float("nan")
    else:
        a = (1.0 - ci) / 2.0
        low, high = (float(v) for v in np.quantile(reps, [a, 1.0 - a]))
    return BootstrapInterval(float(mean), low, high, int(n), int(n_groups), float(ci))


def group_bootstrap(
    values_or_correct: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> BootstrapInterval:
    """Mean of per-unit values with a bootstrap interval over whole groups.

    Parameters
    ----------
    values_or_correct : numpy.ndarray
        ``(n,)`` values, e.g. bool "prediction right" per pattern (the mean is an accuracy)
        or per-material multi-view accuracies.
    groups : numpy.ndarray
        ``(n,)`` group key of each unit (the manifest's ``group`` of its material, for
        intervals over material groups; the material itself, for intervals over materials).
    n_boot : int
        Replicates.
    seed : int
        Seed of the resampling.
    ci : float
        Coverage of the percentile interval.

    Returns
    -------
    BootstrapInterval
        ``mean`` (of the data), ``low``, ``high``, ``n``, ``n_groups``, ``ci``.
    """
    keys, gi = np.unique(np.asarray(groups), return_inverse=True)
    if len(np.asarray(values_or_correct)) != len(gi):
        raise ValueError("values and groups must have the same length")
    w = group_resampling_weights(len(keys), n_boot, seed)
    mean, reps, n, ng = ratio_replicates(values_or_correct, gi, w)
    return percentile_interval(mean, reps, ci, n, ng)


def group_bootstrap_difference(
    values_a: np.ndarray,
    groups_a: np.ndarray,
    values_b: np.ndarray,
    groups_b: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> BootstrapInterval:
    """``mean(a) - mean(b)`` with a paired interval: both resampled with the same group draws.

    ``a`` and ``b`` may be different units of the same groups (e.g. clean and corrupted copies
    of one set) or the same units (two classifiers on the same patterns; ``groups_b`` omitted).

    Returns
    -------
    BootstrapInterval
        ``n`` and ``n_groups`` count ``a``.
    """
    groups_b = groups_a if groups_b is None else groups_b
    ga, gb = np.asarray(groups_a), np.asarray(groups_b)
    keys, inv = np.unique(np.concatenate([ga, gb]), return_inverse=True)
    w = group_resampling_weights(len(keys), n_boot, seed)
    ma, ra, n, ng = ratio_replicates(values_a, inv[: len(ga)], w)
    mb, rb, _, _ = ratio_replicates(values_b, inv[len(ga):], w)
    return percentile_interval(ma - mb, ra - rb, ci, n, ng)
