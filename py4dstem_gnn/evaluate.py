"""Evaluation report: PE-AG-GMoE and the random-forest baseline side by side.

``py4dstem-gnn evaluate`` scores one or two classifiers on a stored pattern set (normally the
held-out Bloch-wave test materials) and writes ``report.md``, ``results.json`` and PNG figures:

* overall crystal-system (CS) and space-group (SG) accuracy, from one pattern and after combining
  ``k`` (10) random patterns (orientations) of each material — repeated over seeded draws and
  reported as mean ± standard deviation — next to the published figures of Nathani et al.
  (npj Comput. Mater. 2026; model 89.2 / 70.2 % single, 96.5 / 79.5 % ten-view; random forest
  74.2 / 57.8 % and 85.5 / 68.5 %), with the gap to each stated;
* per-crystal-system precision / recall / F1 (Table 2 layout) and SG accuracy grouped by true
  crystal system (Table 4 layout);
* confusion matrices and confidence histograms (Fig. 1 style), reliability diagrams, expected
  calibration error before and after temperature scaling (fitted on a validation set, or by
  two-fold cross-fitting over test materials when none is given — the report says which);
* featurisation and inference time per pattern.

Views are combined with the package's rule (:func:`py4dstem_gnn.inference.aggregate_views`:
normalised geometric mean of the probabilities) for both classifiers; the arithmetic mean (soft
vote) is reported too.

The random forest comes from a file written by :meth:`RandomForestBaseline.save` (``--rf``) or is
trained here (:func:`train_rf`) on patterns of the *training* materials: drawn from the same
kinematic pattern source the model trains on (same structure-factor library, split, sampling
and realism augmentations; ``--rf-train-library``) and/or from stored pattern sets
(``--rf-train-set``). Without weights (``--weights none``) the report is RF-only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import metrics as M
from .labels import CRYSTAL_SYSTEMS, N_CRYSTAL_SYSTEMS, SG_TO_CS

__all__ = [
    "PAPER_FIGURES",
    "card_evaluation",
    "update_card_evaluation",
    "ClassifierResult",
    "load_pattern_set",
    "predict_model",
    "predict_rf",
    "score",
    "train_rf",
    "evaluate",
    "configure_parser",
    "run_cli",
]

logger = logging.getLogger(__name__)

#: Published accuracies (%) of Nathani et al. (2026), Bloch-wave test patterns, 20 nm:
#: (crystal system, space group) from one pattern and from ten zone axes.
PAPER_FIGURES: dict[str, dict[str, tuple[float, float]]] = {
    "model": {"single": (89.2, 70.2), "multi": (96.5, 79.5)},
    "rf": {"single": (74.2, 57.8), "multi": (85.5, 68.5)},
}

_LABELS = {"model": "PE-AG-GMoE (this package)", "rf": "Random forest (Gleason et al., re-implemented)"}
_SHORT = [s[:5] + "." if len(s) > 6 else s for s in CRYSTAL_SYSTEMS]


# ----------------------------------------------------------------------------- data
def load_pattern_set(source: Any, group: str | None = None) -> Any:
    """A pattern set from an HDF5 path (via ``PatternSet.from_hdf5``), a folder of simulation shards
    (``shard_*.h5``, via :func:`py4dstem_gnn.simulate.read_shards`) or an object passed through.

    The object needs ``pointlists``, ``space_group``, ``crystal_system`` and ``material``.
    """
    if hasattr(source, "pointlists"):
        return source
    if Path(source).is_dir():  # a folder of finished simulation shards (partial sets)
        from .simulate import read_shards

        return read_shards(sorted(Path(source).glob("shard_*.h5")))[0]
    from .dataset import PatternSet

    if group is None:
        return PatternSet.from_hdf5(source)
    return PatternSet.from_hdf5(source, group)


def _set_attrs(pset: Any) -> dict[str, Any]:
    attrs = getattr(pset, "attrs", None) or getattr(pset, "meta", None) or {}
    out = {}
    for k, v in dict(attrs).items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if isinstance(v, bytes):
            v = v.decode(errors="replace")
        out[str(k)] = v
    return out


# ----------------------------------------------------------------------------- prediction
def predict_model(
    pointlists: Sequence[np.ndarray],
    model: Any = "default",
    device: str = "auto",
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[Any, dict[str, float]]:
    """Predictions of PE-AG-GMoE and timings (model loading excluded).

    Returns
    -------
    prediction : py4dstem_gnn.inference.Prediction
    timings : dict
        ``load_s``, ``predict_s`` (beam removal, padding and forward pass, whole set),
        ``per_pattern_ms``, ``threads``, ``device``.
    """
    import torch

    from .inference import predict_pointlists, resolve_device
    from .weights import load_model

    dev = resolve_device(device)
    t0 = time.perf_counter()
    net = load_model(model, device=str(dev))
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = predict_pointlists(pointlists, model=net, device=dev, batch_size=batch_size, progress=progress)
    t_pred = time.perf_counter() - t0
    n = max(len(pointlists), 1)
    return pred, {
        "load_s": t_load,
        "predict_s": t_pred,
        "per_pattern_ms": 1e3 * t_pred / n,
        "threads": int(torch.get_num_threads()),
        "device": str(dev),
    }


def predict_rf(pointlists: Sequence[np.ndarray], rf: Any, progress: bool = False) -> tuple[Any, dict[str, float]]:
    """Predictions of the random forest and timings (featurisation and forests separately)."""
    from .baseline import featurize

    t0 = time.perf_counter()
    X, counts = featurize(pointlists, rf.featurizer, progress=progress, return_counts=True)
    t_feat = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = rf.predict_features(X, counts)
    t_pred = time.perf_counter() - t0
    n = max(len(pointlists), 1)
    return pred, {
        "featurize_s": t_feat,
        "predict_s": t_pred,
        "featurize_per_pattern_ms": 1e3 * t_feat / n,
        "forest_per_pattern_ms": 1e3 * t_pred / n,
        "per_pattern_ms": 1e3 * (t_feat + t_pred) / n,
        "threads": int(rf.n_jobs),
        "device": "cpu",
    }


# ----------------------------------------------------------------------------- scoring
@dataclass
class ClassifierResult:
    """Scores of one classifier on one pattern set (see :func:`score`)."""

    key: str
    label: str
    numbers: dict[str, Any]
    cs_pred: np.ndarray
    sg_pred: np.ndarray
    cs_conf: np.ndarray
    cs_conf_scaled: np.ndarray | None
    multiview: dict[str, M.MultiViewResult]
    timings: dict[str, Any] = field(default_factory=dict)


def _nanmean_rows(a: np.ndarray) -> list[float]:
    """Column means ignoring nan (nan where a column has no finite value)."""
    a = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(a)
    n = ok.sum(axis=0)
    s = np.where(ok, a, 0.0).sum(axis=0)
    return np.divide(s, n, out=np.full(a.shape[1], np.nan), where=n > 0).tolist()


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(p, dtype=np.float64), np.finfo(np.float32).tiny))


def _calibration(
    cs_probs: np.ndarray,
    sg_probs: np.ndarray,
    cs_true: np.ndarray,
    sg_true: np.ndarray,
    cs_pred: np.ndarray,
    sg_pred: np.ndarray,
    material: np.ndarray,
    val: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
    seed: int,
) -> tuple[dict[str, Any], np.ndarray]:
    """ECE before/after temperature scaling of both heads; returns numbers and scaled CS confidence."""
    n = len(cs_true)
    rows = np.arange(n)
    out: dict[str, Any] = {}
    cs_conf = cs_probs[rows, cs_pred]
    sg_conf = sg_probs[rows, sg_pred - 1]
    out["ece_cs"] = M.expected_calibration_error(cs_conf, cs_pred == cs_true)
    out["ece_sg"] = M.expected_calibration_error(sg_conf, sg_pred == sg_true)
    out["nll_cs"] = M.negative_log_likelihood(_log(cs_probs), cs_true)
    out["nll_sg"] = M.negative_log_likelihood(_log(sg_probs), sg_true - 1)
    scaled_cs = np.empty_like(cs_probs, dtype=np.float64)
    scaled_sg = np.empty_like(sg_probs, dtype=np.float64)
    if val is not None:
        v_cs, v_sg, v_cs_true, v_sg_true = val
        t_cs = M.fit_temperature(_log(v_cs), v_cs_true)
        t_sg = M.fit_temperature(_log(v_sg), v_sg_true - 1)
        scaled_cs = M.apply_temperature(_log(cs_probs), t_cs)
        scaled_sg = M.apply_temperature(_log(sg_probs), t_sg)
        out["temperature_source"] = "validation set"
        out["t_cs"], out["t_sg"] = [t_cs], [t_sg]
    else:
        # two-fold cross-fitting over materials: fit on one half, apply to the other
        keys = np.unique(material)
        fold_of = np.random.default_rng(seed).permutation(len(keys)) % 2
        fold = fold_of[np.searchsorted(keys, material)]
        out["temperature_source"] = "two-fold cross-fitting over test materials (no validation set given)"
        out["t_cs"], out["t_sg"] = [], []
        for f in (0, 1):
            fit, app = fold != f, fold == f
            if not fit.any() or not app.any():
                scaled_cs[app], scaled_sg[app] = cs_probs[app], sg_probs[app]
                continue
            t_cs = M.fit_temperature(_log(cs_probs[fit]), cs_true[fit])
            t_sg = M.fit_temperature(_log(sg_probs[fit]), sg_true[fit] - 1)
            scaled_cs[app] = M.apply_temperature(_log(cs_probs[app]), t_cs)
            scaled_sg[app] = M.apply_temperature(_log(sg_probs[app]), t_sg)
            out["t_cs"].append(t_cs)
            out["t_sg"].append(t_sg)
    cs_conf_s = scaled_cs[rows, cs_pred]  # temperature keeps the argmax
    sg_conf_s = scaled_sg[rows, sg_pred - 1]
    out["ece_cs_scaled"] = M.expected_calibration_error(cs_conf_s, cs_pred == cs_true)
    out["ece_sg_scaled"] = M.expected_calibration_error(sg_conf_s, sg_pred == sg_true)
    out["nll_cs_scaled"] = M.negative_log_likelihood(_log(scaled_cs), cs_true)
    out["nll_sg_scaled"] = M.negative_log_likelihood(_log(scaled_sg), sg_true - 1)
    out["scaling_helps"] = bool(
        out["ece_cs_scaled"] < out["ece_cs"] and out["ece_sg_scaled"] <= out["ece_sg"] + 1e-12
    )
    return out, cs_conf_s


def score(
    key: str,
    pred: Any,
    pset: Any,
    *,
    k_views: int = 10,
    n_draws: int = 5,
    seed: int = 0,
    val_pred: Any | None = None,
    val_set: Any | None = None,
    timings: dict[str, Any] | None = None,
) -> ClassifierResult:
    """All metrics of one classifier's predictions on a pattern set.

    Parameters
    ----------
    key : {"model", "rf"}
        Which classifier (selects the paper figures to compare with).
    pred : Prediction
        Per-pattern predictions (``crystal_system_probs``, ``space_group_probs``, labels).
    pset : PatternSet-like
        The labelled patterns (``space_group``, ``crystal_system``, ``material``).
    k_views, n_draws, seed : int
        Multi-view aggregation: views per material, number of draws, seed of the draws.
    val_pred, val_set : optional
        Predictions on, and labels of, a validation set for temperature scaling.
    timings : dict, optional
        Stored with the result.

    Returns
    -------
    ClassifierResult
    """
    sg_true = np.asarray(pset.space_group, dtype=np.int64)
    cs_true = np.asarray(pset.crystal_system, dtype=np.int64)
    material = np.asarray(pset.material)
    cs_probs = np.asarray(pred.crystal_system_probs, dtype=np.float64)
    sg_probs = np.asarray(pred.space_group_probs, dtype=np.float64)
    cs_pred = np.asarray(pred.crystal_system, dtype=np.int64)
    sg_pred = np.asarray(pred.space_group, dtype=np.int64)

    nums: dict[str, Any] = {"n_patterns": int(len(sg_true)), "n_materials": int(len(np.unique(material)))}
    nums["cs_accuracy"] = M.accuracy(cs_true, cs_pred)
    nums["sg_accuracy"] = M.accuracy(sg_true, sg_pred)
    cm = M.confusion_matrix(cs_true, cs_pred, N_CRYSTAL_SYSTEMS)
    nums["cs_confusion"] = cm.tolist()
    prf = M.precision_recall_f1(cm)
    nums["cs_prf"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in prf.items()}
    acc, count = M.grouped_accuracy(sg_true, sg_pred, cs_true, N_CRYSTAL_SYSTEMS)
    nums["sg_accuracy_by_system"] = acc.tolist()
    nums["n_by_system"] = count.tolist()

    boot_cs = M.bootstrap_accuracy(cs_pred == cs_true, material, seed=seed)
    boot_sg = M.bootstrap_accuracy(sg_pred == sg_true, material, seed=seed)
    nums["cs_accuracy_boot_std"] = float(np.std(boot_cs))
    nums["sg_accuracy_boot_std"] = float(np.std(boot_sg))

    mv: dict[str, M.MultiViewResult] = {}
    for method in ("log", "mean"):
        r = M.multiview_evaluation(cs_probs, sg_probs, sg_true, material, k_views, n_draws, seed, method)
        mv[method] = r
        nums[f"multiview_{method}"] = {
            "k": r.k,
            "n_draws": r.n_draws,
            "seed": r.seed,
            "cs_accuracy_draws": r.cs_accuracy.tolist(),
            "sg_accuracy_draws": r.sg_accuracy.tolist(),
            "cs_mean": r.cs_mean,
            "cs_std": r.cs_std,
            "sg_mean": r.sg_mean,
            "sg_std": r.sg_std,
            "cs_accuracy_by_system": _nanmean_rows(r.cs_accuracy_by_system),
            "sg_accuracy_by_system": _nanmean_rows(r.sg_accuracy_by_system),
            "cs_confusion_first_draw": M.confusion_matrix(r.cs_true, r.cs_pred, N_CRYSTAL_SYSTEMS).tolist(),
            "cs_boot_std": float(np.std(M.bootstrap_accuracy(r.cs_true == r.cs_pred, np.arange(len(r.cs_true)), seed=seed))),
            "sg_boot_std": float(np.std(M.bootstrap_accuracy(r.sg_true == r.sg_pred, np.arange(len(r.sg_true)), seed=seed))),
        }
    curve = []
    for kk in sorted({1, 2, 3, 5, int(k_views)}):
        r = M.multiview_evaluation(cs_probs, sg_probs, sg_true, material, kk, n_draws, seed + 1, "log")
        curve.append({"k": kk, "cs_mean": r.cs_mean, "cs_std": r.cs_std, "sg_mean": r.sg_mean, "sg_std": r.sg_std})
    nums["views_curve"] = curve

    val = None
    if val_pred is not None and val_set is not None:
        val = (
            np.asarray(val_pred.crystal_system_probs, dtype=np.float64),
            np.asarray(val_pred.space_group_probs, dtype=np.float64),
            np.asarray(val_set.crystal_system, dtype=np.int64),
            np.asarray(val_set.space_group, dtype=np.int64),
        )
    calib, cs_conf_scaled = _calibration(
        cs_probs, sg_probs, cs_true, sg_true, cs_pred, sg_pred, material, val, seed
    )
    nums["calibration"] = calib
    cs_conf = cs_probs[np.arange(len(cs_pred)), cs_pred]
    return ClassifierResult(
        key=key,
        label=_LABELS.get(key, key),
        numbers=nums,
        cs_pred=cs_pred,
        sg_pred=sg_pred,
        cs_conf=cs_conf,
        cs_conf_scaled=cs_conf_scaled,
        multiview=mv,
        timings=dict(timings or {}),
    )


# ----------------------------------------------------------------------------- RF training
def train_rf(
    *,
    library: str | None = None,
    manifest: str | None = None,
    n_patterns: int = 20000,
    train_sets: Sequence[str] = (),
    seed: int = 0,
    n_jobs: int = 1,
    augment: bool = True,
    balance_power: float = 0.5,
    chunk: int = 2000,
    progress: bool = True,
    **rf_kwargs: Any,
) -> Any:
    """Train the random-forest baseline on patterns of the training materials.

    Parameters
    ----------
    library : str, optional
        Kinematic structure-factor library; ``n_patterns`` patterns are drawn from
        ``py4dstem_gnn.sources.KinematicSource(library, manifest, split="train", augment=augment,
        balance_power=balance_power)``, the source the model trains on (same materials,
        class-balanced sampling, excitation-error spread and augmentations), with
        ``numpy.random.default_rng(seed)``.
    manifest : str, optional
        Structure manifest holding the train/val/test split (default: the committed one).
    n_patterns : int
        Patterns drawn from the library.
    train_sets : sequence of str
        Stored pattern sets (HDF5) of training materials to add (e.g. Bloch-wave train patterns).
    seed, n_jobs : int
        Seed of the draw and of the forests; scikit-learn jobs.
    augment : bool
        Apply the model's realism augmentations to the drawn patterns.
    balance_power : float
        Class-balancing exponent of the material sampling (the model's default, 0.5).
    chunk : int
        Patterns drawn and featurised per step (bounds memory: the forests only see features).
    progress : bool
        Progress bars.
    **rf_kwargs
        Passed to :class:`~py4dstem_gnn.baseline.RandomForestBaseline`.

    Returns
    -------
    RandomForestBaseline
        Fitted; ``fit_info_["data"]`` describes the training data.
    """
    from .baseline import RandomForestBaseline

    rf = RandomForestBaseline(n_jobs=n_jobs, random_state=seed, **rf_kwargs)
    feats, cs_all, sg_all, described = [], [], [], []
    t0 = time.perf_counter()
    if library:
        from tqdm.auto import tqdm

        from .sources import KinematicSource

        source = KinematicSource(library, manifest, split="train", augment=augment,
                                 balance_power=balance_power)
        rng = np.random.default_rng(seed)
        with tqdm(total=n_patterns, desc="RF training patterns", disable=not progress) as bar:
            done = 0
            while done < n_patterns:
                m = min(chunk, n_patterns - done)
                pls, cs, sg = source.sample(rng, m)
                feats.append(rf.featurize(pls))
                cs_all.append(np.asarray(cs, dtype=np.int64))
                sg_all.append(np.asarray(sg, dtype=np.int64))
                done += m
                bar.update(m)
        desc = {"kind": "kinematic library (model's training source)", "library": str(library),
                "manifest": str(manifest or "committed default"), "split": "train",
                "augment": bool(augment), "balance_power": float(balance_power),
                "n_patterns": int(n_patterns), "seed": int(seed)}
        if hasattr(source, "describe"):
            try:
                desc["source"] = source.describe()
            except Exception:  # noqa: BLE001 - description is informative only
                pass
        described.append(desc)
    for path in train_sets:
        pset = load_pattern_set(path)
        feats.append(rf.featurize(pset.pointlists, progress=progress))
        cs_all.append(np.asarray(pset.crystal_system, dtype=np.int64))
        sg_all.append(np.asarray(pset.space_group, dtype=np.int64))
        described.append({"kind": "stored pattern set", "path": str(path), "n_patterns": int(len(pset)),
                          "attrs": _set_attrs(pset)})
    if not feats:
        raise ValueError("no RF training data: give a kinematic library and/or stored training sets")
    X = np.concatenate(feats)
    t_data = time.perf_counter() - t0
    rf.fit(None, np.concatenate(cs_all), np.concatenate(sg_all), features=X, progress=progress)
    rf.fit_info_["data"] = described
    rf.fit_info_["data_s"] = t_data
    return rf


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

def _plot_confusions(results: list[ClassifierResult], out: Path, k: int) -> str:
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


def _plot_confidence(results: list[ClassifierResult], cs_true: np.ndarray, out: Path) -> str:
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


def _plot_reliability(results: list[ClassifierResult], cs_true: np.ndarray, out: Path) -> str:
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


def _plot_views_curve(results: list[ClassifierResult], out: Path) -> str:
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


def _plot_by_system(results: list[ClassifierResult], out: Path, k: int) -> str:
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


def _markdown(
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


# ----------------------------------------------------------------------------- driver
def evaluate(
    test: Any,
    *,
    model: Any = "default",
    rf: Any = None,
    out_dir: str | os.PathLike = "reports",
    validation: Any = None,
    test_group: str | None = None,
    k_views: int = 10,
    n_draws: int = 5,
    seed: int = 0,
    device: str = "auto",
    batch_size: int | None = None,
    max_patterns: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Score the model and/or the random forest on a test set and write the report.

    Parameters
    ----------
    test : str or PatternSet-like
        Test patterns (HDF5 path or an object with ``pointlists``, ``space_group``,
        ``crystal_system``, ``material``).
    model : str, path, PEAGGMoE or None
        Weights to evaluate; ``None`` for an RF-only report.
    rf : str, path, RandomForestBaseline or None
        A fitted baseline or a file written by :meth:`RandomForestBaseline.save` (trusted files
        only: loading unpickles); ``None`` for a model-only report.
    out_dir : path-like
        Where ``report.md``, ``results.json`` and the PNG figures are written.
    validation : str or PatternSet-like, optional
        Validation patterns for temperature scaling; without it, two-fold cross-fitting over test
        materials is used (and said so in the report).
    test_group : str, optional
        HDF5 group of the test set when the file holds several.
    k_views, n_draws, seed : int
        Multi-view aggregation settings.
    device, batch_size : optional
        Passed to :func:`py4dstem_gnn.inference.predict_pointlists`.
    max_patterns : int, optional
        Evaluate only the patterns of the first materials up to about this many patterns (quick runs).
    progress : bool
        Progress bars.
    command : str, optional
        Command line recorded in the report.

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    if model is None and rf is None:
        raise ValueError("nothing to evaluate: give model weights and/or a random forest")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pset = load_pattern_set(test, test_group)
    if max_patterns is not None and len(pset) > max_patterns:
        mats = np.asarray(pset.material)
        keys = np.unique(mats)
        rng = np.random.default_rng(seed)
        keys = keys[rng.permutation(len(keys))]
        counts = np.array([np.sum(mats == k) for k in keys])
        chosen = keys[: max(1, int(np.searchsorted(np.cumsum(counts), max_patterns, side="right")))]
        pset = pset.subset(np.flatnonzero(np.isin(mats, chosen)))
    vset = load_pattern_set(validation) if validation is not None else None
    cs_true = np.asarray(pset.crystal_system, dtype=np.int64)
    if np.any(SG_TO_CS[np.asarray(pset.space_group) - 1] != cs_true):
        raise ValueError("the test set's crystal systems contradict its space groups")

    results: list[ClassifierResult] = []
    rf_info = None
    common = dict(k_views=k_views, n_draws=n_draws, seed=seed)
    if model is not None:
        logger.info("model: predicting %d test patterns", len(pset))
        pred, tm = predict_model(pset.pointlists, model, device, batch_size, progress)
        vpred = predict_model(vset.pointlists, model, device, batch_size, progress)[0] if vset is not None else None
        results.append(score("model", pred, pset, val_pred=vpred, val_set=vset, timings=tm, **common))
    if rf is not None:
        from .baseline import RandomForestBaseline

        forest = rf if isinstance(rf, RandomForestBaseline) else RandomForestBaseline.load(rf)
        rf_info = {k: v for k, v in forest.fit_info_.items()}
        rf_info["hyper_parameters"] = {
            "n_estimators_cs": forest.n_estimators_cs, "max_depth_cs": forest.max_depth_cs,
            "n_estimators_sg": forest.n_estimators_sg, "max_depth_sg": forest.max_depth_sg,
            "n_features": forest.featurizer.n_features,
        }
        logger.info("random forest: predicting %d test patterns", len(pset))
        pred, tm = predict_rf(pset.pointlists, forest, progress)
        vpred = predict_rf(vset.pointlists, forest)[0] if vset is not None else None
        results.append(score("rf", pred, pset, val_pred=vpred, val_set=vset, timings=tm, **common))

    figures = [
        _plot_confusions(results, out, k_views),
        _plot_confidence(results, cs_true, out),
        _plot_reliability(results, cs_true, out),
        _plot_by_system(results, out, k_views),
        _plot_views_curve(results, out),
    ]
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command or "py4dstem_gnn.evaluate.evaluate(...)",
        "git": _git_commit(),
        "test": str(test) if not hasattr(test, "pointlists") else "(in-memory pattern set)",
        "test_attrs": _set_attrs(pset),
        "n_patterns": int(len(pset)),
        "n_materials": int(len(np.unique(np.asarray(pset.material)))),
        "seed": int(seed),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores visible, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "rf_info": rf_info,
    }
    (out / "report.md").write_text(_markdown(results, figures, info, k_views, n_draws))
    payload = {
        "info": info,
        "paper": PAPER_FIGURES,
        "results": {r.key: {"label": r.label, **r.numbers, "timings": r.timings} for r in results},
        "figures": figures,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    logger.info("report written to %s", out / "report.md")
    return payload


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ----------------------------------------------------------------------------- command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``py4dstem-gnn evaluate``."""
    parser.description = (
        "Evaluate PE-AG-GMoE and/or the random-forest baseline on a stored test set and write a "
        "Markdown report with PNG figures (accuracy, P/R/F1, SG accuracy by crystal system, "
        "multi-view aggregation, confusion matrices, calibration, timing) beside the paper's figures."
    )
    parser.add_argument("--test", default=None, help="test pattern set (HDF5), e.g. the Bloch-wave test set in data/ "
                        "(required unless --train-rf-only)")
    parser.add_argument("--test-group", default=None, help="HDF5 group of the test set, if the file holds several")
    parser.add_argument("--weights", default="default",
                        help="model weights: a name (default), a .safetensors path, or 'none' for an RF-only report")
    parser.add_argument("--rf", default=None,
                        help="random-forest file (joblib; loading runs pickle, trusted files only). If it does not "
                        "exist and training data are given, the forest is trained and saved there")
    parser.add_argument("--rf-train-library", default=None,
                        help="kinematic structure-factor library: train the RF on patterns of the training "
                        "materials drawn from the model's training source")
    parser.add_argument("--manifest", default=None, help="structure manifest with the splits (default: the committed one)")
    parser.add_argument("--rf-train-patterns", type=int, default=20000, help="patterns drawn from the library")
    parser.add_argument("--rf-train-set", action="append", default=[], metavar="PATH",
                        help="stored pattern set(s) of training materials to train the RF on (repeatable)")
    parser.add_argument("--no-augment", action="store_true", help="draw RF training patterns without augmentations")
    parser.add_argument("--retrain-rf", action="store_true", help="train the RF even if --rf exists")
    parser.add_argument("--train-rf-only", action="store_true", help="train and save the RF (--rf), then stop")
    parser.add_argument("--val", default=None, help="validation pattern set (HDF5) for temperature scaling")
    parser.add_argument("--out", default="reports", help="output folder")
    parser.add_argument(
        "--update-card",
        action="store_true",
        help="write the headline figures into the 'evaluation' field of the --weights card (JSON only)",
    )
    parser.add_argument("--views", type=int, default=10, help="patterns combined per material")
    parser.add_argument("--draws", type=int, default=5, help="random draws of the views")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-patterns", type=int, default=None, help="evaluate on about this many patterns only")
    parser.add_argument("--n-jobs", type=int, default=1, help="scikit-learn jobs for the RF")
    parser.add_argument("--no-progress", action="store_true")


def _command_line(argv: Sequence[str]) -> str | None:
    """The evaluate command as typed, or None when not run from a command line."""
    import shlex

    argv = list(argv)
    if argv and argv[0].endswith("evaluate.py"):
        before, rest = [], argv[1:]
    elif "evaluate" in argv[1:]:
        # global options (e.g. -v) come before the command name
        i = argv.index("evaluate", 1)
        before, rest = argv[1:i], argv[i + 1 :]
    else:
        return None
    return " ".join(["py4dstem-gnn", *map(shlex.quote, before), "evaluate", *map(shlex.quote, rest)])


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``py4dstem-gnn evaluate``."""
    import sys

    model = None if str(args.weights).lower() in ("none", "") else args.weights
    if args.test is None and not args.train_rf_only:
        logger.error("--test is required (unless --train-rf-only)")
        return 2
    if args.train_rf_only and not (args.rf and (args.rf_train_library or args.rf_train_set)):
        logger.error("--train-rf-only needs --rf (output file) and RF training data")
        return 2
    rf: Any = None
    rf_path = Path(args.rf) if args.rf else None
    wants_training = bool(args.rf_train_library or args.rf_train_set)
    if rf_path is not None and rf_path.is_file() and not (args.retrain_rf or args.train_rf_only):
        from .baseline import RandomForestBaseline

        rf = RandomForestBaseline.load(rf_path, n_jobs=args.n_jobs)
        rf.fit_info_.setdefault("file", str(rf_path))
    elif wants_training:
        rf = train_rf(
            library=args.rf_train_library,
            manifest=args.manifest,
            n_patterns=args.rf_train_patterns,
            train_sets=args.rf_train_set,
            seed=args.seed,
            n_jobs=args.n_jobs,
            augment=not args.no_augment,
            progress=not args.no_progress,
        )
        if rf_path is not None:
            rf.save(rf_path)
            logger.info("random forest saved to %s", rf_path)
        if args.train_rf_only:
            return 0
    elif rf_path is not None:
        logger.error("%s does not exist and no RF training data were given", rf_path)
        return 2
    if model is None and rf is None:
        logger.error("nothing to evaluate: give --weights and/or --rf")
        return 2
    payload = evaluate(
        args.test,
        model=model,
        rf=rf,
        out_dir=args.out,
        validation=args.val,
        test_group=args.test_group,
        k_views=args.views,
        n_draws=args.draws,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        max_patterns=args.max_patterns,
        progress=not args.no_progress,
        command=_command_line(sys.argv),
    )
    print_path = Path(args.out) / "report.md"
    logger.info("wrote %s", print_path)
    if args.update_card:
        if model is None:
            raise ValueError("--update-card needs --weights")
        card_path = update_card_evaluation(model, payload, str(print_path))
        logger.info("evaluation written into %s", card_path)
    return 0


def card_evaluation(payload: dict[str, Any], report: str) -> dict[str, Any]:
    """Headline figures of an evaluation (the dict :func:`evaluate` returns) for a model card.

    Parameters
    ----------
    payload : dict
        Output of :func:`evaluate` (also ``results.json``).
    report : str
        Path of the Markdown report, recorded in the card.

    Returns
    -------
    dict
        Command, test set, accuracies (%) of the model and the RF (one pattern and multi-view),
        the paper's figures, whether every target is met and the gaps (points) to them.
    """
    def headline(numbers: dict[str, Any]) -> dict[str, float]:
        multi = numbers.get("multiview_log") or {}
        out = {
            "crystal_system_1_pattern": round(100 * numbers["cs_accuracy"], 1),
            "space_group_1_pattern": round(100 * numbers["sg_accuracy"], 1),
        }
        if multi:
            out[f"crystal_system_{multi['k']}_views"] = round(100 * multi["cs_mean"], 1)
            out[f"space_group_{multi['k']}_views"] = round(100 * multi["sg_mean"], 1)
        return out

    info, results = payload["info"], payload["results"]
    card: dict[str, Any] = {
        "command": info.get("command"),
        "report": report,
        "git": info.get("git"),
        "date": info.get("date"),
        "test_set": f"{info.get('test')}: {info.get('n_materials')} materials, {info.get('n_patterns')} patterns",
    }
    paper = {
        "crystal_system_1_pattern": PAPER_FIGURES["model"]["single"][0],
        "space_group_1_pattern": PAPER_FIGURES["model"]["single"][1],
        "crystal_system_10_views": PAPER_FIGURES["model"]["multi"][0],
        "space_group_10_views": PAPER_FIGURES["model"]["multi"][1],
    }
    if "model" in results:
        figures = headline(results["model"])
        card["accuracy_percent"] = figures
        card["paper_percent"] = paper
        card["gap_to_paper_points"] = {k: round(figures[k] - v, 1) for k, v in paper.items() if k in figures}
        card["targets_met"] = all(figures.get(k, -1.0) >= v for k, v in paper.items())
    if "rf" in results:
        card["random_forest_same_data_percent"] = headline(results["rf"])
        if "model" in results:
            card["model_minus_rf_crystal_system_1_pattern_points"] = round(
                card["accuracy_percent"]["crystal_system_1_pattern"]
                - card["random_forest_same_data_percent"]["crystal_system_1_pattern"],
                1,
            )
    return card


def update_card_evaluation(model: str, payload: dict[str, Any], report: str) -> Path:
    """Write :func:`card_evaluation` into the ``evaluation`` field of a weights card (JSON only).

    The safetensors file and its checksum are not touched. Returns the card's path.
    """
    from .weights import resolve_weights

    card_path = resolve_weights(model).with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["evaluation"] = card_evaluation(payload, report)
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, card_path)
    return card_path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m py4dstem_gnn.evaluate ...``: the same as ``py4dstem-gnn evaluate ...``."""
    parser = argparse.ArgumentParser(prog="python -m py4dstem_gnn.evaluate")
    configure_parser(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    return run_cli(args)


if __name__ == "__main__":  # pragma: no cover - command line
    raise SystemExit(main())
