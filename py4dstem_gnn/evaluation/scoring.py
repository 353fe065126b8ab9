"""Scoring of classifiers on stored pattern sets: predictions, accuracies, calibration, the forest's training.

See :mod:`py4dstem_gnn.evaluation.evaluate` for the report these feed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import metrics as M
from ..labels import CRYSTAL_SYSTEMS, N_CRYSTAL_SYSTEMS

__all__ = [
    "PAPER_FIGURES",
    "ClassifierResult",
    "load_pattern_set",
    "predict_model",
    "predict_rf",
    "score",
    "train_rf",
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
    (``shard_*.h5``, via :func:`py4dstem_gnn.data.shards.read_shards`) or an object passed through.

    The object needs ``pointlists``, ``space_group``, ``crystal_system`` and ``material``.
    """
    if hasattr(source, "pointlists"):
        return source
    if Path(source).is_dir():  # a folder of finished simulation shards (partial sets)
        from ..data.shards import read_shards

        return read_shards(sorted(Path(source).glob("shard_*.h5")))[0]
    from ..data.dataset import PatternSet

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
    prediction : py4dstem_gnn.predict.Prediction
    timings : dict
        ``load_s``, ``predict_s`` (beam removal, padding and forward pass, whole set),
        ``per_pattern_ms``, ``threads``, ``device``.
    """
    import torch

    from ..predict import predict_pointlists, resolve_device
    from ..weights import load_model

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
        ``py4dstem_gnn.data.sources.KinematicSource(library, manifest, split="train", augment=augment,
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
        Passed to :class:`~py4dstem_gnn.evaluation.baseline.RandomForestBaseline`.

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
        from ..progress import tqdm

        from ..data.sources import KinematicSource

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


