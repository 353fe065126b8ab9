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

Views are combined with the package's rule (:func:`py4dstem_gnn.predict.aggregate_views`:
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
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..labels import SG_TO_CS

__all__ = [
    "card_evaluation",
    "update_card_evaluation",
    "evaluate",
    "configure_parser",
    "run_cli",
]

from .report import _git_commit, render_markdown, plot_by_system, plot_confidence, plot_confusions, plot_reliability, plot_views_curve
from .scoring import PAPER_FIGURES, ClassifierResult, _set_attrs, load_pattern_set, predict_model, predict_rf, score, train_rf
logger = logging.getLogger(__name__)

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
        Passed to :func:`py4dstem_gnn.predict.predict_pointlists`.
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
        plot_confusions(results, out, k_views),
        plot_confidence(results, cs_true, out),
        plot_reliability(results, cs_true, out),
        plot_by_system(results, out, k_views),
        plot_views_curve(results, out),
    ]
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command or "py4dstem_gnn.evaluation.evaluate.evaluate(...)",
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
    (out / "report.md").write_text(render_markdown(results, figures, info, k_views, n_draws))
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
    from ..weights import resolve_weights

    card_path = resolve_weights(model).with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["evaluation"] = card_evaluation(payload, report)
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, card_path)
    return card_path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m py4dstem_gnn.evaluation.evaluate ...``: the same as ``py4dstem-gnn evaluate ...``."""
    from ..cli import module_main

    return module_main(configure_parser, run_cli, argv, prog="python -m py4dstem_gnn.evaluation.evaluate")


if __name__ == "__main__":  # pragma: no cover - command line
    raise SystemExit(main())
