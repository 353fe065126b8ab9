"""Speed of the match stage and of the whole pipeline on zone-axis patterns (issue 21's speed row).

Patterns: the stored Bloch-wave zone-axis test set (``data/bloch_test_za.h5``, median ~55 spots), cycled to
``--n`` patterns (128 x 128 = 16,384 by default, a scan's worth). Timed, each ``--repeats`` times
(median): the geometry (net measurement), the match stage against the whole-pool bank (geometry
included; bank loading and search structures built once before timing), and ``predict_pointlists``
with ``phases="pool"`` (match + network where needed + decision) and with ``phases=None`` (the network
alone). ``--pause-pid`` stops background jobs (SIGSTOP) while timing and resumes them (SIGCONT).

    python benchmarks/bench_match.py --pause-pid PID     # -> benchmarks/results/match_speed.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def paused(pids: Sequence[int]) -> Iterator[None]:
    """Stop the processes ``pids`` (SIGSTOP) for the block and always resume them (SIGCONT).

    A process that has already ended is skipped (with a message), not an error.
    """
    stopped = []
    try:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                print(f"pause: process {pid} has ended; not paused", file=sys.stderr, flush=True)
                continue
            stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16384, help="patterns timed (the test set cycled)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--pause-pid", type=int, action="append", default=[])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/match_speed.md"))
    args = ap.parse_args(argv)
    import torch

    from py4dstem_gnn.data.dataset import PatternSet
    from py4dstem_gnn.geometry import pattern_geometry
    from py4dstem_gnn.matching import load_bank, match_patterns
    import py4dstem_gnn as pg

    torch.set_num_threads(args.threads)
    ps = PatternSet.from_hdf5(ROOT / "data/bloch_test_za.h5")
    pls = ps.pointlists
    pls = [pls[i % len(pls)] for i in range(args.n)]
    bank = load_bank("pool")
    match_patterns(pls[:64], bank)  # KD-tree and padded templates built once, before timing
    pg.predict_pointlists(pls[:64])
    rows = []

    def timed(name, fn):
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        t = statistics.median(ts)
        rows.append((name, t, args.n / t))
        print(f"{name}: {args.n / t:.0f} patterns/s ({t:.1f} s)", flush=True)

    with paused(args.pause_pid):
        load = os.getloadavg()[0]
        timed("geometry (net measurement)", lambda: pattern_geometry(pls))
        timed("match stage (geometry + match, whole pool)", lambda: match_patterns(pls, bank))
        timed("predict_pointlists, phases='pool' (match + network + decision)", lambda: pg.predict_pointlists(pls))
        timed("predict_pointlists, phases=None (network alone)", lambda: pg.predict_pointlists(pls, phases=None))
    lines = ["# Match-stage speed (zone-axis patterns)\n", f"Command: `python {' '.join(sys.argv)}`  ",
             f"{args.n} patterns of `data/bloch_test_za.h5` (median {int(np.median([len(p) for p in pls]))} spots incl. the "
             f"direct beam), {args.threads} torch threads, {os.cpu_count()} CPUs, load average before timing {load:.2f}, "
             f"background jobs paused: {args.pause_pid or 'none'}; median of {args.repeats}.\n",
             "| stage | patterns/s | seconds |", "|---|---|---|"]
    lines += [f"| {n} | {r:,.0f} | {t:.1f} |" for n, t, r in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
