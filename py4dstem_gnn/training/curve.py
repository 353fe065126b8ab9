"""Training curves: loss and validation accuracy of one or more training lineages.

A *lineage* is a chain of run folders in which each run continued from the weights of the one
before (``train --init-from``), e.g. the shipped weights' history. Its runs are joined end to end:
steps and training seconds of a later run are offset by the totals of the runs before it, so the
x axes read as cumulative optimiser steps and cumulative compute. Several lineages on one figure
compare, for instance, two model sizes at equal compute.

``py4dstem-gnn curve --lineage shipped=runs/nb,runs/c3 --lineage small=runs/small --out curve.png``

A run folder may be cut at a step, ``DIR@STEP`` (e.g. a WSD run continued from its constant-rate
checkpoint by the next run: ``runs/known@960,runs/known_long``), and a lineage may start from
weights trained elsewhere, ``--prior LABEL=SECONDS`` (their training seconds; the compute axis
then counts them).
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .train import read_metrics

__all__ = ["Lineage", "read_lineage", "training_curve_figure", "configure_parser", "run_cli"]

logger = logging.getLogger(__name__)


@dataclass
class Lineage:
    """Metrics of a chain of runs, joined end to end.

    Attributes
    ----------
    label : str
        Legend label.
    train, val : list of dict
        ``metrics.jsonl`` rows with ``step`` and ``seconds`` made cumulative over the chain.
    boundaries : list of int
        Cumulative step at which each later run started.
    """

    label: str
    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    boundaries: list[int] = field(default_factory=list)


def read_lineage(label: str, run_dirs: Sequence[str | os.PathLike], prior_seconds: float = 0.0) -> Lineage:
    """Join the metrics of ``run_dirs`` (in training order) into one :class:`Lineage`.

    Parameters
    ----------
    label : str
        Legend label.
    run_dirs : sequence of path-like
        Run folders holding ``metrics.jsonl``; each later run continued from the one before.
        ``"DIR@STEP"`` keeps only the rows up to ``STEP`` of that run.
    prior_seconds : float
        Training seconds of the weights the first run started from.

    Returns
    -------
    Lineage
    """
    lineage = Lineage(label)
    step0, seconds0 = 0, float(prior_seconds)
    for i, spec in enumerate(run_dirs):
        run_dir, _, cut = str(spec).partition("@")
        rows = read_metrics(run_dir)
        if cut:
            rows = [r for r in rows if r["step"] <= int(cut)]
        if not rows:
            raise FileNotFoundError(f"no metrics in {run_dir} (expected {Path(run_dir) / 'metrics.jsonl'})")
        if i:
            lineage.boundaries.append(step0)
        for row in rows:
            row = {**row, "step": row["step"] + step0, "seconds": float(row.get("seconds", 0.0)) + seconds0}
            (lineage.val if row.get("kind") == "val" else lineage.train).append(row)
        step0 = max(r["step"] for r in rows) + step0
        seconds0 = max(float(r.get("seconds", 0.0)) for r in rows) + seconds0
    return lineage


def _moving_average(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = max(1, min(k, len(y)))
    return x[k - 1 :], np.convolve(y, np.ones(k) / k, mode="valid")


def training_curve_figure(lineages: Sequence[Lineage], val_key: str | None = None, smooth: int = 10):
    """Loss and validation accuracy of lineages against cumulative step and compute.

    Parameters
    ----------
    lineages : sequence of Lineage
        From :func:`read_lineage`.
    val_key : str, optional
        Validation set to plot (the prefix of ``<set>/cs_acc``); default: every set found.
    smooth : int
        Moving-average window, in logged points, for the training loss.

    Returns
    -------
    matplotlib.figure.Figure
        Four panels: training loss vs step, validation accuracy vs step, validation
        crystal-system accuracy vs cumulative training hours (equal-compute comparison), and
        validation loss (where logged) vs cumulative training seconds on a log axis.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(15, 12))
    (ax_loss, ax_acc), (ax_time, ax_vloss) = axes
    for n, lin in enumerate(lineages):
        colour = f"C{n}"
        if lin.train:
            steps = np.array([r["step"] for r in lin.train], dtype=float)
            ax_loss.plot(*_moving_average(steps, np.array([r["loss"] for r in lin.train]), smooth), color=colour, label=lin.label)
        sets = sorted({k.split("/")[0] for r in lin.val for k in r if k.endswith("/cs_acc")})
        if val_key is not None:
            sets = [s for s in sets if s == val_key]
        for m, name in enumerate(sets):
            style = ["-", "--", ":", "-."][m % 4]
            for task, marker in (("cs", "o"), ("sg", "s")):
                pts = [(r["step"], r[f"{name}/{task}_acc"]) for r in lin.val if f"{name}/{task}_acc" in r]
                if pts:
                    ax_acc.plot(*zip(*pts), ls=style, marker=marker, ms=3, color=colour, label=f"{lin.label}: {name} {task.upper()}")
            pts = [(r["seconds"] / 3600.0, r[f"{name}/cs_acc"]) for r in lin.val if f"{name}/cs_acc" in r]
            if pts:
                ax_time.plot(*zip(*pts), ls=style, marker="o", ms=3, color=colour, label=f"{lin.label}: {name} CS")
            pts = [(max(r["seconds"], 1.0), r[f"{name}/loss"]) for r in lin.val if f"{name}/loss" in r]
            if pts:
                ax_vloss.plot(*zip(*pts), ls=style, marker="o", ms=3, color=colour, label=f"{lin.label}: {name}")
        for b in lin.boundaries:
            for ax in (ax_loss, ax_acc):
                ax.axvline(b, color=colour, lw=0.8, alpha=0.4)
    ax_loss.set_xlabel("cumulative step")
    ax_loss.set_ylabel("training loss (moving average)")
    ax_acc.set_xlabel("cumulative step (vertical lines: next run of the lineage)")
    ax_acc.set_ylabel("validation accuracy")
    ax_time.set_xlabel("cumulative training time (h)")
    ax_time.set_ylabel("validation crystal-system accuracy")
    ax_vloss.set_xscale("log")
    ax_vloss.set_xlabel("cumulative training compute (s of one CPU core, log scale)")
    ax_vloss.set_ylabel("validation loss (CE crystal system + space group)")
    top = max([0.5] + [v for lin in lineages for r in lin.val for k, v in r.items() if k.endswith("_acc")])
    for ax in (ax_acc, ax_time):
        ax.set_ylim(0, min(1.0, 0.1 * np.ceil(10 * top + 0.5)))
    for ax in (ax_loss, ax_acc, ax_time, ax_vloss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    fig.tight_layout()
    return fig


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``py4dstem-gnn curve``."""
    parser.add_argument(
        "--lineage",
        action="append",
        required=True,
        metavar="LABEL=DIR[,DIR...]",
        help="a chain of run folders, each continued from the one before; repeat to compare",
    )
    parser.add_argument("--prior", action="append", default=[], metavar="LABEL=SECONDS",
                        help="training seconds behind the weights a lineage started from")
    parser.add_argument("--val-set", default=None, help="plot only this validation set (e.g. bloch_val)")
    parser.add_argument("--smooth", type=int, default=10, help="moving-average window of the loss (logged points)")
    parser.add_argument("--out", required=True, help="output image (.png, .pdf, .svg)")


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``py4dstem-gnn curve``."""
    lineages = []
    prior = {k: float(v) for k, _, v in (p.partition("=") for p in args.prior)}
    for spec in args.lineage:
        label, sep, dirs = spec.partition("=")
        if not sep or not dirs:
            raise ValueError(f"--lineage wants LABEL=DIR[,DIR...], got {spec!r}")
        lineages.append(read_lineage(label, [d for d in dirs.split(",") if d], prior.get(label, 0.0)))
    fig = training_curve_figure(lineages, val_key=args.val_set, smooth=args.smooth)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    logger.info("wrote %s", out)
    return 0
