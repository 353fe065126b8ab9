"""The one report: accuracy, selective prediction, conformal sets and per-classifier detail.

:func:`evaluate` scores any number of classifiers (name -> prediction object, see the package
docstring) on the same tagged patterns and returns one JSON-serialisable dict;
:func:`write_report` writes it as ``protocols.md`` / ``protocols.json`` with the figures beside
them. Sections:

* accuracy per protocol x regime x input (clean, ``detected:<preset>``, each optionally with its
  corrupted copy) x classifier, paired differences, the cost of corruption and the cost of the
  input (clean minus detected) (:func:`~py4dstem_gnn.evaluation.protocols.evaluate_protocols`);
* selective prediction per classifier and protocol: the risk–coverage curve of its confidence
  (the card's calibrated confidence where the prediction's ``meta`` holds one, the raw margin of the
  probabilities for an uncalibrated network, else the object's own ``confidence``), AURC, the
  labelled share and its accuracy at the card's threshold judged against the targets of issue 15
  (zone axes >= 90 % right; random orientations at most 20 % labelled unless >= 90 % right), raw
  scores compared by AURC on zone axes, and the coverage / size of the card's conformal sets
  (a cell is **short** when more than 2 points below nominal with nominal above its interval);
* detail on one protocol's clean patterns (:mod:`~py4dstem_gnn.evaluation.detail`): the paper's
  headline figures, precision / recall / F1 and space-group accuracy per crystal system,
  confusion matrices, calibration before and after temperature scaling, time per pattern.

Intervals resample whole material groups (manifest column ``group``). Conformal sets are valid only
for data exchangeable with their calibration data: the report names it (the card's ``fitted_on``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..confidence.calibration import raw_score
from ..confidence.conformal import mask_contains, prediction_sets
from ..labels import SG_TO_CS
from . import detail as D
from .markdown import render_report
from .protocols import (CLEAN, CORRUPTIONS, DEFAULT_VIEWS, PROTOCOLS, REGIMES, condition_name, evaluate_protocols,
                        field as _get, input_labels, jsonable, per_protocol, protocol_membership)
from .selective import (compare_scores, coverage_by_condition, risk_coverage_curve, risk_coverage_figure,
                        selective_by_condition)

__all__ = ["COVERAGE_LEVELS", "CURVE_GRID", "TARGET_ACCURACY", "TARGET_RANDOM_LABELLED", "evaluate", "write_report"]

logger = logging.getLogger(__name__)

#: Conformal levels always reported (the card's default level is added).
COVERAGE_LEVELS: tuple[float, ...] = (0.9,)
#: Coverages at which the JSON samples each risk–coverage curve.
CURVE_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 21))
#: Issue 15: accuracy of the labelled patterns at the default threshold.
TARGET_ACCURACY: float = 0.9
#: Issue 15: most patterns labelled at random orientations unless they reach :data:`TARGET_ACCURACY`.
TARGET_RANDOM_LABELLED: float = 0.2
_SHORTFALL = 0.02


def evaluate(
    classifiers: Mapping[str, Any],
    patterns: Mapping[str, Any],
    manifest: Any,
    *,
    membership: Mapping[str, np.ndarray] | None = None,
    known: str = "all",
    k_views: Sequence[int] = DEFAULT_VIEWS,
    n_draws: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    levels: Sequence[float] = COVERAGE_LEVELS,
    selective: bool = True,
    detail: str | None = "known",
    validation: Mapping[str, Any] | None = None,
    weights: Mapping[str, Mapping[str, str]] | None = None,
    figure_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score every classifier on the tagged patterns (see the module docstring).

    Parameters
    ----------
    classifiers : mapping
        name -> prediction object (or name -> {protocol -> prediction object}); the first name is
        the one the others are compared with.
    patterns : mapping
        ``material`` (manifest rows), ``space_group`` (1..230), ``regime`` (0 zone axis, 1 random)
        and optionally ``corrupted`` (bool) and ``input`` (``"clean"``, the default, or
        ``"detected:<preset>"``; one name for all patterns or one per pattern), one entry per pattern.
    manifest : Manifest
        Columns ``group``, ``split_type``, ``split_material``.
    membership, known, k_views, n_draws, n_boot, seed, ci
        As :func:`~py4dstem_gnn.evaluation.protocols.evaluate_protocols`.
    levels : sequence of float
        Conformal levels reported (with the card's default level).
    selective : bool
        Include risk–coverage, abstention and conformal coverage.
    detail : str or None
        Protocol whose uncorrupted patterns of the first input (clean when present) get the
        per-classifier detail; None: no detail.
    validation : mapping, optional
        ``space_group`` and name -> prediction on validation patterns (temperature scaling in the
        detail; without it, two-fold cross-fitting over test materials).
    weights : mapping, optional
        classifier -> {protocol -> weights name or file} (reported).
    figure_dir : path, optional
        Where the figures are written (none if None).
    """
    material = np.asarray(patterns["material"], dtype=np.int64)
    sg_true = np.asarray(patterns["space_group"], dtype=np.int64)
    regime = np.asarray(patterns["regime"], dtype=np.int64)
    corrupted = np.asarray(patterns.get("corrupted", np.zeros(len(material), bool)), dtype=bool)
    source, input_order = input_labels(patterns.get("input"), len(material))
    member = dict(membership) if membership is not None else protocol_membership(material, manifest, known)
    out = evaluate_protocols(classifiers, material, sg_true, regime, corrupted, manifest, membership=member,
                             known=known, k_views=k_views, n_draws=n_draws, n_boot=n_boot, seed=seed, ci=ci,
                             inputs=source)
    fig_dir = None if figure_dir is None else Path(figure_dir)
    if fig_dir is not None:
        fig_dir.mkdir(parents=True, exist_ok=True)
    out["figures"] = []
    if selective:
        out["selective"] = {"settings": jsonable({
            "n_boot": int(n_boot), "seed": int(seed), "ci": float(ci), "levels": [float(v) for v in levels],
            "target_accuracy": TARGET_ACCURACY, "target_random_labelled": TARGET_RANDOM_LABELLED,
            "coverage_shortfall_flag": _SHORTFALL,
            "correct": "argmax of the crystal-system probabilities equals the true crystal system"}),
            "classifiers": {}}
        for name, pred in per_protocol(classifiers).items():
            rows = _selective(name, pred, material, sg_true, regime, corrupted, source, input_order, manifest, member,
                              (weights or {}).get(name), levels, n_boot, seed, ci, fig_dir)
            if rows:
                out["selective"]["classifiers"][name] = rows
                out["figures"] += [p["figure"] for p in rows if p.get("figure")]
    if detail is not None and detail in member:
        sel = np.asarray(member[detail], bool) & ~corrupted & (source == input_order[0])
        preds = {n: p.get(detail) for n, p in per_protocol(classifiers).items()}
        preds = {n: p for n, p in preds.items() if p is not None}
        if sel.any() and preds:
            out["detail"] = D.detail(preds, sel, material, sg_true, validation=validation,
                                     k_views=max(k_views) if len(k_views) else 1, views=k_views, n_draws=n_draws,
                                     seed=seed, protocol=detail, figure_dir=fig_dir)
            out["figures"] += out["detail"].get("figures", [])
    return jsonable(out)


def write_report(payload: Mapping[str, Any], out_dir: str | Path, title: str,
                 info: Mapping[str, Any] | None = None) -> Path:
    """Write ``protocols.md`` and ``protocols.json`` (with ``info``) into ``out_dir``; returns the Markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    full = {"info": dict(info or {}), **payload}
    (out / "protocols.md").write_text(render_report(full, title=title, info=info))
    (out / "protocols.json").write_text(json.dumps(jsonable(full), indent=1, allow_nan=False) + "\n")
    logger.info("wrote %s and %s", out / "protocols.md", out / "protocols.json")
    return out / "protocols.md"


# ----------------------------------------------------------------------------- selective prediction
def _condition_label(regime: np.ndarray, corrupted: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``regime/input/corruption`` of every pattern (input names hold no ``/``)."""
    reg = np.asarray(REGIMES, dtype=object)[np.asarray(regime, dtype=np.int64)]
    cor = np.where(np.asarray(corrupted, dtype=bool), CORRUPTIONS[1], CORRUPTIONS[0])
    return np.array([f"{r}/{str(s).replace('/', '_')}/{c}" for r, s, c in zip(reg, source, cor)], dtype=object)


def _split_condition(row: dict[str, Any]) -> dict[str, Any]:
    reg, src, corr = row.pop("regime").split("/")
    return {"protocol": row.pop("protocol"), "regime": reg, "input": src, "corruption": corr, **row}


def _cell_order(row: Mapping[str, Any], input_order: Sequence[str] = (CLEAN,)) -> tuple[int, int, int]:
    src = row.get("input", CLEAN)
    order = list(input_order)
    return REGIMES.index(row["regime"]), order.index(src) if src in order else len(order), CORRUPTIONS.index(row["corruption"])


def _target(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """Issue-15 target of a cell at the card's threshold (point estimates)."""
    lab, acc = row.get("labelled"), row.get("selective_accuracy")
    if not lab:
        return None
    a = acc.get("mean") if acc else None
    right = a is not None and np.isfinite(a) and a >= TARGET_ACCURACY - 1e-12
    if row["regime"] == "zone_axis":
        return {"rule": f">= {100 * TARGET_ACCURACY:.0f} % of labelled patterns right", "met": bool(right)}
    few = lab["mean"] <= TARGET_RANDOM_LABELLED + 1e-12
    return {"rule": f"<= {100 * TARGET_RANDOM_LABELLED:.0f} % labelled unless >= {100 * TARGET_ACCURACY:.0f} % right",
            "met": bool(few or right)}


def _confidence(pred: Any, probs: np.ndarray | None) -> tuple[np.ndarray | None, str, Any]:
    """The score a user thresholds: (per-pattern score, description, calibration or None)."""
    meta = _get(pred, "meta") or {}
    cal = meta.get("confidence_calibration")
    if cal is not None and probs is not None:
        return np.asarray(cal(probs), np.float64), f"calibrated from the card (isotonic map of the raw {cal.score})", cal
    own = _get(pred, "confidence")
    if probs is not None and (own is None or meta.get("confidence_calibrated") is False):
        return raw_score(probs, "margin"), "raw margin p(1st) - p(2nd) (the card holds no confidence calibration)", None
    if own is None:
        return None, "", None
    return np.asarray(own, np.float64), "the classifier's own confidence", None


def _calibration_info(desc: str, cal: Any, conformal: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"confidence": desc, "threshold": None}
    if cal is not None:
        rule = cal.info.get("threshold_rule") or {}
        info.update(threshold=cal.threshold, accuracy_goal=rule.get("accuracy_goal"),
                    confidence_fitted_on=cal.info.get("fitted_on", "not stated in the card"))
    if conformal is not None:
        info.update(conformal_fitted_on=conformal.info.get("fitted_on", "not stated in the card"),
                    conformal_default_coverage=float(conformal.default_coverage))
    return info


def _curve_figure(curves: dict[str, Any], points: dict[str, tuple[float, float]], title: str, path: Path) -> None:
    fig = risk_coverage_figure(curves, title=title, goal=TARGET_ACCURACY)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    for label, (x, y) in points.items():
        if np.isfinite(x) and np.isfinite(y):
            colour = lines[label].get_color() if label in lines else "black"
            ax.plot([x], [100 * y], marker="o", ms=6, mfc="none", color=colour)
    if points:
        ax.plot([], [], ls="none", marker="o", mfc="none", color="black", label="card's default threshold")
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def _selective(name: str, predictions: Mapping[str, Any], material: np.ndarray, sg_true: np.ndarray,
               regime: np.ndarray, corrupted: np.ndarray, source: np.ndarray, input_order: Sequence[str],
               manifest: Any, membership: Mapping[str, np.ndarray],
               weights: Mapping[str, str] | None, levels: Sequence[float], n_boot: int, seed: int, ci: float,
               figure_dir: Path | None) -> list[dict[str, Any]]:
    """Risk–coverage, abstention at the card's threshold and conformal coverage of one classifier, per protocol."""
    cs_true = SG_TO_CS[sg_true - 1]
    group = np.asarray(manifest["group"])[material]
    cond = _condition_label(regime, corrupted, source)
    order = [str(s).replace("/", "_") for s in input_order]
    za = regime == 0
    out = []
    for proto in PROTOCOLS:
        pred = predictions.get(proto)
        if pred is None or proto not in membership or not np.any(membership[proto]):
            continue
        probs = _get(pred, "crystal_system_probs")
        probs = None if probs is None else np.asarray(probs, dtype=np.float64)
        conf, desc, cal = _confidence(pred, probs)
        if conf is None:
            logger.info("%s, %s: no confidence and no probabilities, no selective figures", name, proto)
            continue
        sel = np.asarray(membership[proto], dtype=bool)
        conformal = (_get(pred, "meta") or {}).get("conformal")
        cs_hat = probs.argmax(axis=1) if probs is not None else np.asarray(_get(pred, "crystal_system"))
        correct = cs_hat == cs_true
        threshold = None if cal is None else cal.threshold
        rows = selective_by_condition(conf[sel], correct[sel], group[sel], 0.0 if threshold is None else threshold,
                                      protocol=np.full(int(sel.sum()), proto, dtype=object), regime=cond[sel],
                                      n_boot=n_boot, seed=seed, ci=ci)
        rows = sorted((_split_condition(r) for r in rows), key=lambda r: _cell_order(r, order))
        curves, points = {}, {}
        for row in rows:
            s = sel & (cond == f"{row['regime']}/{row['input']}/{row['corruption']}")
            rc = risk_coverage_curve(conf[s], correct[s])
            label = f"{row['regime']}, {condition_name(row['input'], row['corruption'])}"
            curves[label] = rc
            row["curve"] = {"coverage": list(CURVE_GRID), "accuracy": [rc.accuracy_at(c) for c in CURVE_GRID]}
            if threshold is None:
                del row["labelled"], row["selective_accuracy"]
                row["threshold"] = None
            else:
                row["target"] = _target(row)
                points[label] = (row["labelled"]["mean"], row["selective_accuracy"]["mean"])
        entry: dict[str, Any] = {"protocol": proto, "weights": (weights or {}).get(proto),
                                 "calibration": _calibration_info(desc, cal, conformal), "conditions": rows}
        pooled = sel & za
        if pooled.any() and probs is not None:
            extra = {"calibrated": conf[pooled]} if cal is not None else None
            comp = compare_scores(probs[pooled], cs_true[pooled], group[pooled], extra, goal=TARGET_ACCURACY,
                                  n_boot=n_boot, seed=seed, ci=ci)
            entry["score_comparison"] = {"patterns": "zone_axis, every input and corrupted copy pooled",
                                         "rows": [r.as_dict() for r in comp]}
        if conformal is not None and probs is not None:
            entry["coverage"] = _coverage(pred, conformal, levels, sel, cs_true, sg_true, group, cond, proto,
                                          n_boot, seed, ci, order)
        if figure_dir is not None and curves:
            # the network keeps the figure names of the earlier protocol reports
            path = figure_dir / (f"risk_coverage_{proto}.png" if name == "network" else f"risk_coverage_{name}_{proto}.png")
            kind = "calibrated confidence" if cal is not None else ("raw margin" if "margin" in desc else "own confidence")
            _curve_figure(curves, points, f"{proto}: risk–coverage ({kind})" if name == "network"
                          else f"{name}, {proto}: risk–coverage ({kind})", path)
            entry["figure"] = path.name
        out.append(entry)
    return out


def _coverage(pred: Any, conformal: Any, levels: Sequence[float], sel: np.ndarray, cs_true: np.ndarray,
              sg_true: np.ndarray, group: np.ndarray, cond: np.ndarray, proto: str, n_boot: int, seed: int,
              ci: float, input_order: Sequence[str] = (CLEAN,)) -> list[dict[str, Any]]:
    """Coverage and set size of the conformal sets of one protocol, per level and cell."""
    rows: list[dict[str, Any]] = []
    idx = np.flatnonzero(sel)
    for level in sorted(set(float(v) for v in levels) | {float(conformal.default_coverage)}):
        try:
            sets = prediction_sets(pred, level, calibration=conformal)
        except ValueError as err:  # a level above the highest calibrated one
            logger.warning("%s: no conformal sets at %.3f (%s)", proto, level, err)
            continue
        covered = mask_contains(sets.cs_mask[idx], cs_true[idx])
        sg_cov = np.fromiter((sg_true[i] in sets.sg_sets[i] for i in idx), bool, idx.size)
        labels = np.full(idx.size, proto, dtype=object)
        kw = dict(protocol=labels, regime=cond[idx], n_boot=n_boot, seed=seed, ci=ci)
        cs_rows = coverage_by_condition(covered, sets.cs_size[idx], group[idx], nominal=sets.coverage, **kw)
        sg_rows = coverage_by_condition(sg_cov, sets.sg_size[idx], group[idx], **kw)
        for r, s in zip(cs_rows, sg_rows):
            r = _split_condition(r)
            c = r["coverage"]
            r["requested"] = level
            r["default_level"] = abs(level - conformal.default_coverage) < 1e-9
            r["below_nominal"] = bool(c["mean"] < r["nominal"] - _SHORTFALL and c["high"] < r["nominal"])
            r["sg_coverage"], r["sg_mean_set_size"] = s["coverage"], s["mean_set_size"]
            rows.append(r)
    return sorted(rows, key=lambda r: (r["nominal"], *_cell_order(r, input_order)))
