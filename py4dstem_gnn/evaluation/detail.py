"""Per-classifier detail on one protocol's clean patterns: the paper's tables and figures.

For each classifier: crystal-system (CS) and space-group (SG) accuracy from one pattern and after
combining ``k`` patterns (views) of a material (mean over seeded draws, normalised geometric mean
of the probabilities, and the arithmetic mean, or soft vote, beside it), next to the published figures
of Nathani et al. (npj Comput. Mater. 2026: network 89.2 / 70.2 % single, 96.5 / 79.5 % ten-view;
random forest 74.2 / 57.8 % and 85.5 / 68.5 %); precision / recall / F1 per crystal system (Table 2
layout) and SG accuracy by true crystal system (Table 4); confusion matrices; expected calibration
error of the top-class probability before and after temperature scaling (fitted on validation
predictions, or by two-fold cross-fitting over test materials); time per pattern when the
prediction's ``meta["timings"]`` holds it. Figures (PNG): ``confusion_crystal_system.png``,
``confidence_histogram.png``, ``reliability_crystal_system.png``, ``accuracy_vs_views.png``,
``accuracy_by_crystal_system.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..labels import CRYSTAL_SYSTEMS, N_CRYSTAL_SYSTEMS, SG_TO_CS
from . import metrics as M
from .protocols import field, labels_and_probs, multiview_correct

__all__ = ["PAPER_FIGURES", "detail"]

#: Published accuracies (%, CS then SG): one pattern and ten views (Nathani et al. 2026).
PAPER_FIGURES: dict[str, dict[str, Any]] = {
    "network": {"label": "PE-AG-GMoE", "single": (89.2, 70.2), "multi": (96.5, 79.5)},
    "forest": {"label": "random forest (Gleason et al.)", "single": (74.2, 57.8), "multi": (85.5, 68.5)},
}
PAPER_VIEWS = 10
_SHORT = [s[:5] + "." if len(s) > 6 else s for s in CRYSTAL_SYSTEMS]


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(p, dtype=np.float64), np.finfo(np.float32).tiny))


def _by_class(values: np.ndarray, cls: np.ndarray) -> list[float | None]:
    return [float(values[cls == c].mean()) if np.any(cls == c) else None for c in range(N_CRYSTAL_SYSTEMS)]


def _temperature(csp, sgp, cs_true, sg_true, cs_hat, sg_hat, material, val, seed) -> tuple[dict, np.ndarray]:
    """ECE / NLL before and after temperature scaling of both heads; the scaled CS confidence."""
    rows = np.arange(len(cs_true))
    out: dict[str, Any] = {
        "ece_cs": M.expected_calibration_error(csp[rows, cs_hat], cs_hat == cs_true),
        "ece_sg": M.expected_calibration_error(sgp[rows, sg_hat - 1], sg_hat == sg_true),
        "nll_cs": M.negative_log_likelihood(_log(csp), cs_true),
        "nll_sg": M.negative_log_likelihood(_log(sgp), sg_true - 1), "t_cs": [], "t_sg": []}
    scaled_cs, scaled_sg = np.empty_like(csp), np.empty_like(sgp)
    if val is not None:
        v_cs, v_sg, v_sg_true = val
        folds = [(None, np.ones(len(cs_true), bool))]
        out["temperature_source"] = "validation set"
    else:  # two-fold cross-fitting over materials: fit on one half, apply to the other
        keys = np.unique(material)
        fold = (np.random.default_rng(seed).permutation(len(keys)) % 2)[np.searchsorted(keys, material)]
        folds = [(fold != f, fold == f) for f in (0, 1)]
        out["temperature_source"] = "two-fold cross-fitting over test materials (no validation set given)"
    for fit, app in folds:
        if fit is not None:
            if not fit.any() or not app.any():
                scaled_cs[app], scaled_sg[app] = csp[app], sgp[app]
                continue
            v_cs, v_sg, v_sg_true = csp[fit], sgp[fit], sg_true[fit]
        t_cs = M.fit_temperature(_log(v_cs), SG_TO_CS[v_sg_true - 1])
        t_sg = M.fit_temperature(_log(v_sg), v_sg_true - 1)
        scaled_cs[app] = M.apply_temperature(_log(csp[app]), t_cs)
        scaled_sg[app] = M.apply_temperature(_log(sgp[app]), t_sg)
        out["t_cs"].append(t_cs)
        out["t_sg"].append(t_sg)
    conf_s = scaled_cs[rows, cs_hat]  # temperature keeps the argmax
    out["ece_cs_scaled"] = M.expected_calibration_error(conf_s, cs_hat == cs_true)
    out["ece_sg_scaled"] = M.expected_calibration_error(scaled_sg[rows, sg_hat - 1], sg_hat == sg_true)
    out["nll_cs_scaled"] = M.negative_log_likelihood(_log(scaled_cs), cs_true)
    out["nll_sg_scaled"] = M.negative_log_likelihood(_log(scaled_sg), sg_true - 1)
    out["scaling_helps"] = bool(out["ece_cs_scaled"] < out["ece_cs"] and out["ece_sg_scaled"] <= out["ece_sg"] + 1e-12)
    return out, conf_s


def detail(preds: Mapping[str, Any], sel: np.ndarray, material: np.ndarray, space_group: np.ndarray, *,
           validation: Mapping[str, Any] | None = None, k_views: int = PAPER_VIEWS, views: Sequence[int] = (),
           n_draws: int = 5, seed: int = 0, protocol: str = "known", figure_dir: str | Path | None = None) -> dict:
    """Tables and figures of the module docstring for the patterns ``sel`` (name -> prediction, full length)."""
    idx = np.flatnonzero(sel)
    mats, sg_true = np.asarray(material)[idx], np.asarray(space_group, dtype=np.int64)[idx]
    cs_true = SG_TO_CS[sg_true - 1]
    umat, first = np.unique(mats, return_index=True)
    m_cs, m_sg = cs_true[first], sg_true[first]
    ks = sorted({1, int(k_views), *(int(v) for v in views)})
    out: dict[str, Any] = {"protocol": protocol, "patterns": "clean", "n_patterns": int(idx.size),
                           "n_materials": int(umat.size), "k_views": int(k_views), "n_draws": int(n_draws),
                           "seed": int(seed), "classifiers": {}}
    arrays: dict[str, tuple] = {}
    for name, pred in preds.items():
        cs_hat, sg_hat, csp, sgp = labels_and_probs(pred, len(material))
        cs_hat, sg_hat = cs_hat[idx], sg_hat[idx]
        cm = M.confusion_matrix(cs_true, cs_hat, N_CRYSTAL_SYSTEMS)
        sg_by, count = M.grouped_accuracy(sg_true, sg_hat, cs_true, N_CRYSTAL_SYSTEMS)
        meta = field(pred, "meta") or {}
        r: dict[str, Any] = {"cs_accuracy": M.accuracy(cs_true, cs_hat), "sg_accuracy": M.accuracy(sg_true, sg_hat),
                             "cs_confusion": cm.tolist(), "cs_prf": M.precision_recall_f1(cm),
                             "sg_accuracy_by_system": sg_by.tolist(), "n_by_system": count.tolist(),
                             "timings": meta.get("timings")}
        conf = conf_s = None
        if csp is not None and sgp is not None:
            csp, sgp = csp[idx], sgp[idx]
            rng = np.random.default_rng([seed, 1])
            r["views_curve"] = []
            for k in ks:
                draws = [M.draw_views(mats, k, rng) for _ in range(n_draws)]
                mc, ms = multiview_correct(mats, csp, sgp, m_cs, m_sg, draws)
                r["views_curve"].append({"k": k, "cs": float(mc.mean()), "sg": float(ms.mean())})
                if k != k_views:
                    continue
                r["cs_k_by_system"], r["sg_k_by_system"] = _by_class(mc, m_cs), _by_class(ms, m_cs)
                soft = []
                for d in draws:
                    aggs = [M.aggregate_probs(p[d], mats[d], rule)[1] for rule in ("log", "mean") for p in (csp, sgp)]
                    c_log, s_log = M.consistent_argmax(aggs[0], aggs[1])
                    c_mean, s_mean = M.consistent_argmax(aggs[2], aggs[3])
                    soft.append((np.mean(c_mean == m_cs), np.mean(s_mean == m_sg)))
                    if d is draws[0]:
                        r["cs_confusion_k"] = M.confusion_matrix(m_cs, c_log, N_CRYSTAL_SYSTEMS).tolist()
                r["soft_vote"] = {"cs": float(np.mean([s[0] for s in soft])), "sg": float(np.mean([s[1] for s in soft]))}
            v = None
            if validation is not None and validation.get(name) is not None:
                _, _, v_cs, v_sg = labels_and_probs(validation[name], len(validation["space_group"]))
                v = (v_cs, v_sg, np.asarray(validation["space_group"], dtype=np.int64))
            r["calibration"], conf_s = _temperature(csp, sgp, cs_true, sg_true, cs_hat, sg_hat, mats, v, seed)
            conf = csp[np.arange(idx.size), cs_hat]
        out["classifiers"][name] = r
        arrays[name] = (cs_hat == cs_true, conf, conf_s)
    if figure_dir is not None:
        out["figures"] = _figures(out, arrays, Path(figure_dir))
    return out


# ----------------------------------------------------------------------------- figures
def _save(fig, out: Path, name: str) -> str:
    fig.savefig(out / name, dpi=110)
    return name


def _figure(*args, **kw):
    from matplotlib.figure import Figure

    fig = Figure(layout="constrained", **kw)
    return fig, fig.subplots(*args, squeeze=False)


def _denominator(res: Mapping[str, Any]) -> str:
    """What every detail figure counts: the protocol's clean patterns, both regimes pooled."""
    return (f"{res['protocol']}: clean patterns, zone axes and random orientations pooled\n"
            f"(n = {res['n_patterns']:,} patterns of {res['n_materials']:,} materials)")


def _figures(res: Mapping[str, Any], arrays: Mapping[str, tuple], out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    names, k = list(res["classifiers"]), res["k_views"]
    cls = res["classifiers"]
    denominator = _denominator(res)
    fig, axes = _figure(len(names), 2, figsize=(10, 4.6 * len(names)))
    for row, name in enumerate(names):
        for col, (key, title) in enumerate((("cs_confusion", "single pattern"), ("cs_confusion_k", f"{k} views (draw 1)"))):
            ax = axes[row, col]
            if key not in cls[name]:
                ax.set_axis_off()
                continue
            cm = np.asarray(cls[name][key])
            norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
            for i, j in zip(*np.nonzero(cm)):
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
            ax.set_xticks(range(7), _SHORT, rotation=45, fontsize=8)
            ax.set_yticks(range(7), _SHORT, fontsize=8)
            ax.set(xlabel="predicted", ylabel="true")
            ax.set_title(f"{name}: {title} (% of true class)", fontsize=9)
    fig.suptitle(denominator, fontsize=9)
    files = [_save(fig, out, "confusion_crystal_system.png")]
    scored = [n for n in names if arrays[n][1] is not None]
    if scored:
        fig, axes = _figure(1, len(scored), figsize=(5.2 * len(scored), 3.8))
        fig2, axes2 = _figure(1, len(scored), figsize=(4.6 * len(scored), 4.2))
        for ax, ax2, name in zip(axes[0], axes2[0], scored):
            ok, conf, conf_s = arrays[name]
            ax.hist([conf[ok], conf[~ok]], bins=np.linspace(0, 1, 21), stacked=True, label=["correct", "wrong"],
                    color=["tab:green", "tab:red"])
            ax.set(xlabel="crystal-system probability of the prediction", ylabel="patterns")
            ax2.plot([0, 1], [0, 1], "k:", lw=1)
            for c, lab, style in ((conf, "raw", "o-"), (conf_s, "temperature-scaled", "s--")):
                b = M.reliability_bins(c, ok, 10)
                s = b["count"] > 0
                ece = M.expected_calibration_error(c, ok)
                ax2.plot(b["confidence"][s], b["accuracy"][s], style, label=f"{lab} (ECE {100 * ece:.1f}%)")
            ax2.set(xlabel="confidence (CS probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
            for a in (ax, ax2):
                a.set_title(name, fontsize=9)
                a.legend(fontsize=8)
        fig.suptitle(denominator, fontsize=9)
        fig2.suptitle(denominator, fontsize=9)
        files += [_save(fig, out, "confidence_histogram.png"), _save(fig2, out, "reliability_crystal_system.png")]
    fig, axes = _figure(1, 1, figsize=(6, 4))
    ax = axes[0, 0]
    for name in scored:
        c = cls[name]["views_curve"]
        for key, ls in (("cs", "-"), ("sg", "--")):
            ax.plot([e["k"] for e in c], [100 * e[key] for e in c], ls=ls, marker="o", label=f"{name} {key.upper()}")
        p = PAPER_FIGURES.get(name)
        if p:
            ax.scatter([1, PAPER_VIEWS] * 2, [p["single"][0], p["multi"][0], p["single"][1], p["multi"][1]],
                       marker="*", s=80, zorder=5, label=f"{name}: paper (CS, SG)")
    ax.set(xlabel="views combined per material", ylabel="accuracy (%)", ylim=(0, 100))
    ax.set_title(denominator, fontsize=8)
    ax.legend(fontsize=7)
    files.append(_save(fig, out, "accuracy_vs_views.png"))
    fig, axes = _figure(1, 2, figsize=(12, 4))
    series = []
    for name in names:
        r = cls[name]
        series.append((f"{name} single", r["cs_prf"]["recall"], r["sg_accuracy_by_system"]))
        if "cs_k_by_system" in r:
            series.append((f"{name} {k} views", r["cs_k_by_system"], r["sg_k_by_system"]))
    w, x = 0.8 / max(len(series), 1), np.arange(7)
    for i, (lab, cs_acc, sg_acc) in enumerate(series):
        for ax, vals in ((axes[0, 0], cs_acc), (axes[0, 1], sg_acc)):
            v = np.asarray([np.nan if a is None else a for a in vals], dtype=float)
            ax.bar(x + (i - (len(series) - 1) / 2) * w, 100 * np.nan_to_num(v), w, label=lab)
    n_by = cls[names[0]]["n_by_system"] if names else [0] * 7
    for ax, t in ((axes[0, 0], "crystal-system accuracy (recall) by true system"),
                  (axes[0, 1], "space-group accuracy by true crystal system")):
        ax.set_xticks(x, [f"{s}\nn = {n:,}" for s, n in zip(_SHORT, n_by)], rotation=0, fontsize=8)
        ax.set(ylim=(0, 100), ylabel="%")
        ax.set_title(t, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(denominator + f"; bars: single patterns (n per class below) and {k} views per material",
                 fontsize=9)
    files.append(_save(fig, out, "accuracy_by_crystal_system.png"))
    return files
