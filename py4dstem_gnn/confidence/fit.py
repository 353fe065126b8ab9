"""Fitting the confidence calibration and conformal sets of weights on validation data.

:func:`calibrate_weights` runs the model over stored validation pattern sets, fits the maps of
:mod:`py4dstem_gnn.confidence.calibration` (calibrated confidence and its default threshold) and of
:mod:`py4dstem_gnn.confidence.conformal` (prediction sets per coverage level and number of views), and writes
them into the weights' JSON card: the safetensors file and its SHA-256 do not change. Command line:
``python -m py4dstem_gnn.confidence.fit --weights default --val data/bloch_val.h5 ...``
(``--dry-run`` prints the fields instead of writing them).

Exchangeability: the sets and the threshold are valid for data like the calibration data. The
shipped weights' validation sets hold materials the weights never saw (held-out materials of the
structure pool); for the ``unseen-*`` protocols use the split models and their validation groups.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any, Sequence

import numpy as np

from ..evaluation.metrics import aggregate_probs, draw_views
from ..labels import N_CRYSTAL_SYSTEMS, N_SPACE_GROUPS, SG_TO_CS
from .calibration import RAW_SCORES, ConfidenceCalibration, fit_isotonic, raw_score, threshold_for_goal
from .conformal import DEFAULT_LEVELS, ConformalCalibration, check_coverage, conformal_quantile

__all__ = ["aggregated_calibration_data", "fit_calibrations", "fit_conformal", "calibrate_weights", "main"]

logger = logging.getLogger(__name__)




def _views_draws(groups: np.ndarray, k: int, n_draws: int, seed: int) -> list[np.ndarray]:
    """Per draw, indices of ``k`` patterns of every group that has at least ``k``."""
    _, inv = np.unique(groups, return_inverse=True)
    big = np.bincount(inv)[inv] >= k
    rng = np.random.default_rng([seed, k])
    idx_all = np.flatnonzero(big)
    return [idx_all[draw_views(groups[idx_all], k, rng)] for _ in range(n_draws)] if idx_all.size else []


def aggregated_calibration_data(
    cs_probs: np.ndarray,
    sg_probs: np.ndarray | None,
    sg_true: np.ndarray,
    groups: np.ndarray,
    k: int,
    n_draws: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Aggregates of ``k`` views of one group (material), over ``n_draws`` seeded draws.

    The views are combined by the rule of :func:`py4dstem_gnn.aggregate_views` (normalised
    geometric mean). Groups with fewer than ``k`` patterns are left out.

    Returns
    -------
    cs_probs : numpy.ndarray, (m, 7)
    sg_probs : numpy.ndarray, (m, 230) or None
    sg_true : numpy.ndarray, (m,) true space group of each aggregate
    """
    cs_out, sg_out, y_out = [], [], []
    for idx in _views_draws(np.asarray(groups), k, n_draws, seed):
        g = np.asarray(groups)[idx]
        keys, cs_agg = aggregate_probs(cs_probs[idx], g)
        first = np.unique(g, return_index=True)[1]
        y_out.append(np.asarray(sg_true)[idx][first])
        cs_out.append(cs_agg)
        if sg_probs is not None:
            sg_out.append(aggregate_probs(sg_probs[idx], g)[1])
    if not cs_out:
        return np.zeros((0, N_CRYSTAL_SYSTEMS)), (np.zeros((0, N_SPACE_GROUPS)) if sg_probs is not None else None), np.zeros(0, np.int64)
    return np.concatenate(cs_out), (np.concatenate(sg_out) if sg_probs is not None else None), np.concatenate(y_out)


def fit_calibrations(
    cs_probs: np.ndarray,
    sg_probs: np.ndarray,
    sg_true: np.ndarray,
    groups: np.ndarray,
    *,
    score: str = "margin",
    goal: float = 0.9,
    min_block: int = 40,
    min_labelled: int = 30,
    views: Sequence[int] = tuple(range(1, 11)),
    n_draws: int = 5,
    seed: int = 0,
    coverage_levels: Sequence[float] | None = None,
    default_coverage: float = 0.9,
) -> tuple[ConfidenceCalibration, Any]:
    """Fit the confidence map, its threshold and the conformal sets on validation predictions.

    Parameters
    ----------
    cs_probs, sg_probs : numpy.ndarray
        ``(n, 7)`` and ``(n, 230)`` predicted probabilities of the validation patterns.
    sg_true : numpy.ndarray
        ``(n,)`` true space groups (1..230).
    groups : numpy.ndarray
        ``(n,)`` material of each pattern (views are aggregated within a material).
    score, goal, min_block, min_labelled
        See :func:`raw_score`, :func:`threshold_for_goal`, :func:`fit_isotonic`.
    views : sequence of int
        Numbers of views with their own maps and conformal quantiles; ``k`` for which no
        material has ``k`` patterns is skipped.
    n_draws, seed : int
        Seeded draws of ``k`` views per material (pooled).
    coverage_levels, default_coverage
        See :func:`py4dstem_gnn.confidence.fit.fit_conformal`.

    Returns
    -------
    ConfidenceCalibration, py4dstem_gnn.confidence.conformal.ConformalCalibration
    """

    cs_probs = np.asarray(cs_probs, dtype=np.float64)
    sg_true = np.asarray(sg_true, dtype=np.int64)
    cs_true = SG_TO_CS[sg_true - 1]
    correct = cs_probs.argmax(axis=1) == cs_true
    x, y, _ = fit_isotonic(raw_score(cs_probs, score), correct, min_block)
    by_views: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
    for k in views:
        if k <= 1:
            continue
        cs_k, _, sg_k = aggregated_calibration_data(cs_probs, None, sg_true, groups, k, n_draws, seed)
        if len(sg_k) < min_block:
            continue
        ok = cs_k.argmax(axis=1) == SG_TO_CS[sg_k - 1]
        xk, yk, _ = fit_isotonic(raw_score(cs_k, score), ok, min_block)
        by_views[int(k)] = (xk, yk, int(len(sg_k)))
    cal = ConfidenceCalibration(score, x, y, int(len(correct)), by_views)
    rule = threshold_for_goal(cal(cs_probs), correct, goal, min_labelled)
    cal.threshold = rule["threshold"]
    cal.info = {
        "definition": "estimated probability that the crystal-system label is right",
        "method": f"isotonic regression (pool-adjacent-violators) of 'label right' on the raw score, blocks of "
        f">= {min_block} patterns, linear interpolation between block mean scores, constant beyond",
        "threshold_rule": rule,
        "views_draws": {"n_draws": int(n_draws), "seed": int(seed)},
    }
    conformal = fit_conformal(
        cs_probs, np.asarray(sg_probs), sg_true, groups, views=views, n_draws=n_draws, seed=seed,
        levels=coverage_levels, default_coverage=default_coverage,
    )
    return cal, conformal


def fit_conformal(
    cs_probs: np.ndarray,
    sg_probs: np.ndarray,
    sg_true: np.ndarray,
    groups: np.ndarray,
    *,
    views: Sequence[int] = tuple(range(1, 11)),
    n_draws: int = 5,
    seed: int = 0,
    levels: Sequence[float] | None = None,
    default_coverage: float = 0.9,
) -> ConformalCalibration:
    """Conformal quantiles of both heads on validation predictions, per number of views.

    Parameters
    ----------
    cs_probs, sg_probs : numpy.ndarray
        ``(n, 7)`` and ``(n, 230)`` probabilities of the validation patterns.
    sg_true : numpy.ndarray
        ``(n,)`` true space groups 1..230.
    groups : numpy.ndarray
        ``(n,)`` material of every pattern.
    views : sequence of int
        Numbers of views to calibrate (``1`` = single patterns); a ``k`` that no material
        reaches is skipped.
    n_draws, seed : int
        Seeded draws of ``k`` views per material, pooled into the calibration points of ``k``.
    levels : sequence of float, optional
        Coverage levels (:data:`DEFAULT_LEVELS` by default).
    default_coverage : float
        Coverage used when none is requested.

    Returns
    -------
    ConformalCalibration
    """
    lv = np.asarray(DEFAULT_LEVELS if levels is None else sorted(levels), dtype=np.float64)
    check_coverage(default_coverage)
    cs_probs = np.asarray(cs_probs, dtype=np.float64)
    sg_probs = np.asarray(sg_probs, dtype=np.float64)
    sg_true = np.asarray(sg_true, dtype=np.int64)
    by_views: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
    for k in sorted(set(int(v) for v in views)):
        if k <= 1:
            cs_k, sg_k, y = cs_probs, sg_probs, sg_true
        else:
            cs_k, sg_k, y = aggregated_calibration_data(cs_probs, sg_probs, sg_true, groups, k, n_draws, seed)
        if len(y) == 0:
            continue
        rows = np.arange(len(y))
        s_cs = 1.0 - cs_k[rows, SG_TO_CS[y - 1]]
        s_sg = 1.0 - sg_k[rows, y - 1]
        by_views[k] = (
            int(len(y)),
            np.array([conformal_quantile(s_cs, a) for a in lv]),
            np.array([conformal_quantile(s_sg, a) for a in lv]),
        )
    if not by_views:
        raise ValueError("no calibration points: empty validation data")
    info = {
        "method": "split conformal, nonconformity 1 - p(true class) (LAC); set = classes with p >= 1 - q plus "
        "the most probable; q per coverage level and number of aggregated views",
        "views_draws": {"n_draws": int(n_draws), "seed": int(seed)},
    }
    return ConformalCalibration(lv, by_views, float(default_coverage), info)


def calibrate_weights(
    weights: str = "default",
    val_set: Any = "data/bloch_val.h5",
    goal: float = 0.9,
    *,
    score: str = "margin",
    write: bool = True,
    device: str = "auto",
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """Fit the confidence calibration and conformal sets of weights on a stored set; write the card.

    Parameters
    ----------
    weights : str or path
        Weights name or path (their card is updated; the safetensors file and SHA-256 are not).
    val_set : path, PatternSet, or sequence of them
        Validation pattern set(s) (HDF5 paths as written by ``PatternSet.to_hdf5``).
    goal : float
        Accuracy goal of the default threshold.
    score : str
        Raw score to calibrate (:data:`RAW_SCORES`).
    write : bool
        Write the fields into the card (JSON only); False only returns them.
    device : str
        Device of the forward pass.
    **fit_kwargs
        Passed to :func:`fit_calibrations`.

    Returns
    -------
    dict
        The card fields ``confidence_calibration``, ``confidence_threshold`` and ``conformal``.
    """
    from ..data.dataset import PatternSet
    from ..predict import predict_pointlists
    from ..validation import resolve_device
    from ..weights import load_model, resolve_weights, update_card

    sources = val_set if isinstance(val_set, (list, tuple)) else [val_set]
    sets, names = [], []
    for s in sources:
        sets.append(s if isinstance(s, PatternSet) else PatternSet.from_hdf5(s))
        names.append(str(s) if not isinstance(s, PatternSet) else "a PatternSet")
    pset = PatternSet.concatenate(sets) if len(sets) > 1 else sets[0]
    # materials of different files are the same material only if the manifest row is the same
    groups = pset.material
    dev = resolve_device(device)
    net = load_model(weights, device=dev)
    t0 = time.perf_counter()
    pred = predict_pointlists(pset.pointlists, model=net, device=dev, phases=None)  # the network's own probabilities
    logger.info("forward pass over %d patterns in %.1f s", len(pset), time.perf_counter() - t0)
    cal, conf = fit_calibrations(
        pred.crystal_system_probs, pred.space_group_probs, pset.space_group.astype(np.int64), groups,
        score=score, goal=goal, **fit_kwargs,
    )
    sha = (getattr(net, "card", None) or {}).get("sha256")
    fitted_on = f"{' + '.join(names)} ({len(pset)} patterns, {len(np.unique(groups))} materials)"
    stamp = {"fitted_on": fitted_on, "weights_sha256": sha, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    cal.info.update(stamp)
    conf.info.update(stamp)
    fields = {
        "confidence_calibration": cal.to_card(),
        "confidence_threshold": cal.threshold,
        "conformal": conf.to_card(),
    }
    if write:
        path = update_card(resolve_weights(weights), fields)
        logger.info("wrote the calibration into %s", path)
    return fields


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m py4dstem_gnn.confidence.fit`` (``py4dstem-gnn calibrate``)."""
    parser.add_argument("--weights", default="default", help="weights name or path (its JSON card is updated)")
    parser.add_argument("--val", nargs="+", required=True, help="validation pattern set(s) (HDF5)")
    parser.add_argument("--goal", type=float, default=0.9, help="accuracy goal of the default threshold")
    parser.add_argument("--score", default="margin", choices=RAW_SCORES)
    parser.add_argument("--min-block", type=int, default=40, help="fewest patterns per calibration block")
    parser.add_argument("--coverage", type=float, default=0.9, help="default coverage of the conformal sets")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dry-run", action="store_true", help="print the fields instead of writing the card")


def run_cli(args: argparse.Namespace) -> int:
    """Run the calibration command."""
    import json

    fields = calibrate_weights(
        args.weights, list(args.val), args.goal, score=args.score, write=not args.dry_run, device=args.device,
        min_block=args.min_block, default_coverage=args.coverage,
    )
    rule = fields["confidence_calibration"]["threshold_rule"]
    logger.info(
        "threshold %s: coverage %s, accuracy %s on the calibration data (goal %s, reached: %s)",
        rule["threshold"], rule["coverage"], rule["accuracy"], rule["accuracy_goal"], rule["goal_reached"],
    )
    if args.dry_run:
        print(json.dumps(fields, indent=1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m py4dstem_gnn.confidence.fit ...``."""
    from ..cli import module_main

    return module_main(configure_parser, run_cli, argv, prog="python -m py4dstem_gnn.confidence.fit",
                       description=__doc__.splitlines()[0])


if __name__ == "__main__":  # pragma: no cover - command line
    raise SystemExit(main())
