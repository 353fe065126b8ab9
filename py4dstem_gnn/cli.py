"""Command line: ``py4dstem-gnn <command> --help``.

Each command lives in the module that does the work; this file only registers them, importing
a module when its command runs so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable, Sequence

__all__ = ["main", "module_main", "COMMANDS", "LOG_FORMAT"]

#: Format of the log lines of every command.
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "structures": ("py4dstem_gnn.data.structures", "build the labelled OQMD-ICSD structure pool and its train/val/test split"),
    "simulate": ("py4dstem_gnn.data.simulate", "simulate diffraction patterns (kinematic library, Bloch-wave sets)"),
    "export-tables": ("py4dstem_gnn.data.kinematic_torch", "write the kinematic library as one .npz of tables for train --sampler torch"),
    "train": ("py4dstem_gnn.training.cli", "train PE-AG-GMoE (resumable; torchrun for several GPUs)"),
    "curve": ("py4dstem_gnn.training.curve", "training curves of one or more run lineages (loss, validation accuracy, compute)"),
    "evaluate": ("py4dstem_gnn.evaluation.cli", "evaluation report: model and random-forest baseline on the held-out set"),
    "protocols": ("py4dstem_gnn.evaluation.cli", "accuracy per protocol (known, unseen-material, unseen-type) x regime x corruption, group-bootstrap intervals"),
    "calibrate": ("py4dstem_gnn.confidence.fit", "fit calibrated confidence, default threshold and conformal sets on validation data; write the weights' card"),
    "classify": ("py4dstem_gnn.classify_cli", "classify the BraggVectors of a py4DSTEM file and save the maps beside them"),
    "info": ("py4dstem_gnn.info", "the shipped default weights (or any model): card, parameter count, FLOPs per pattern"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="py4dstem-gnn",
        description="Crystal-system and space-group classification of 4D-STEM diffraction patterns (PE-AG-GMoE).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    parser.add_argument(
        "-q", "--quiet", action="store_true",
        help="errors only: no log messages below ERROR (classify also hides its progress bars)",
    )
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    known, rest = parser.parse_known_args(argv)
    if not known.command:
        parser.print_help()
        return 2
    module_name, help_text = COMMANDS[known.command]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"py4dstem-gnn {known.command}", description=help_text)
    module.configure_parser(sub)
    args = sub.parse_args(rest)
    if known.quiet:
        args.quiet = True
    level = {0: logging.WARNING, 1: logging.INFO}.get(known.verbose, logging.DEBUG)
    if getattr(args, "quiet", False):
        level = logging.ERROR
    logging.basicConfig(level=level, format=LOG_FORMAT)
    try:
        return int(module.run_cli(args) or 0)
    except (TypeError, ValueError, FileNotFoundError) as err:
        if known.verbose >= 2:
            raise
        print(f"py4dstem-gnn {known.command}: error: {err}", file=sys.stderr)
        return 2


def module_main(
    configure_parser: Callable[[argparse.ArgumentParser], None],
    run_cli: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
    prog: str,
    description: str | None = None,
) -> int:
    """Entry point of ``python -m <module>`` for a command module: parse, log at INFO, run.

    Parameters
    ----------
    configure_parser : callable
        The module's ``configure_parser(parser)``.
    run_cli : callable
        The module's ``run_cli(args)``; its return value is returned.
    argv : sequence of str or None
        Arguments (None: ``sys.argv[1:]``).
    prog : str
        Program name shown in the usage line.
    description : str, optional
        Description shown by ``--help``.

    Returns
    -------
    int
        The exit status from ``run_cli``.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    configure_parser(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
