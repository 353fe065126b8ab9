"""Accuracy per evaluation protocol, orientation regime and input, with group-bootstrap intervals.

The three protocols (``docs/design.md``) are scored on one set of held-out patterns, each
pattern tagged with its material, its regime (0 zone axis, 1 random orientation), its input
(``"clean"``: the simulator's spot lists; ``"detected:<preset>"``: rendered on that detector preset
and found by py4DSTEM's ``find_Bragg_disks``; any other name) and whether it is the corrupted copy
(the seeded ``AugmentConfig`` corruption):

* ``known``: every pattern (by default; the materials may be in the training pool, the
  orientations are fresh);
* ``unseen-material``: patterns of materials with ``split_material == "test"``;
* ``unseen-type``: patterns of materials with ``split_type == "test"``.

For each protocol x regime x input x corruption and each classifier (the network, the random forest,
the gradient-boosting reference, any name -> prediction), :func:`evaluate_protocols` gives the
crystal-system (CS) and space-group (SG) accuracy from one pattern and after combining ``k``
patterns (views) of each material (seeded draws, :func:`~py4dstem_gnn.evaluation.metrics.draw_views`,
probabilities combined by :func:`~py4dstem_gnn.evaluation.metrics.aggregate_probs` and labelled
by :func:`~py4dstem_gnn.evaluation.metrics.consistent_argmax`), each with a percentile interval
that resamples whole material groups (manifest column ``group``;
:mod:`py4dstem_gnn.evaluation.bootstrap`). One set of group resamples serves a protocol x regime,
so that differences -- network minus each baseline, clean minus corrupted, clean minus detected
(:data:`CLEAN` input minus each other input; the view draws are seeded alike, so sets whose rows are
the same patterns get the same views) -- get paired intervals. Tables per crystal system and per group size (materials of the group in the whole
pool, bins :data:`GROUP_SIZE_BINS`) come with it; the returned dict is JSON-serialisable
(``nan`` -> ``None``) and :mod:`py4dstem_gnn.evaluation.markdown` renders it.

A multi-view accuracy is the mean over materials of the share of draws whose combined label is
right; its interval resamples groups of materials. A material with fewer than ``k`` patterns
contributes all of them (the tables give the views per material).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..labels import CRYSTAL_SYSTEMS, N_CRYSTAL_SYSTEMS, SG_TO_CS
from . import metrics as M

__all__ = [
    "PROTOCOLS",
    "REGIMES",
    "CORRUPTIONS",
    "CLEAN",
    "DEFAULT_VIEWS",
    "GROUP_SIZE_BINS",
    "protocol_membership",
    "evaluate_protocols",
    "multiview_correct",
    "labels_and_probs",
    "field",
    "input_labels",
    "condition_name",
    "per_protocol",
    "jsonable",
]

PROTOCOLS: tuple[str, ...] = ("known", "unseen-material", "unseen-type")
#: Regime names by code (the ``regime`` array of stored sets: 0 zone axis, 1 random).
REGIMES: tuple[str, ...] = ("zone_axis", "random")
CORRUPTIONS: tuple[str, ...] = ("clean", "corrupted")
#: Input of the simulator's own spot lists (the other inputs are compared with it); detected inputs are
#: named ``"detected:<preset>"``.
CLEAN: str = "clean"
#: Views combined per material (six: the known-protocol target; ten: the paper's).
DEFAULT_VIEWS: tuple[int, ...] = (6, 10)
#: Lower edges of the group-size bins (materials of the group in the pool): 1-4, 5-19, >= 20.
GROUP_SIZE_BINS: tuple[int, ...] = (1, 5, 20)
_TINY = float(np.finfo(np.float32).tiny)
_SPLIT_COLUMN = {"unseen-material": "split_material", "unseen-type": "split_type"}


def protocol_membership(material: np.ndarray, manifest: Any, known: str = "all") -> dict[str, np.ndarray]:
    """Which patterns each protocol scores.

    Parameters
    ----------
    material : numpy.ndarray
        ``(n,)`` material index of each pattern.
    manifest : Manifest
        With columns ``split_type`` and ``split_material``.
    known : {"all", "material_test"}
        ``known`` scores every pattern, or only those of ``split_material == "test"``
        materials (a uniform, class-stratified sample of the pool).

    Returns
    -------
    dict
        protocol -> ``(n,)`` bool.
    """
    material = np.asarray(material, dtype=np.int64)
    out = {}
    for p, col in _SPLIT_COLUMN.items():
        if col not in manifest.columns:
            raise KeyError(f"the manifest has no column {col!r} (py4dstem-gnn structures --resplit)")
        out[p] = np.asarray(manifest[col])[material] == "test"
    if known == "all":
        out["known"] = np.ones(len(material), bool)
    elif known == "material_test":
        out["known"] = out["unseen-material"].copy()
    else:
        raise ValueError(f"known must be 'all' or 'material_test', not {known!r}")
    return {p: out[p] for p in PROTOCOLS}


def input_labels(inputs: Any, n: int) -> tuple[np.ndarray, list[str]]:
    """Per-pattern input names and their order (:data:`CLEAN` first, then by first appearance).

    Parameters
    ----------
    inputs : str, sequence of str or None
        One name for every pattern, one per pattern, or None (all :data:`CLEAN`).
    n : int
        Number of patterns.

    Returns
    -------
    labels : numpy.ndarray of object, shape (n,)
    order : list of str
    """
    if inputs is None or isinstance(inputs, str):
        labels = np.full(n, CLEAN if inputs is None else inputs, dtype=object)
    else:
        labels = np.asarray([str(v) for v in np.asarray(inputs).ravel()], dtype=object)
        if len(labels) != n:
            raise ValueError(f"{len(labels)} input labels for {n} patterns")
    seen = list(dict.fromkeys(labels.tolist()))
    order = ([CLEAN] if CLEAN in seen else []) + [v for v in seen if v != CLEAN]
    return labels, order


def condition_name(source: str, corruption: str) -> str:
    """How a report names an input: ``clean``, ``detected:hybrid256``, ``clean+corrupted`` ..."""
    return source if corruption == CORRUPTIONS[0] else f"{source}+{corruption}"


def field(pred: Any, name: str) -> Any:
    """An attribute of a prediction object, or an entry of a mapping; None when absent."""
    if isinstance(pred, Mapping):
        return pred.get(name)
    return getattr(pred, name, None)


def labels_and_probs(pred: Any, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(cs, sg, cs_probs, sg_probs) of a Prediction-like object or mapping; probabilities may be None."""
    csp, sgp = field(pred, "crystal_system_probs"), field(pred, "space_group_probs")
    csp = None if csp is None else np.asarray(csp, dtype=np.float64)
    sgp = None if sgp is None else np.asarray(sgp, dtype=np.float64)
    cs, sg = field(pred, "crystal_system"), field(pred, "space_group")
    if cs is None or sg is None:
        if csp is None or sgp is None:
            raise ValueError("a prediction needs crystal_system and space_group labels or both probability arrays")
        cs, sg = M.consistent_argmax(csp, sgp)
    cs, sg = np.asarray(cs, dtype=np.int64), np.asarray(sg, dtype=np.int64)
    for a in (cs, sg, csp, sgp):
        if a is not None and len(a) != n:
            raise ValueError(f"a prediction has {len(a)} rows for {n} patterns")
    return cs, sg, csp, sgp


def per_protocol(predictions: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """classifier -> protocol -> prediction (a prediction given once serves every protocol)."""
    out: dict[str, dict[str, Any]] = {}
    for name, pred in predictions.items():
        if isinstance(pred, Mapping) and set(pred) <= set(PROTOCOLS) and pred:
            out[name] = {p: v for p, v in pred.items() if v is not None}
        else:
            out[name] = {p: pred for p in PROTOCOLS}
    return out


def _bin_labels(bins: Sequence[int]) -> list[str]:
    labels = []
    for i, lo in enumerate(bins):
        hi = bins[i + 1] - 1 if i + 1 < len(bins) else None
        labels.append(f">= {lo}" if hi is None else (f"{lo}" if hi == lo else f"{lo}-{hi}"))
    return labels


def _paired(reps: Mapping[tuple, tuple], stats: Sequence[str], ci: float, key_a: tuple, key_b: tuple,
            row: dict[str, Any], n_keys: int) -> dict[str, Any] | None:
    """``row`` with the paired difference a - b of every statistic both cells have; None when none."""
    for stat in stats:
        a, b = reps.get((*key_a, stat)), reps.get((*key_b, stat))
        if a is not None and b is not None:
            row[stat] = _interval(a[0] - b[0], a[1] - b[1], ci, a[2], a[3])
    return row if len(row) > n_keys else None


def _interval(mean: float, reps: np.ndarray, ci: float, n: int, ng: int) -> dict[str, Any]:
    return M.percentile_interval(mean, reps, ci, n, ng).as_dict()


def multiview_correct(
    mats: np.ndarray, cs_probs: np.ndarray, sg_probs: np.ndarray, cs_true_m: np.ndarray, sg_true_m: np.ndarray,
    draws: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Per material (sorted keys of ``mats``): share of draws whose combined CS / SG label is right.

    Views are combined with the ``"log"`` rule of :func:`~py4dstem_gnn.evaluation.metrics.aggregate_probs`
    (logarithms taken once for all draws).
    """
    cs_log = np.log(np.maximum(cs_probs, _TINY))
    sg_log = np.log(np.maximum(sg_probs, _TINY))
    cs_hits = np.zeros(len(cs_true_m))
    sg_hits = np.zeros(len(cs_true_m))
    for idx in draws:
        _, cs_agg = M.aggregate_log_probs(cs_log[idx], mats[idx])
        _, sg_agg = M.aggregate_log_probs(sg_log[idx], mats[idx])
        cs_pred, sg_pred = M.consistent_argmax(cs_agg, sg_agg)
        cs_hits += cs_pred == cs_true_m
        sg_hits += sg_pred == sg_true_m
    return cs_hits / len(draws), sg_hits / len(draws)


def evaluate_protocols(
    predictions: Mapping[str, Any],
    material: np.ndarray,
    space_group: np.ndarray,
    regime: np.ndarray,
    corrupted: np.ndarray,
    manifest: Any,
    *,
    membership: Mapping[str, np.ndarray] | None = None,
    known: str = "all",
    k_views: Sequence[int] = DEFAULT_VIEWS,
    n_draws: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    group_size_bins: Sequence[int] = GROUP_SIZE_BINS,
    inputs: Any = None,
) -> dict[str, Any]:
    """Score classifiers per protocol x regime x input x corruption (see the module docstring).

    Parameters
    ----------
    predictions : mapping
        classifier name -> a :class:`~py4dstem_gnn.predict.Prediction` (or any object or
        mapping with ``crystal_system``, ``space_group`` and/or ``crystal_system_probs``,
        ``space_group_probs``) with one row per pattern; or name -> {protocol -> such a
        prediction} when a protocol has its own weights (e.g. the network trained on the
        ``split_type`` training side for ``unseen-type``). Rows outside a protocol are
        ignored. The first name is the one the others are compared with. Multi-view figures
        need the probabilities.
    material : numpy.ndarray
        ``(n,)`` material index (manifest row) of each pattern.
    space_group : numpy.ndarray
        ``(n,)`` true space group 1..230 (the crystal system follows).
    regime : numpy.ndarray
        ``(n,)`` 0 zone axis, 1 random orientation.
    corrupted : numpy.ndarray
        ``(n,)`` bool: the pattern is the corrupted copy.
    manifest : Manifest
        Columns ``group``, ``split_type``, ``split_material``.
    membership : mapping, optional
        protocol -> ``(n,)`` bool; default :func:`protocol_membership`.
    known : str
        Passed to :func:`protocol_membership`.
    k_views : sequence of int
        Views combined per material.
    n_draws : int
        Seeded draws of the views.
    n_boot, seed, ci
        Group bootstrap (replicates, seed, coverage); the seed also drives the view draws.
    group_size_bins : sequence of int
        Lower edges of the group-size bins.
    inputs : str, sequence of str or None
        Input of every pattern (:func:`input_labels`): ``"clean"`` (default), ``"detected:<preset>"``.

    Returns
    -------
    dict
        ``settings`` (with ``inputs``), ``classifiers`` and ``cells`` (one per protocol x regime x
        input x corruption with patterns: ``input``, ``corruption``, counts, views per material, and
        per classifier ``cs_1``, ``sg_1``, ``cs_k{k}``, ``sg_k{k}`` intervals, ``by_crystal_system``,
        ``by_group_size``), then ``differences`` (first classifier minus each other, paired),
        ``corruption_cost`` (clean minus corrupted copy of each input, paired) and ``input_cost``
        (the clean input minus each other input, uncorrupted, paired), all JSON-serialisable.
    """
    material = np.asarray(material, dtype=np.int64)
    sg_true = np.asarray(space_group, dtype=np.int64)
    regime = np.asarray(regime, dtype=np.int64)
    corrupted = np.asarray(corrupted, dtype=bool)
    n = len(material)
    if not (len(sg_true) == len(regime) == len(corrupted) == n):
        raise ValueError("material, space_group, regime and corrupted must have the same length")
    source, input_order = input_labels(inputs, n)
    if np.any((sg_true < 1) | (sg_true > 230)):
        raise ValueError("space groups must lie in 1..230")
    cs_true = SG_TO_CS[sg_true - 1]
    member = dict(membership) if membership is not None else protocol_membership(material, manifest, known)
    group_all = np.asarray(manifest["group"])
    gkeys, gcounts = np.unique(group_all, return_counts=True)
    group = group_all[material]
    gsize = gcounts[np.searchsorted(gkeys, group)]
    bins = np.asarray(group_size_bins)
    bin_of = np.searchsorted(bins, gsize, side="right") - 1
    bin_names = _bin_labels(list(group_size_bins))
    classifiers = per_protocol(predictions)
    names = list(classifiers)
    parsed: dict[tuple[str, int], tuple] = {}

    def get(name: str, proto: str):
        pred = classifiers[name].get(proto)
        if pred is None:
            return None
        key = (name, id(pred))
        if key not in parsed:
            parsed[key] = labels_and_probs(pred, n)
        return parsed[key]

    cells: list[dict[str, Any]] = []
    differences: list[dict[str, Any]] = []
    costs: list[dict[str, Any]] = []
    input_costs: list[dict[str, Any]] = []
    views = sorted(set(int(k) for k in k_views))
    for pi, proto in enumerate(PROTOCOLS):
        for ri, reg in enumerate(REGIMES):
            base = np.asarray(member[proto], bool) & (regime == ri)
            if not base.any():
                continue
            _, gidx_base = np.unique(group[base], return_inverse=True)
            gidx = np.full(n, -1, dtype=np.int64)
            gidx[base] = gidx_base
            W = M.group_resampling_weights(int(gidx_base.max()) + 1, n_boot, np.random.default_rng([seed, pi, ri]))
            reps: dict[tuple[str, str, str, str], tuple[float, np.ndarray, int, int]] = {}
            for src, corr in ((s_, c_) for s_ in input_order for c_ in CORRUPTIONS):
                sel = base & (source == src) & (corrupted == (corr == "corrupted"))
                if not sel.any():
                    continue
                idx = np.flatnonzero(sel)
                mats = material[idx]
                umat, minv, mcount = np.unique(mats, return_inverse=True, return_counts=True)
                first = np.zeros(len(umat), dtype=np.int64)
                first[minv[::-1]] = np.arange(len(idx))[::-1]
                m_gidx, m_cs, m_sg, m_bin = gidx[idx][first], cs_true[idx][first], sg_true[idx][first], bin_of[idx][first]
                if np.any(sg_true[idx] != m_sg[minv]):
                    raise ValueError("the true space group must be constant within a material")
                rng = np.random.default_rng([seed, pi, ri, CORRUPTIONS.index(corr)])
                draws = {k: [M.draw_views(mats, k, rng) for _ in range(n_draws)] for k in views}
                cell: dict[str, Any] = {
                    "protocol": proto, "regime": reg, "input": src, "corruption": corr, "n_patterns": int(len(idx)),
                    "n_materials": int(len(umat)), "n_groups": int(len(np.unique(gidx[idx]))),
                    "views_per_material": {"median": float(np.median(mcount)), "min": int(mcount.min()),
                                           "max": int(mcount.max())},
                    "classifiers": {},
                }
                for name in names:
                    got = get(name, proto)
                    if got is None:
                        continue
                    cs_hat, sg_hat, csp, sgp = got
                    unit = {"1": (cs_hat[idx] == cs_true[idx], sg_hat[idx] == sg_true[idx], gidx[idx],
                                  cs_true[idx], bin_of[idx])}
                    if csp is not None and sgp is not None:
                        for k in views:
                            mc, ms = multiview_correct(mats, csp[idx], sgp[idx], m_cs, m_sg, draws[k])
                            unit[f"k{k}"] = (mc, ms, m_gidx, m_cs, m_bin)
                    res: dict[str, Any] = {}
                    by_cs = [{"crystal_system": CRYSTAL_SYSTEMS[c]} for c in range(N_CRYSTAL_SYSTEMS)]
                    by_size = [{"group_size": b} for b in bin_names]
                    for tag, (c_ok, s_ok, gi, cls, b_of) in unit.items():
                        for what, ok in (("cs", c_ok), ("sg", s_ok)):
                            stat = f"{what}_{tag}"
                            r = M.ratio_replicates(ok, gi, W)
                            reps[(src, corr, name, stat)] = r
                            res[stat] = _interval(r[0], r[1], ci, r[2], r[3])
                            for c in range(N_CRYSTAL_SYSTEMS):
                                rc = M.ratio_replicates(ok, gi, W, mask=cls == c)
                                by_cs[c][stat] = _interval(rc[0], rc[1], ci, rc[2], rc[3])
                            for b in range(len(bin_names)):
                                rb = M.ratio_replicates(ok, gi, W, mask=b_of == b)
                                by_size[b][stat] = _interval(rb[0], rb[1], ci, rb[2], rb[3])
                    res["by_crystal_system"] = by_cs
                    res["by_group_size"] = by_size
                    cell["classifiers"][name] = res
                cells.append(cell)
            stats = ["cs_1", "sg_1"] + [f"{w}_k{k}" for k in views for w in ("cs", "sg")]
            for src in input_order:
                for corr in CORRUPTIONS:
                    for other in names[1:]:
                        row = _paired(reps, stats, ci, (src, corr, names[0]), (src, corr, other), {
                            "protocol": proto, "regime": reg, "input": src, "corruption": corr, "a": names[0],
                            "b": other}, 6)
                        if row:
                            differences.append(row)
                for name in names:
                    row = _paired(reps, stats, ci, (src, "clean", name), (src, "corrupted", name),
                                 {"protocol": proto, "regime": reg, "input": src, "classifier": name}, 4)
                    if row:
                        costs.append(row)
            for src in input_order[1:] if input_order[:1] == [CLEAN] else []:
                for name in names:
                    row = _paired(reps, stats, ci, (CLEAN, "clean", name), (src, "clean", name),
                                 {"protocol": proto, "regime": reg, "input": src, "classifier": name}, 4)
                    if row:
                        input_costs.append(row)
    out = {
        "settings": {"k_views": views, "n_draws": int(n_draws), "n_boot": int(n_boot), "seed": int(seed),
                     "ci": float(ci), "group_size_bins": bin_names, "known": known, "inputs": input_order,
                     "bootstrap": "percentile interval, resampling whole material groups (manifest column group)",
                     "views": "k patterns of one material drawn without replacement; probabilities combined by the "
                     "normalised geometric mean; the accuracy is the mean over materials of the share of draws right"},
        "classifiers": names,
        "cells": cells,
        "differences": differences,
        "corruption_cost": costs,
        "input_cost": input_costs,
    }
    return _jsonable(out)


def jsonable(o: Any) -> Any:
    """Nested dicts, lists and numpy scalars as plain JSON values (non-finite floats -> None)."""
    return _jsonable(o)


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o
