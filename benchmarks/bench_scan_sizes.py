"""Speed a user can plan with: ``classify_braggvectors`` patterns/s by scan size and spot density.

For every scan size (default 32², 64², 128², 256² positions) and density (sparse: ~10
diffracted spots per pattern, dense: ~60), the script builds synthetic calibrated
BraggVectors (:func:`py4dstem_gnn.data.synthetic.random_braggvectors`, not timed), runs
``classify_braggvectors`` once to warm up on a small scan, then times it end to end
(read + calibration + beam removal, model, post-processing) ``--repeats`` times and
reports the median and best patterns/s.

A fair figure needs a quiet machine. The script records the torch thread count, the
CPU count, the load average (1 min, from ``os.getloadavg``) and the number of runnable
tasks (``/proc/loadavg``) before and after every timed configuration. ``--pause-pid PID``
(repeatable) stops a background job -- and its child processes -- with SIGSTOP for each
timed configuration and resumes it with SIGCONT afterwards, in a ``finally`` block (also
on Ctrl-C or SIGTERM). If this script is killed with SIGKILL, resume the job by hand:
``kill -CONT PID``.

Run::

    python benchmarks/bench_scan_sizes.py --pause-pid 12345          # full table -> benchmarks/results/
    python benchmarks/bench_scan_sizes.py --sizes 32 64 --repeats 1  # smoke check: prints, writes nothing

The report (``--out``, default ``benchmarks/results/inference_scan_sizes.md``) is written
only by a full run (all four sizes, both densities) or when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, write_report  # noqa: E402

logger = logging.getLogger("bench_scan_sizes")

#: The full table: scan sides and spot densities (name -> inclusive range of diffracted spots).
FULL_SIZES: tuple[int, ...] = (32, 64, 128, 256)
DENSITIES: dict[str, tuple[int, int]] = {"sparse": (8, 12), "dense": (55, 65)}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "inference_scan_sizes.md"


# --------------------------------------------------------------------------------------
# machine state
# --------------------------------------------------------------------------------------


def load_state() -> dict[str, Any]:
    """1-minute load average and runnable / total tasks (``/proc/loadavg``) now."""
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    runnable = "n/a"
    try:
        with open("/proc/loadavg") as f:
            runnable = f.read().split()[3]  # "running/total"
    except OSError:
        pass
    return {"load1": load1, "runnable": runnable}


def descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (from ``/proc/*/stat``); empty where /proc is missing."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # field 4 (ppid) follows the command name in parentheses, which may hold spaces
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out and child != os.getpid():
                out.append(child)
                todo.append(child)
    return out


@contextlib.contextmanager
def paused(pids: Sequence[int]) -> Iterator[list[int]]:
    """SIGSTOP ``pids`` and their descendants for the block; SIGCONT them in ``finally``."""
    targets: list[int] = []
    for pid in pids:
        for p in [pid, *descendants(pid)]:
            if p not in targets and p != os.getpid():
                targets.append(p)
    stopped: list[int] = []
    try:
        for p in targets:
            try:
                os.kill(p, signal.SIGSTOP)
                stopped.append(p)
            except ProcessLookupError:
                logger.warning("process %d is gone; not paused", p)
        if stopped:
            logger.info("paused %s (SIGSTOP)", stopped)
        yield stopped
    finally:
        for p in reversed(stopped):
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if stopped:
            logger.info("resumed %s (SIGCONT)", stopped)


def _terminate_cleanly(signum: int, _frame: Any) -> None:
    """SIGTERM / SIGHUP -> SystemExit, so that ``finally`` blocks resume the paused jobs."""
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------


def _load_model(name: str) -> tuple[torch.nn.Module, str]:
    from py4dstem_gnn.model import ModelConfig, PEAGGMoE
    from py4dstem_gnn.weights import available_models, load_model

    if name == "random" or (name == "default" and "default" not in available_models()):
        torch.manual_seed(0)
        return PEAGGMoE(ModelConfig()).eval(), "randomly initialised PEAGGMoE(ModelConfig()) (no shipped weights)"
    return load_model(name, device="cpu"), f"weights {name!r}"


def measure(
    bv: Any, net: torch.nn.Module, repeats: int, pause_pids: Sequence[int], batch_size: int | None
) -> dict[str, Any]:
    """Time ``classify_braggvectors`` on ``bv`` ``repeats`` times (paused background jobs)."""
    from py4dstem_gnn.classify import classify_braggvectors

    n_pos = int(np.prod(bv.Rshape))
    runs: list[dict[str, float]] = []
    with paused(pause_pids) as stopped:
        before = load_state()
        for _ in range(repeats):
            times: dict[str, float] = {}
            t0 = time.perf_counter()
            maps = classify_braggvectors(
                bv, model=net, device="cpu", batch_size=batch_size, progress=False, confidence_threshold=0.0,
                timings=times,
            )
            times["total"] = time.perf_counter() - t0
            runs.append(times)
        after = load_state()
    totals = [r["total"] for r in runs]
    median = statistics.median(totals)
    best = min(runs, key=lambda r: r["total"])
    n_spots = np.asarray(maps.get_slice("n_spots").data)
    return {
        "positions": n_pos,
        "median_spots": float(np.median(n_spots)),
        "median_s": median,
        "best_s": best["total"],
        "median_rate": n_pos / median,
        "best_rate": n_pos / best["total"],
        "read_s": best["read"],
        "model_s": best["model"],
        "post_s": best["post"],
        "load_before": before,
        "load_after": after,
        "paused": stopped,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(FULL_SIZES), help="scan sides (N for N x N)")
    parser.add_argument("--densities", nargs="+", default=list(DENSITIES), choices=list(DENSITIES))
    parser.add_argument("--model", default="default", help="'default', a weights path, or 'random'")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median reported)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: automatic (token budget)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pause-pid", type=int, action="append", default=[], metavar="PID",
        help="SIGSTOP this process (and its children) while timing, SIGCONT after; repeatable",
    )
    parser.add_argument("--out", default=None, help=f"report path (default {DEFAULT_OUT}, written by a full run only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate_cleanly)
    if args.threads:
        torch.set_num_threads(args.threads)
    for pid in args.pause_pid:
        os.kill(pid, 0)  # fails now (ProcessLookupError / PermissionError) rather than mid-run

    from py4dstem_gnn.data.synthetic import random_braggvectors
    from py4dstem_gnn.classify import classify_braggvectors

    full = set(FULL_SIZES) <= set(args.sizes) and set(DENSITIES) <= set(args.densities)
    out = Path(args.out) if args.out else (DEFAULT_OUT if full else None)
    net, model_desc = _load_model(args.model)
    start = load_state()
    lines = [
        "# Inference speed by scan size and spot density: classify_braggvectors end to end",
        "",
        f"Command: `{command_line('bench_scan_sizes.py', argv)}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads (intra-op), {torch.get_num_interop_threads()} inter-op threads; "
        f"load average (1 min) at start {start['load1']:.2f}, runnable/total tasks {start['runnable']}.",
        f"Paused while timing (SIGSTOP/SIGCONT, with children): {args.pause_pid or 'none'}.",
        f"Model: {model_desc}; {sum(p.numel() for p in net.parameters()):,} parameters; max_spots {net.config.max_spots}.",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "Synthetic calibrated BraggVectors (`random_braggvectors`, built before timing): a direct beam and "
        + ", ".join(f"{k} {lo}-{hi}" for k, (lo, hi) in DENSITIES.items() if k in args.densities)
        + " diffracted spots per position. `confidence_threshold=0` (every position with >= 5 spots is "
        f"classified and post-processed); median of {args.repeats} timed run(s) after a warm-up; the 1-minute "
        "load average lags, the runnable count is instantaneous.",
        "",
        "| scan | density | median spots | patterns/s (median) | patterns/s (best) | read (s) | model (s) | post (s) "
        "| load before -> after | runnable before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    # warm-up (thread pools, allocator, lazy imports): a small scan, not timed
    classify_braggvectors(random_braggvectors((8, 8), spots=(20, 30), seed=99), model=net, device="cpu",
                          progress=False, confidence_threshold=0.0)
    rows = []
    for size in args.sizes:
        for density in args.densities:
            t0 = time.perf_counter()
            bv = random_braggvectors((size, size), spots=DENSITIES[density], seed=args.seed)
            logger.info("built %d x %d %s BraggVectors in %.1f s", size, size, density, time.perf_counter() - t0)
            r = measure(bv, net, args.repeats, args.pause_pid, args.batch_size)
            del bv
            rows.append((size, density, r))
            line = (
                f"| {size} x {size} | {density} | {r['median_spots']:.0f} | {r['median_rate']:,.0f} | {r['best_rate']:,.0f} "
                f"| {r['read_s']:.2f} | {r['model_s']:.2f} | {r['post_s']:.2f} "
                f"| {r['load_before']['load1']:.2f} -> {r['load_after']['load1']:.2f} "
                f"| {r['load_before']['runnable']} -> {r['load_after']['runnable']} |"
            )
            lines.append(line)
            logger.info("%s", line)
    lines.append("")
    sys.stdout.write("\n".join(lines) + "\n")
    if out is not None:
        write_report(lines, out)
    else:
        logger.info("partial run (not all sizes and densities): no report written; pass --out to write one")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
