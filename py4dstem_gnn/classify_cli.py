"""Command line ``py4dstem-gnn classify``: read a py4DSTEM file, classify its BraggVectors, save the maps."""

from __future__ import annotations

import logging
from typing import Any

from .classify import classify_braggvectors

__all__ = ["configure_parser", "run_cli"]

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
    parser.add_argument("-o", "--output", default=None, help="output file (default: <input>_maps.h5)")
    parser.add_argument("--braggvectors", default=None, help="name of the BraggVectors in the file (if several)")
    parser.add_argument("--model", default="default", help="weights name or path (default: the shipped weights)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--min-spots", type=int, default=5)
    parser.add_argument("--median-filter", type=int, default=5)
    parser.add_argument(
        "--confidence-threshold", type=float, default=None,
        help="positions with a lower confidence are invalid (default: the calibrated value in the weights' card; 0: off)",
    )
    parser.add_argument("--coverage", type=float, default=None, help="coverage of the conformal sets (default: the card's)")
    parser.add_argument("--figure", default=None, help="also write the crystal-system figure (PNG) here")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (also py4DSTEM's while reading and saving)"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars and no log messages below ERROR"
    )


def run_cli(args: Any) -> int:
    """Run ``py4dstem-gnn classify``: read, classify, attach, save (and plot)."""
    from pathlib import Path

    import py4DSTEM

    from .progress import quiet_py4dstem

    # --quiet: no bars here; py4dstem_gnn.cli.main also lowers the log level to ERROR
    progress = not (args.no_progress or getattr(args, "quiet", False))
    if not Path(args.input).is_file():
        raise FileNotFoundError(f"input file {args.input} does not exist")
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
    )
    bv.attach(maps)
    out = Path(args.output) if args.output else Path(args.input).with_name(Path(args.input).stem + "_maps.h5")
    with quiet_py4dstem(not progress):
        py4DSTEM.save(str(out), bv, mode="o")
    logger.info("wrote %s (RealSlice %r attached to the BraggVectors %r)", out, maps.name, bv.name)
    if args.figure:
        from .plot import crystal_system_figure

        crystal_system_figure(maps).savefig(args.figure, dpi=120)
        logger.info("wrote %s", args.figure)
    return 0
