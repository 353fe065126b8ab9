"""Shared helpers of the benchmark scripts: the command line they record, the Markdown they write, and the
seed loop of the random-forest split experiments."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

logger = logging.getLogger("benchmarks")


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """``python benchmarks/<script> ...`` as typed (``argv=None``: this process's arguments), shell-quoted."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{script}", *args])


def write_report(lines: Sequence[str], out: str | Path) -> Path:
    """Write Markdown ``lines`` to ``out`` (folders created) and log where."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    logger.info("wrote %s", path)
    return path


def run_split_experiment(run_one: Callable[..., list[dict]], args: Any, **source_kw: Any) -> list[dict]:
    """Rows of ``run_one(train_source, test_split_source, args, seed)`` for every seed in ``args.seeds``.

    Both sources are :class:`py4dstem_gnn.data.sources.KinematicSource` on ``args.library`` (training and
    test split), with ``source_kw`` (augmentation, orientations, ...). Each row is logged as it comes.
    """
    from py4dstem_gnn.data.sources import KinematicSource

    source = KinematicSource(args.library, split="train", **source_kw)
    test_split = KinematicSource(args.library, split="test", **source_kw)
    rows = []
    for seed in args.seeds:
        for row in run_one(source, test_split, args, seed):
            logger.info("%s", row)
            rows.append(row)
    return rows
