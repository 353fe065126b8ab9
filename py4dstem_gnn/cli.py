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

__all__ = ["main", "module_main", "log_warnings", "COMMANDS", "USER_COMMANDS", "LOG_FORMAT"]

#: Format of the log lines of every command.
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"

#: command -> (module, one-line help). The first :data:`USER_COMMANDS` are for users of the maps; the
#: others make data, train and evaluate models.
COMMANDS: dict[str, tuple[str, str]] = {
    "bank": ("py4dstem_gnn.matching.cli", "template bank of known structures: build it, fit the match/network decision, describe it"),
    "classify": ("py4dstem_gnn.classify_cli", "classify the BraggVectors of a py4DSTEM file; save the maps, print a summary"),
    "info": ("py4dstem_gnn.info", "what the shipped weights (or any) are: card summary, accuracy, confidence threshold"),
    "structures": ("py4dstem_gnn.data.structures", "build the labelled OQMD-ICSD structure pool and its train/val/test split"),
    "simulate": ("py4dstem_gnn.data.simulate", "simulate diffraction patterns (kinematic library, Bloch-wave sets)"),
    "export-tables": ("py4dstem_gnn.data.kinematic_torch", "write the kinematic library as one .npz of tables for train --sampler torch"),
    "train": ("py4dstem_gnn.training.cli", "train PE-AG-GMoE (resumable; torchrun for several GPUs)"),
    "curve": ("py4dstem_gnn.training.curve", "training curves of one or more run lineages (loss, validation accuracy, compute)"),
    "calibrate": ("py4dstem_gnn.confidence.fit", "fit calibrated confidence, default threshold and conformal sets on validation data; write the weights' card"),
    "evaluate": ("py4dstem_gnn.evaluation.cli", "accuracy report per protocol x regime x input x classifier, selective prediction and sets, group-bootstrap intervals"),
    "protocols": ("py4dstem_gnn.evaluation.cli", "the same as evaluate (older name)"),
}

#: Commands for users of the maps, listed first by ``--help``.
USER_COMMANDS: tuple[str, ...] = ("classify", "info")


def _command_table(width: int = 16) -> str:
    """The commands of ``--help``, grouped: user commands, then data / training / evaluation."""
    import textwrap

    def rows(names: list[str]) -> list[str]:
        out = []
        for name in names:
            lines = textwrap.wrap(COMMANDS[name][1], 78 - width - 2) or [""]
            out.append(f"  {name:<{width}}{lines[0]}")
            out += [" " * (width + 2) + line for line in lines[1:]]
        return out

    others = [c for c in COMMANDS if c not in USER_COMMANDS]
    return "\n".join(
        ["user commands:", *rows(list(USER_COMMANDS)), "", "data, training and evaluation commands:", *rows(others),
         "", "py4dstem-gnn <command> --help shows the options of a command."]
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="py4dstem-gnn",
        description="Crystal-system and space-group classification of 4D-STEM diffraction patterns (PE-AG-GMoE).",
        epilog=_command_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    parser.add_argument(
        "-q", "--quiet", action="store_true",
        help="errors only: no log messages or warnings below ERROR (classify also hides its progress bars and summary)",
    )
    sub = parser.add_subparsers(dest="command", metavar="command", help="one of the commands listed below")
    for name in COMMANDS:
        sub.add_parser(name, add_help=False)  # listed (grouped) in the epilog
    return parser


def log_warnings() -> None:
    """Show ``warnings.warn`` (calibration, all-unlabelled scans) as log lines, so that ``-q`` silences them.

    Call again after importing py4DSTEM, which replaces ``warnings.showwarning`` with a printer of its own.
    """
    logging.captureWarnings(False)
    logging.captureWarnings(True)


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
    log_warnings()
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
    log_warnings()
    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
