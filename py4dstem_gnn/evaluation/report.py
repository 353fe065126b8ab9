"""Rendering of the evaluation report: figures (PNG) and ``report.md``."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from ..labels import CRYSTAL_SYSTEMS

__all__ = ["render_markdown", "plot_confusions", "plot_confidence", "plot_reliability", "plot_views_curve", "plot_by_system"]

from .scoring import PAPER_FIGURES, ClassifierResult, _SHORT

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt



def _save_figure(fig, out: Path, name: str) -> str:
    """Lay out, write ``out/name`` as PNG, release the figure; returns ``name``."""
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    _plt().close(fig)
    return name

def plot_confusions(results: list[ClassifierResult], out: Path, k: int) -> str:
    plt = _plt()
    fig, axes = plt.subplots(len(results), 2, figsize=(10, 4.6 * len(results)), squeeze=False)
    for row, res in enumerate(results):
        mats = [
            (np.asarray(res.numbers["cs_confusion"]), "single pattern"),
            (np.asarray(res.numbers["multiview_log"]["cs_confusion_first_draw"]), f"{k} views (draw 1)"),
        ]
        for col, (cm, title) in enumerate(mats):
            ax = axes[row, col]
            norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
            for i in range(cm.shape[0]):
                for j in range(cm.shape[1]):
                    if cm[i, j]:
                        ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
            ax.set_xticks(range(7), _SHORT, rotation=45, fontsize=8)
            ax.set_yticks(range(7), _SHORT, fontsize=8)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(f"{res.label}\n{title} (% of true class)", fontsize=9)
    return _save_figure(fig, out, "confusion_crystal_system.png")


def plot_confidence(results: list[ClassifierResult], cs_true: np.ndarray, out: Path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 3.8), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, res in zip(axes[0], results):
        ok = res.cs_pred == cs_true
        ax.hist([res.cs_conf[ok], res.cs_conf[~ok]], bins=bins, stacked=True,
                label=["correct", "wrong"], color=["tab:green", "tab:red"])
        ax.set_xlabel("crystal-system probability of the prediction")
        ax.set_ylabel("patterns")
        ax.set_title(res.label, fontsize=9)
        ax.legend(fontsize=8)
    return _save_figure(fig, out, "confidence_histogram.png")


def plot_reliability(results: list[ClassifierResult], cs_true: np.ndarray, out: Path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 4.2), squeeze=False)
    for ax, res in zip(axes[0], results):
        ok = res.cs_pred == cs_true
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        for conf, lab, style in ((res.cs_conf, "raw", "o-"), (res.cs_conf_scaled, "temperature-scaled", "s--")):
            if conf is None:
                continue
            b = M.reliability_bins(conf, ok, 10)
            sel = b["count"] > 0
            ece = M.expected_calibration_error(conf, ok)
            ax.plot(b["confidence"][sel], b["accuracy"][sel], style, label=f"{lab} (ECE {100 * ece:.1f}%)")
        ax.set_xlabel("confidence (CS probability)")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(res.label, fontsize=9)
        ax.legend(fontsize=8)
    return _save_figure(fig, out, "reliability_crystal_system.png")


def plot_views_curve(results: list[ClassifierResult], out: Path) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for res in results:
        c = res.numbers["views_curve"]
        k = [e["k"] for e in c]
        for key, ls in (("cs", "-"), ("sg", "--")):
            ax.errorbar(k, [100 * e[f"{key}_mean"] for e in c], yerr=[100 * e[f"{key}_std"] for e in c],
                        ls=ls, marker="o", capsize=3, label=f"{res.key} {key.upper()}")
        p = PAPER_FIGURES.get(res.key)
        if p:
            ax.scatter([1, 10, 1, 10], [p["single"][0], p["multi"][0], p["single"][1], p["multi"][1]],
                       marker="*", s=80, zorder=5, label=f"{res.key} paper (CS, SG)")
    ax.set_xlabel("views combined per material")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    return _save_figure(fig, out, "accuracy_vs_views.png")


def plot_by_system(results: list[ClassifierResult], out: Path, k: int) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    x = np.arange(7)
    series = []
    for res in results:
        series.append((f"{res.key} single", res.numbers["cs_prf"]["recall"], res.numbers["sg_accuracy_by_system"]))
        mv = res.numbers["multiview_log"]
        series.append((f"{res.key} {k} views", mv["cs_accuracy_by_system"], mv["sg_accuracy_by_system"]))
    w = 0.8 / max(len(series), 1)
    for i, (lab, cs_acc, sg_acc) in enumerate(series):
        for ax, vals in ((axes[0], cs_acc), (axes[1], sg_acc)):
            v = np.asarray([np.nan if a is None else a for a in vals], dtype=float) if len(vals) else np.full(7, np.nan)
            ax.bar(x + (i - (len(series) - 1) / 2) * w, 100 * np.nan_to_num(v), w, label=lab)
    for ax, t in ((axes[0], "crystal-system accuracy (recall) by true system"),
                  (axes[1], "space-group accuracy by true crystal system")):
        ax.set_xticks(x, _SHORT, rotation=30)
        ax.set_ylim(0, 100)
        ax.set_ylabel("%")
        ax.set_title(t, fontsize=10)
        ax.legend(fontsize=7)
    return _save_figure(fig, out, "accuracy_by_crystal_system.png")


# ----------------------------------------------------------------------------- markdown
def _pct(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{100 * float(v):.{digits}f}"


def _gap(ours: float, paper: float) -> str:
    d = 100 * ours - paper
    return f"{d:+.1f} pp ({'above' if d >= 0 else 'below'} the paper's {paper:.1f})"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or "unknown"
    except Exception:  # noqa: BLE001
        return "unknown"


def render_markdown(
    results: list[ClassifierResult],
    figures: list[str],
    info: dict[str, Any],
    k: int,
    n_draws: int,
) -> str:
    L: list[str] = []
    L.append("# Evaluation report: crystal system and space group from spot patterns\n")
    L.append(f"Generated {info['date']} by `{info['command']}` (git {info['git']}).\n")
    L.append(f"- Test set: `{info['test']}` — {info['n_patterns']} patterns of {info['n_materials']} "
             f"materials; attributes: {json.dumps(info['test_attrs'], default=str)[:600]}")
    L.append(f"- Multi-view: {k} patterns drawn at random per material (without replacement; all of a "
             f"material's patterns if it has fewer), {n_draws} draws with seed {info['seed']}; "
             "figures are mean ± standard deviation over draws. Views are combined with the package rule "
             "(`aggregate_views`: normalised geometric mean of the probabilities).")
    L.append(f"- Machine: {info['machine']}.\n")

    L.append("## Headline: accuracy against the published figures (%)\n")
    L.append("| classifier | CS, 1 pattern | SG, 1 pattern | CS, %d views | SG, %d views |" % (k, k))
    L.append("|---|---|---|---|---|")
    for r in results:
        n, mv = r.numbers, r.numbers["multiview_log"]
        L.append(f"| {r.label} — this run | {_pct(n['cs_accuracy'])} ± {_pct(n['cs_accuracy_boot_std'])} | "
                 f"{_pct(n['sg_accuracy'])} ± {_pct(n['sg_accuracy_boot_std'])} | "
                 f"{_pct(mv['cs_mean'])} ± {_pct(mv['cs_std'])} [{_pct(mv['cs_boot_std'])}] | "
                 f"{_pct(mv['sg_mean'])} ± {_pct(mv['sg_std'])} [{_pct(mv['sg_boot_std'])}] |")
        p = PAPER_FIGURES.get(r.key)
        if p:
            L.append(f"| {r.label} — paper | {p['single'][0]:.1f} | {p['single'][1]:.1f} | "
                     f"{p['multi'][0]:.1f} | {p['multi'][1]:.1f} |")
    L.append("")
    L.append("Spreads: single pattern ± standard deviation of a bootstrap over materials (patterns of one "
             f"material are not independent); {k} views ± standard deviation over the {n_draws} random draws "
             "of views, and in brackets the bootstrap standard deviation over materials (first draw). When every "
             f"material has exactly {k} patterns all draws coincide and only the bootstrap spread is informative.\n")
    L.append("Gap to the paper (this run minus paper, percentage points):\n")
    for r in results:
        p = PAPER_FIGURES.get(r.key)
        if not p:
            continue
        n, mv = r.numbers, r.numbers["multiview_log"]
        L.append(f"- **{r.label}**: CS single {_gap(n['cs_accuracy'], p['single'][0])}; "
                 f"SG single {_gap(n['sg_accuracy'], p['single'][1])}; "
                 f"CS {k}-view {_gap(mv['cs_mean'], p['multi'][0])}; "
                 f"SG {k}-view {_gap(mv['sg_mean'], p['multi'][1])}.")
    if len(results) == 2:
        a, b = results
        L.append(f"- **{a.key} minus {b.key}** on the same patterns: CS single "
                 f"{100 * (a.numbers['cs_accuracy'] - b.numbers['cs_accuracy']):+.1f} pp, SG single "
                 f"{100 * (a.numbers['sg_accuracy'] - b.numbers['sg_accuracy']):+.1f} pp, CS {k}-view "
                 f"{100 * (a.numbers['multiview_log']['cs_mean'] - b.numbers['multiview_log']['cs_mean']):+.1f} pp, "
                 f"SG {k}-view "
                 f"{100 * (a.numbers['multiview_log']['sg_mean'] - b.numbers['multiview_log']['sg_mean']):+.1f} pp "
                 "(paper: +15.0, +12.4, +11.0, +11.0).")
    L.append("")
    L.append("Other aggregation rule (arithmetic mean of probabilities, soft vote), %d views:\n" % k)
    for r in results:
        mv = r.numbers["multiview_mean"]
        L.append(f"- {r.label}: CS {_pct(mv['cs_mean'])} ± {_pct(mv['cs_std'])}, "
                 f"SG {_pct(mv['sg_mean'])} ± {_pct(mv['sg_std'])}")
    L.append("")

    L.append("Accuracy against the number of views combined per material (mean ± std over draws, %):\n")
    ks = [c["k"] for c in results[0].numbers["views_curve"]]
    L.append("| classifier | " + " | ".join(f"CS k={kk} | SG k={kk}" for kk in ks) + " |")
    L.append("|---|" + "---|---|" * len(ks))
    for r in results:
        L.append(f"| {r.label} | " + " | ".join(
            f"{_pct(c['cs_mean'])} ± {_pct(c['cs_std'])} | {_pct(c['sg_mean'])} ± {_pct(c['sg_std'])}"
            for c in r.numbers["views_curve"]) + " |")
    L.append("")

    L.append("## Per crystal system: precision / recall / F1, single pattern (Table 2 layout, %)\n")
    head = "| crystal system | support |" + "".join(f" {r.key} P | {r.key} R | {r.key} F1 |" for r in results)
    L.append(head)
    L.append("|---|---|" + "---|---|---|" * len(results))
    support = results[0].numbers["cs_prf"]["support"]
    for c, name in enumerate(CRYSTAL_SYSTEMS):
        row = f"| {name} | {support[c]} |"
        for r in results:
            prf = r.numbers["cs_prf"]
            row += f" {_pct(prf['precision'][c])} | {_pct(prf['recall'][c])} | {_pct(prf['f1'][c])} |"
        L.append(row)
    for agg, lab in (("macro", "macro average"),):
        row = f"| {lab} | {sum(support)} |"
        for r in results:
            prf = r.numbers["cs_prf"]
            row += f" {_pct(prf['macro_precision'])} | {_pct(prf['macro_recall'])} | {_pct(prf['macro_f1'])} |"
        L.append(row)
    row = f"| weighted F1 / accuracy | {sum(support)} |"
    for r in results:
        prf = r.numbers["cs_prf"]
        row += f" – | {_pct(prf['accuracy'])} | {_pct(prf['weighted_f1'])} |"
    L.append(row)
    L.append("")

    L.append("## Space-group accuracy by true crystal system (Table 4 layout, %)\n")
    L.append("| crystal system | patterns |" + "".join(f" {r.key} 1 pattern | {r.key} {k} views |" for r in results))
    L.append("|---|---|" + "---|---|" * len(results))
    counts = results[0].numbers["n_by_system"]
    for c, name in enumerate(CRYSTAL_SYSTEMS):
        row = f"| {name} | {counts[c]} |"
        for r in results:
            mv = r.numbers["multiview_log"]["sg_accuracy_by_system"]
            row += f" {_pct(r.numbers['sg_accuracy_by_system'][c])} | {_pct(mv[c] if mv else None)} |"
        L.append(row)
    L.append("")

    L.append("## Calibration (expected calibration error, 15 equal-width bins, %)\n")
    L.append("| classifier | ECE CS | ECE SG | T (CS) | T (SG) | ECE CS scaled | ECE SG scaled | "
             "NLL CS → scaled | temperature fitted on | helps? |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        c = r.numbers["calibration"]
        tcs = ", ".join(f"{t:.2f}" for t in c["t_cs"]) or "–"
        tsg = ", ".join(f"{t:.2f}" for t in c["t_sg"]) or "–"
        L.append(f"| {r.label} | {_pct(c['ece_cs'])} | {_pct(c['ece_sg'])} | {tcs} | {tsg} | "
                 f"{_pct(c['ece_cs_scaled'])} | {_pct(c['ece_sg_scaled'])} | "
                 f"{c['nll_cs']:.3f} → {c['nll_cs_scaled']:.3f} | {c['temperature_source']} | "
                 f"{'yes' if c['scaling_helps'] else 'no'} |")
    L.append("\nThe confidence of an ECE is the probability of the predicted class (crystal system; space "
             "group within it). Temperature scaling divides the log-probabilities by T; it never changes "
             "the predicted labels. The `confidence` field of a `Prediction` (margin of the two largest "
             "crystal-system probabilities) is a different quantity and is not calibrated here.\n")

    L.append("## Time per pattern\n")
    L.append("| classifier | featurisation (ms) | classification (ms) | total (ms) | threads / jobs | device |")
    L.append("|---|---|---|---|---|---|")
    for r in results:
        t = r.timings
        if r.key == "rf":
            L.append(f"| {r.label} | {t.get('featurize_per_pattern_ms', float('nan')):.3f} | "
                     f"{t.get('forest_per_pattern_ms', float('nan')):.3f} | {t.get('per_pattern_ms', float('nan')):.3f} | "
                     f"{t.get('threads', '')} | {t.get('device', '')} |")
        else:
            L.append(f"| {r.label} | (inside the model) | {t.get('per_pattern_ms', float('nan')):.3f} | "
                     f"{t.get('per_pattern_ms', float('nan')):.3f} | {t.get('threads', '')} | {t.get('device', '')} |")
    L.append("\nWall-clock over the whole test set in one process (model loading excluded; the model's time "
             "includes direct-beam removal, padding and the forward pass). Measured on a shared machine: "
             "treat as indicative.\n")

    if info.get("rf_info"):
        L.append("## Random-forest training\n")
        L.append("```json\n" + json.dumps(info["rf_info"], indent=2, default=str)[:4000] + "\n```\n")

    L.append("## Figures\n")
    captions = {
        "confusion_crystal_system.png": "Crystal-system confusion matrices (row-normalised, %), single pattern "
        f"and {k} views.",
        "confidence_histogram.png": "Confidence histograms (Fig. 1 style): probability of the predicted crystal "
        "system, correct and wrong predictions stacked.",
        "reliability_crystal_system.png": "Reliability diagrams of the crystal-system head, raw and "
        "temperature-scaled.",
        "accuracy_by_crystal_system.png": f"Accuracy by true crystal system, single pattern and {k} views.",
        "accuracy_vs_views.png": "Accuracy against the number of views combined per material (stars: paper).",
    }
    for f in figures:
        L.append(f"![{f}]({f})\n\n*{captions.get(f, f)}*\n")
    L.append("All numbers are in `results.json` next to this file.\n")
    return "\n".join(L)


