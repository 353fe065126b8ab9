"""Shared helpers of the benchmark scripts: the command line they record and the Markdown they write."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Sequence

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
