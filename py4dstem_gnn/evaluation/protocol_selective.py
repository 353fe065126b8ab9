"""Selective prediction and conformal set coverage per protocol x regime x corruption.

The protocol report (:mod:`py4dstem_gnn.evaluation.protocol_report`) scores accuracy; this module
adds what a map that abstains needs, for one network's predictions (the weights serving each
protocol, with the calibrations recorded in their card):

* the **risk–coverage curve** of the confidence the user thresholds (the card's calibrated
  confidence, or the raw margin when the card has none), one figure per protocol with a curve
  per regime x corruption, and its AURC with a group-bootstrap interval
  (:func:`~py4dstem_gnn.evaluation.selective.selective_by_condition`);
* when the card holds a threshold: the **labelled fraction** and the **accuracy of the labelled
  patterns** at it, judged against the targets of issue 15 (zone axes: >= 90 % right; random
  orientations: at most 20 % labelled unless >= 90 % right), on point estimates;
* the raw scores (``margin``, ``max_prob``, ``entropy``, and the calibrated confidence) compared
  by AURC on the protocol's zone-axis patterns, clean and corrupted pooled
  (:func:`~py4dstem_gnn.evaluation.selective.compare_scores`);
* when the card holds conformal quantiles: empirical **coverage** and mean **set size** of the
  crystal-system sets (and of the space-group sets) at each requested level and the card's
  default level (:func:`~py4dstem_gnn.confidence.conformal.prediction_sets`,
  :func:`~py4dstem_gnn.evaluation.selective.coverage_by_condition`). A cell is flagged when its
  coverage is more than 2 points below nominal *and* the nominal level lies above its interval
  (the issue's rule: within 2 points, or within the group-bootstrap interval if wider).

Intervals resample whole material groups (manifest column ``group``), as in
:func:`~py4dstem_gnn.evaluation.protocols.evaluate_protocols`. Conformal sets are valid only for
data exchangeable with their calibration data: the report names it (the card's ``fitted_on``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..confidence.calibration import raw_score
from ..confidence.conformal import mask_contains, prediction_sets
from ..labels import SG_TO_CS
from .protocols import CORRUPTIONS, PROTOCOLS, REGIMES, jsonable
from .selective import (compare_scores, coverage_by_condition, risk_coverage_curve, risk_coverage_figure,
                        selective_by_condition)

__all__ = [
    "COVERAGE_LEVELS",
    "CURVE_GRID",
    "TARGET_ACCURACY",
    "TARGET_RANDOM_LABELLED",
    "selective_protocols",
    "render_selective_markdown",
]

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


def _meta(pred: Any) -> Mapping[str, Any]:
    meta = pred.get("meta") if isinstance(pred, Mapping) else getattr(pred, "meta", None)
    return meta or {}


def _probs(pred: Any, name: str) -> np.ndarray | None:
    v = pred.get(name) if isinstance(pred, Mapping) else getattr(pred, name, None)
    return None if v is None else np.asarray(v, dtype=np.float64)


def _condition_label(regime: np.ndarray, corrupted: np.ndarray) -> np.ndarray:
    reg = np.asarray(REGIMES, dtype=object)[np.asarray(regime, dtype=np.int64)]
    cor = np.where(np.asarray(corrupted, dtype=bool), CORRUPTIONS[1], CORRUPTIONS[0])
    return np.array([f"{r}/{c}" for r, c in zip(reg, cor)], dtype=object)


def _split_condition(row: dict[str, Any]) -> dict[str, Any]:
    reg, _, corr = row.pop("regime").partition("/")
    return {"protocol": row.pop("protocol"), "regime": reg, "corruption": corr, **row}


def _cell_order(row: Mapping[str, Any]) -> tuple[int, int]:
    return REGIMES.index(row["regime"]), CORRUPTIONS.index(row["corruption"])


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


def _calibration_info(cal: Any, conformal: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"confidence": "raw margin p(1st) - p(2nd) (the card holds no confidence calibration)",
                            "threshold": None}
    if cal is not None:
        rule = cal.info.get("threshold_rule") or {}
        info.update(confidence=f"calibrated from the card (isotonic map of the raw {cal.score})",
                    threshold=cal.threshold, accuracy_goal=rule.get("accuracy_goal"),
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


def selective_protocols(
    predictions: Mapping[str, Any],
    material: np.ndarray,
    space_group: np.ndarray,
    regime: np.ndarray,
    corrupted: np.ndarray,
    manifest: Any,
    membership: Mapping[str, np.ndarray],
    *,
    weights: Mapping[str, str] | None = None,
    levels: Sequence[float] = COVERAGE_LEVELS,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    figure_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Risk–coverage, abstention at the card's threshold and conformal coverage, per protocol.

    Parameters
    ----------
    predictions : mapping
        protocol -> :class:`~py4dstem_gnn.predict.Prediction` of the network serving it, one row
        per pattern, with ``crystal_system_probs``, ``space_group_probs`` and ``meta`` (the card's
        ``confidence_calibration`` and ``conformal``, as :func:`~py4dstem_gnn.predict_pointlists`
        records them). Rows outside a protocol are ignored.
    material, space_group, regime, corrupted : numpy.ndarray
        Per pattern: manifest row, true space group (1..230), 0 zone axis / 1 random, corrupted copy.
    manifest : Manifest
        With column ``group`` (the bootstrap resamples groups).
    membership : mapping
        protocol -> ``(n,)`` bool (:func:`~py4dstem_gnn.evaluation.protocols.protocol_membership`).
    weights : mapping, optional
        protocol -> weights name or path (reported).
    levels : sequence of float
        Conformal coverage levels; the card's default level is added.
    n_boot, seed, ci
        Group bootstrap (replicates, seed, interval coverage).
    figure_dir : path, optional
        Folder for ``risk_coverage_<protocol>.png`` (no figures if None).

    Returns
    -------
    dict
        ``settings`` and ``protocols``: per protocol ``calibration`` (what the card holds and on
        which data it was fitted), ``conditions`` (per regime x corruption: ``n``, ``n_groups``,
        ``accuracy``, ``aurc``, ``curve`` and, with a threshold, ``labelled``,
        ``selective_accuracy`` and ``target``), ``score_comparison`` (zone axes pooled),
        ``coverage`` (per level and cell) and ``figure``; JSON-serialisable.
    """
    material = np.asarray(material, dtype=np.int64)
    sg_true = np.asarray(space_group, dtype=np.int64)
    cs_true = SG_TO_CS[sg_true - 1]
    group = np.asarray(manifest["group"])[material]
    cond = _condition_label(regime, corrupted)
    za = np.asarray(regime) == 0
    out_protocols = []
    for proto in PROTOCOLS:
        pred = predictions.get(proto)
        if pred is None or proto not in membership or not np.any(membership[proto]):
            continue
        probs = _probs(pred, "crystal_system_probs")
        if probs is None:
            logger.info("%s: no crystal-system probabilities, no selective figures", proto)
            continue
        sel = np.asarray(membership[proto], dtype=bool)
        meta = _meta(pred)
        cal, conformal = meta.get("confidence_calibration"), meta.get("conformal")
        conf = np.asarray(cal(probs), np.float64) if cal is not None else raw_score(probs, "margin")
        correct = probs.argmax(axis=1) == cs_true
        threshold = None if cal is None else cal.threshold
        rows = selective_by_condition(conf[sel], correct[sel], group[sel], 0.0 if threshold is None else threshold,
                                      protocol=np.full(int(sel.sum()), proto, dtype=object), regime=cond[sel],
                                      n_boot=n_boot, seed=seed, ci=ci)
        rows = sorted((_split_condition(r) for r in rows), key=_cell_order)
        curves, points = {}, {}
        for row in rows:
            s = sel & (cond == f"{row['regime']}/{row['corruption']}")
            rc = risk_coverage_curve(conf[s], correct[s])
            label = f"{row['regime']}, {row['corruption']}"
            curves[label] = rc
            row["curve"] = {"coverage": list(CURVE_GRID), "accuracy": [rc.accuracy_at(c) for c in CURVE_GRID]}
            if threshold is None:
                del row["labelled"], row["selective_accuracy"]
                row["threshold"] = None
            else:
                row["target"] = _target(row)
                points[label] = (row["labelled"]["mean"], row["selective_accuracy"]["mean"])
        entry: dict[str, Any] = {"protocol": proto, "weights": (weights or {}).get(proto),
                                 "calibration": _calibration_info(cal, conformal), "conditions": rows}
        pooled = sel & za
        if pooled.any():
            extra = {"calibrated": conf[pooled]} if cal is not None else None
            comp = compare_scores(probs[pooled], cs_true[pooled], group[pooled], extra, goal=TARGET_ACCURACY,
                                  n_boot=n_boot, seed=seed, ci=ci)
            entry["score_comparison"] = {"patterns": "zone_axis, clean and corrupted pooled",
                                         "rows": [r.as_dict() for r in comp]}
        if conformal is not None:
            entry["coverage"] = _coverage(pred, conformal, levels, sel, cs_true, sg_true, group, cond, proto,
                                          n_boot, seed, ci)
        if figure_dir is not None and curves:
            path = Path(figure_dir) / f"risk_coverage_{proto}.png"
            conf_kind = "calibrated confidence" if cal is not None else "raw margin"
            _curve_figure(curves, points, f"{proto}: risk–coverage ({conf_kind})", path)
            entry["figure"] = path.name
        out_protocols.append(entry)
    settings = {
        "n_boot": int(n_boot), "seed": int(seed), "ci": float(ci), "levels": [float(v) for v in levels],
        "target_accuracy": TARGET_ACCURACY, "target_random_labelled": TARGET_RANDOM_LABELLED,
        "coverage_shortfall_flag": _SHORTFALL,
        "correct": "argmax of the crystal-system probabilities equals the true crystal system",
    }
    return jsonable({"settings": settings, "protocols": out_protocols})


def _coverage(pred: Any, conformal: Any, levels: Sequence[float], sel: np.ndarray, cs_true: np.ndarray,
              sg_true: np.ndarray, group: np.ndarray, cond: np.ndarray, proto: str, n_boot: int, seed: int,
              ci: float) -> list[dict[str, Any]]:
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
    return sorted(rows, key=lambda r: (r["nominal"], *_cell_order(r)))


# ----------------------------------------------------------------------------- Markdown
def _pct(iv: Mapping[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    if not iv or iv.get("mean") is None:
        return "–"
    m = f"{scale * iv['mean']:.{digits}f}"
    if iv.get("low") is None:
        return m
    return f"{m} [{scale * iv['low']:.{digits}f}, {scale * iv['high']:.{digits}f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int) -> list[str]:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i < right_from else "---:" for i in range(len(header))) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def render_selective_markdown(results: Mapping[str, Any], classifier: str = "network") -> str:
    """Markdown sections of :func:`selective_protocols` output (percent, group-bootstrap intervals).

    Parameters
    ----------
    results : mapping
        Output of :func:`selective_protocols`.
    classifier : str
        Name of the classifier in the headings.

    Returns
    -------
    str
    """
    st = results["settings"]
    pct = int(round(100 * st["ci"]))
    protos = results["protocols"]
    lines = [f"## Selective prediction ({classifier})", ""]
    if not protos:
        return "\n".join(lines + ["No predictions with probabilities: nothing to report.", ""])
    lines += [
        "Risk–coverage: patterns sorted by decreasing confidence, accuracy of the labelled ones against the fraction "
        "labelled. AURC = area under the risk (1 − accuracy) curve, lower is better; intervals: "
        f"{pct} % percentile intervals over {st['n_boot']} resamples of whole material groups. The confidence is the "
        "weights card's calibrated confidence where the card holds one, else the raw margin. Targets (issue 15, "
        "judged on point estimates at the card's default threshold): zone axes "
        f"≥ {100 * st['target_accuracy']:.0f} % "
        f"of labelled patterns right; random orientations at most {100 * st['target_random_labelled']:.0f} % labelled "
        f"unless ≥ {100 * st['target_accuracy']:.0f} % right.", "",
    ]
    rows = []
    for p in protos:
        c = p["calibration"]
        thr = "–" if c.get("threshold") is None else f"{c['threshold']:.4g}"
        goal = "" if c.get("accuracy_goal") is None else f" (goal {100 * c['accuracy_goal']:.0f} %)"
        rows.append([p["protocol"], str(p.get("weights") or "–"), c["confidence"], thr + goal,
                     c.get("confidence_fitted_on", "–")])
    lines += _table(["protocol", "weights", "confidence", "default threshold", "confidence calibrated on"], rows, 5)
    head = ["protocol", "regime", "corruption", "patterns", "groups", "accuracy (all)", "AURC %",
            "labelled %", "accuracy of labelled %", "target"]
    rows = []
    for p in protos:
        for r in p["conditions"]:
            t = r.get("target")
            rows.append([p["protocol"], r["regime"], r["corruption"], str(r["n"]), str(r["n_groups"]),
                         _pct(r["accuracy"]), _pct(r["aurc"]), _pct(r.get("labelled")),
                         _pct(r.get("selective_accuracy")),
                         "–" if t is None else ("met" if t["met"] else "**missed**") + f" ({t['rule']})"])
    lines += ["### Risk–coverage and abstention at the card's threshold", ""]
    lines += _table(head, rows, 3)
    figs = [p for p in protos if p.get("figure")]
    for p in figs:
        lines += [f"![risk–coverage, {p['protocol']}]({p['figure']})", ""]
    comps = [p for p in protos if p.get("score_comparison")]
    if comps:
        lines += ["### Raw scores compared by AURC (zone-axis patterns, clean and corrupted pooled)", "",
                  "Same patterns and group resamples for every score of a protocol; 'minus margin' is paired "
                  "(negative = better than the margin). 'calibrated' is the card's confidence.", ""]
        for p in comps:
            head = ["score", "AURC %", "E-AURC %", "minus margin (points)",
                    f"coverage at {100 * st['target_accuracy']:.0f} % right", "accuracy at 50 % coverage"]
            rows = []
            for r in p["score_comparison"]["rows"]:
                d = r["minus_reference"]
                diff = "–" if d["mean"] is None else (f"{100 * d['mean']:+.1f}" + (
                    "" if d["low"] is None else f" [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"))
                rows.append([r["name"], _pct(r["aurc"]), f"{100 * r['e_aurc']:.1f}", diff,
                             f"{100 * r['coverage_at_goal']:.1f} %", f"{100 * r['accuracy_at_half']:.1f} %"])
            lines += [f"**{p['protocol']}** ({p.get('weights') or 'weights not named'})", ""] + _table(head, rows, 1)
    lines += _coverage_markdown(protos)
    return "\n".join(lines).rstrip() + "\n"


def _coverage_markdown(protos: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["## Conformal crystal-system sets", ""]
    with_sets = [p for p in protos if p.get("coverage")]
    without = [p["protocol"] for p in protos if not p.get("coverage")]
    if without:
        lines += [f"No conformal calibration in the card of the weights serving: {', '.join(without)}.", ""]
    if not with_sets:
        return lines
    lines += [
        "Split-conformal sets are valid only for data exchangeable with their calibration data: for `known`, a "
        "calibration on known-material validation patterns; for `unseen-*`, the split model's own validation groups. "
        "A coverage below nominal on a protocol whose calibration data are not exchangeable with it says so, and is "
        "not a fault of the method. Calibration data (the card's `fitted_on`):", "",
    ]
    fitted: dict[str, list[str]] = {}
    for p in with_sets:
        src = p["calibration"].get("conformal_fitted_on", "not stated in the card")
        lines.append(f"- `{p['protocol']}` ({p.get('weights') or 'weights not named'}): {src}; card default level "
                     f"{100 * p['calibration']['conformal_default_coverage']:.1f} %")
        fitted.setdefault(src, []).append(p["protocol"])
    lines.append("")
    for src, ps in fitted.items():
        if "known" in ps and len(ps) > 1:
            lines += [f"Note: one calibration ({src}) serves {', '.join(ps)}: it can be exchangeable with at most "
                      "one of `known` and `unseen-*`.", ""]
    lines += ["Coverage and set sizes with 95 % group-bootstrap intervals; **short** = coverage more than 2 points "
              "below nominal with the nominal level above the interval.", ""]
    head = ["protocol", "regime", "corruption", "patterns", "groups", "nominal %", "CS coverage %", "CS mean set size",
            "SG coverage %", "SG mean set size", "flag"]
    rows = []
    for p in with_sets:
        for r in p["coverage"]:
            nominal = f"{100 * r['nominal']:.1f}" + (" (card default)" if r["default_level"] else "")
            rows.append([p["protocol"], r["regime"], r["corruption"], str(r["n"]), str(r["n_groups"]), nominal,
                         _pct(r["coverage"]), _pct(r["mean_set_size"], 1.0, 2), _pct(r["sg_coverage"]),
                         _pct(r["sg_mean_set_size"], 1.0, 1), "**short**" if r["below_nominal"] else "ok"])
    return lines + _table(head, rows, 3)
