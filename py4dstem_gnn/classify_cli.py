"""Command line ``py4dstem-gnn classify``: read a py4DSTEM file, classify its BraggVectors, save the maps."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .classify import classify_braggvectors

__all__ = ["configure_parser", "run_cli", "default_output", "summary_text", "match_options"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# command line: py4dstem-gnn classify
# --------------------------------------------------------------------------------------


def _find_braggvectors(obj: Any, name: str | None) -> Any:
    """The BraggVectors in what ``py4DSTEM.read`` returned (itself, or by name in its tree)."""
    from py4DSTEM import BraggVectors

    if isinstance(obj, BraggVectors) and (name is None or obj.name == name):
        return obj
    root = getattr(obj, "root", None) or obj
    candidates = []

    def walk(node: Any) -> None:
        if isinstance(node, BraggVectors):
            candidates.append(node)
        for child in getattr(node, "_branch", {}).values() if hasattr(node, "_branch") else []:
            walk(child)

    walk(root)
    if name is not None:
        candidates = [c for c in candidates if c.name == name]
    if not candidates:
        raise ValueError(f"no BraggVectors{' named ' + repr(name) if name else ''} found in the file")
    if len(candidates) > 1:
        raise ValueError(f"several BraggVectors in the file ({[c.name for c in candidates]}); choose one with --braggvectors")
    return candidates[0]


def configure_parser(parser: Any) -> None:
    """Arguments of ``py4dstem-gnn classify``."""
    parser.add_argument("input", help="py4DSTEM file (EMD/HDF5) holding calibrated BraggVectors")
    parser.add_argument(
        "-o", "--output", default=None,
        help="output file: the BraggVectors with the maps attached (default: <input stem>_maps.h5 beside the input)",
    )
    parser.add_argument("--braggvectors", default=None, help="name of the BraggVectors in the file (if it holds several)")
    parser.add_argument("--model", default="default", help="weights name or path (default: the shipped weights)")
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N (default: auto)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None,
        help="patterns per forward pass (default: chosen from the spot counts, memory-bounded)",
    )
    parser.add_argument(
        "--min-spots", type=int, default=5,
        help="positions with fewer diffracted spots (direct beam excluded) get no label (default: 5)",
    )
    parser.add_argument(
        "--median-filter", type=int, default=5,
        help="k x k majority filter over the labelled positions of the maps; 1 switches it off (default: 5)",
    )
    parser.add_argument(
        "--confidence-threshold", type=float, default=None,
        help="positions with a lower confidence get no label (default: the calibrated value in the weights' card; 0: off)",
    )
    parser.add_argument(
        "--coverage", type=float, default=None,
        help="coverage of the conformal crystal-system sets, e.g. 0.9 (default: the card's)",
    )
    parser.add_argument(
        "--phases", nargs="+", default=None, metavar="PHASE",
        help="what the match stage compares the patterns with: 'pool' (the shipped bank of known structures, "
        "the default), 'none' (the network alone), or CIF files of the phases you expect",
    )
    parser.add_argument(
        "--elements", nargs="+", default=None, metavar="EL",
        help="keep only phases made of these elements, e.g. --elements Au Ti O (from EDS)",
    )
    parser.add_argument(
        "--figure", default=None,
        help="also write the crystal-system figure here (PNG; a .pdf or .svg name writes that format)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (also py4DSTEM's while reading and saving)"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true",
        help="print nothing: no summary, no progress bars, no log messages or warnings below ERROR",
    )


def default_output(input_path: str | os.PathLike) -> Path:
    """``<input stem>_maps.h5`` beside the input (an input already named ``*_maps`` keeps one ``_maps``).

    Raises
    ------
    ValueError
        If that name is the input itself (re-classifying ``x_maps.h5``): pass ``-o``.
    """
    path = Path(input_path)
    stem = path.stem[: -len("_maps")] if path.stem.endswith("_maps") else path.stem
    out = path.with_name(f"{stem}_maps.h5")
    if out.resolve() == path.resolve():
        raise ValueError(
            f"{path.name} already is a maps file and the default output would overwrite it; choose where the new "
            "maps go with -o NEW_FILE.h5"
        )
    return out


def _shares(values: np.ndarray, names: Any, top: int) -> str:
    """``"cubic 82.6 %, hexagonal 4.2 %"`` over the labelled values (>= 0), most frequent first."""
    values = values[values >= 0]
    if not values.size:
        return "none"
    nums, counts = np.unique(values, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    parts = [f"{names(int(nums[i]))} {100 * counts[i] / values.size:.1f} %" for i in order[:top]]
    if len(order) > top:
        parts.append(f"{len(order) - top} more")
    return ", ".join(parts)


def summary_text(maps: Any, output: str | os.PathLike, figure: str | None = None) -> str:
    """The summary ``py4dstem-gnn classify`` prints: labelled share, class shares, where the maps went.

    Parameters
    ----------
    maps : py4DSTEM.RealSlice
        The maps returned by :func:`~py4dstem_gnn.classify_braggvectors`.
    output : str or path
        The file written.
    figure : str, optional
        The figure written, if any.

    Returns
    -------
    str
        A few lines; shares of crystal systems and space groups are over the labelled positions,
        those of the phases (when the maps carry the match stage's ``phase`` slice) over the
        matched positions.
    """
    from .labels import CRYSTAL_SYSTEMS, hermann_mauguin

    cs = np.asarray(maps.get_slice("crystal_system").data).astype(int)
    sg = np.asarray(maps.get_slice("space_group").data).astype(int)
    n, n_valid = cs.size, int((cs >= 0).sum())
    shape = " x ".join(str(s) for s in cs.shape)
    lines = [
        f"labelled: {n_valid:,} of {n:,} positions ({100 * n_valid / max(n, 1):.1f} %; scan {shape})",
        f"crystal systems (of the labelled): {_shares(cs, lambda v: CRYSTAL_SYSTEMS[v], 7)}",
        f"space groups (of the labelled):    {_shares(sg, lambda v: f'{v} {hermann_mauguin(v)}', 5)}",
    ]
    if "phase" in [str(s) for s in maps.slicelabels]:
        from .plot_phase import phase_label, phase_table

        table = phase_table(maps)
        phase = np.asarray(maps.get_slice("phase").data)
        phase = np.where(np.isfinite(phase), phase, -1).astype(int)
        n_matched = int((phase >= 0).sum())
        names = lambda v: phase_label(table[v] if v < len(table) else None, v)  # noqa: E731
        lines.append(f"phases (of the {n_matched:,} matched):   {_shares(phase, names, 5)}")
    lines.append(f"maps: {output} (RealSlice {maps.name!r} attached to the BraggVectors)")
    if figure:
        lines.append(f"figure: {figure}")
    return "\n".join(lines)


def match_options(args: Any) -> dict[str, Any]:
    """``phases=`` / ``elements=`` for :func:`classify_braggvectors` from ``--phases`` / ``--elements``.

    Only the options given are passed on (the library's defaults apply otherwise).
    """
    out: dict[str, Any] = {}
    phases = getattr(args, "phases", None)
    if phases:
        if len(phases) == 1 and phases[0].lower() in ("pool", "none"):
            out["phases"] = None if phases[0].lower() == "none" else "pool"
        else:
            missing = [p for p in phases if not Path(p).is_file()]
            if missing:
                raise FileNotFoundError(f"--phases: no such file {', '.join(missing)} (give CIF files, 'pool' or 'none')")
            out["phases"] = list(phases)
    if getattr(args, "elements", None):
        out["elements"] = list(args.elements)
    return out


def run_cli(args: Any) -> int:
    """Run ``py4dstem-gnn classify``: read, classify, attach, save (and plot); print a summary unless quiet."""
    import py4DSTEM

    from .cli import log_warnings
    from .progress import quiet_py4dstem

    log_warnings()  # importing py4DSTEM replaced warnings.showwarning
    quiet = bool(getattr(args, "quiet", False))
    # --quiet: no bars, no summary; py4dstem_gnn.cli.main also lowers the log level to ERROR
    progress = not (args.no_progress or quiet)
    if not Path(args.input).is_file():
        raise FileNotFoundError(f"input file {args.input} does not exist")
    out = Path(args.output) if args.output else default_output(args.input)
    match_options(args)  # a missing CIF fails before the scan is read
    with quiet_py4dstem(not progress):
        obj = py4DSTEM.read(args.input)
    bv = _find_braggvectors(obj, args.braggvectors)
    maps = classify_braggvectors(
        bv,
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        min_spots=args.min_spots,
        median_filter=args.median_filter,
        confidence_threshold=args.confidence_threshold,
        progress=progress,
        coverage=args.coverage,
        **match_options(args),
    )
    bv.attach(maps)
    with quiet_py4dstem(not progress):
        py4DSTEM.save(str(out), bv, mode="o")
    logger.info("wrote %s (RealSlice %r attached to the BraggVectors %r)", out, maps.name, bv.name)
    if args.figure:
        from .plot import crystal_system_figure

        crystal_system_figure(maps).savefig(args.figure, dpi=300)
        logger.info("wrote %s", args.figure)
    if not quiet:
        print(summary_text(maps, out, args.figure))
    return 0
