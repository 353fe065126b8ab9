"""Spots as py4DSTEM detects them (issue 22): stored detected sets, damage by cause, robust aggregation.

Two steps:

``python benchmarks/detection.py build``
    Renders the stored Bloch-wave sets (``data/bloch_test_za.h5``, ``data/bloch_test_random.h5`` and the
    validation set ``data/bloch_val_za.h5``) on every detector preset of
    :mod:`py4dstem_gnn.data.detector`, detects them with ``find_Bragg_disks`` and writes
    ``data/detected_<preset>_{za,random,val_za}.h5``: same rows, labels, materials, orientations,
    regimes and zone axes, pointlists replaced by the detected, calibrated ones (the validation copies
    go to the git-ignored ``data/cache/``).
``python benchmarks/detection.py measure``
    Spot statistics, the damage of each cause to the net measurement and to the network, the
    aggregation rules on the detected validation set and the test sets; writes
    ``benchmarks/results/detection.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, write_report  # noqa: E402

logger = logging.getLogger("benchmarks.detection")

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"za": "data/bloch_test_za.h5", "random": "data/bloch_test_random.h5", "val_za": "data/bloch_val_za.h5"}


def detected_path(preset: str, which: str) -> Path:
    """Stored test sets in ``data/``; the validation copies (used to choose the aggregation rule) in the
    git-ignored ``data/cache/`` (rebuilt by ``build --sets val_za``, deterministic)."""
    folder = ROOT / "data" / ("cache" if which.startswith("val") else "")
    return folder / f"detected_{preset}_{which}.h5"


def seed_of(preset: str, which: str) -> int:
    return zlib.crc32(f"{preset}/{which}".encode()) & 0x7FFFFFFF


def build(args) -> None:
    from py4dstem_gnn.data.dataset import PatternSet
    from py4dstem_gnn.data.detector import detect_pointlists, get_preset

    for name in args.presets:
        for which in args.sets:
            src = PatternSet.from_hdf5(ROOT / SOURCES[which])
            out = detected_path(name, which)
            if out.exists() and not args.overwrite:
                logger.info("%s exists; skipped", out)
                continue
            preset = get_preset(name)
            seed = seed_of(name, which)
            t0 = time.perf_counter()
            det = detect_pointlists(src.pointlists, preset, seed=seed, chunk=args.chunk)
            dt = time.perf_counter() - t0
            attrs = {k: v for k, v in src.attrs.items() if k != "skipped_materials"}
            attrs.update({f"detector_{k}": v for k, v in preset.to_dict().items()})
            attrs.update({"detected_from": SOURCES[which], "detector_seed": seed, "detector_chunk": args.chunk,
                          "detector_seconds_per_pattern": dt / max(len(src), 1),
                          "command": command_line("detection.py", None)})
            ps = PatternSet.from_pointlists(det, src.material, src.space_group, src.crystal_system,
                                            src.orientation, attrs, src.regime, src.uvw)
            ps.to_hdf5(out)
            logger.info("%s: %d patterns, %.1f ms/pattern, %.2f MB", out.name, len(ps), 1e3 * dt / len(ps),
                        out.stat().st_size / 1e6)


def sweep(args) -> None:
    """Crystal-system accuracy against the detection threshold of one preset (zone-axis test set)."""
    from py4dstem_gnn.data.dataset import PatternSet
    from py4dstem_gnn.data.detector import detect_pointlists, get_preset
    from py4dstem_gnn.data.structures import load_manifest
    from detection_measure import bootstrap, fmt_ci, predict, shares

    src = PatternSet.from_hdf5(ROOT / SOURCES["za"])
    groups = np.asarray(load_manifest()["group"])[src.material]
    y = src.crystal_system.astype(int)
    base = get_preset(args.preset)
    lines = [f"# Detection threshold sweep, {base.name}, zone-axis test set", "",
             f"Command: `{command_line('detection.py', None)}`", "",
             "Same rendering (seed as the stored set), `find_Bragg_disks` with `minRelativeIntensity` varied; shipped "
             "default weights; intervals: 95 % bootstrap over material groups.", "",
             "| minRelativeIntensity | diffracted peaks / pattern | CS accuracy | ortho share |", "|---|---|---|---|"]
    for rel in args.thresholds:
        det = detect_pointlists(src.pointlists, base.with_(min_relative_intensity=rel), seed=seed_of(base.name, "za"),
                                chunk=args.chunk)
        p = predict(det, args.model)
        b = bootstrap(p.crystal_system == y, groups, 1000)
        n = np.mean([max(len(d) - 1, 0) for d in det])
        lines.append(f"| {rel:g} | {n:.1f} | {fmt_ci(b)} | {100 * shares(p.crystal_system)[2]:.1f} |")
        logger.info(lines[-1])
    write_report(lines, args.out)


def match(args) -> None:
    """The package default (match stage against the template bank, then the network): clean vs detected."""
    import py4dstem_gnn as pg
    from py4dstem_gnn.data.dataset import PatternSet
    from py4dstem_gnn.data.structures import load_manifest
    from detection_measure import bootstrap, fmt_ci, shares

    group_of = np.asarray(load_manifest()["group"])
    lines = ["# Match stage + network (the package default, `phases=\"pool\"`) on detected spots", "",
             f"Command: `{command_line('detection.py', None)}`", "",
             "`predict_pointlists(pointlists)` with its defaults (template bank of the whole pool, then the network "
             "where the match is not decisive), CPU. Intervals: 95 % bootstrap over material groups. Multi-view: "
             "`aggregate_views` (product rule) over the zone axes of each material.", "",
             "| set | input | single-pattern CS | multi-view CS (product) | max predicted/true share |",
             "|---|---|---|---|---|"]
    for which in ("za", "random"):
        src = PatternSet.from_hdf5(ROOT / SOURCES[which])
        y = src.crystal_system.astype(int)
        groups = group_of[src.material]
        inputs = [("clean", src)] + [(name, PatternSet.from_hdf5(detected_path(name, which))) for name in args.presets]
        for label, ps in inputs:
            t0 = time.perf_counter()
            p = pg.predict_pointlists(ps.pointlists, device="cpu")
            b = bootstrap(p.crystal_system == y, groups, 1000)
            mv = ""
            if which == "za":
                agg = pg.aggregate_views(p, src.material)
                first = np.unique(src.material, return_index=True)[1]
                mv = fmt_ci(bootstrap(agg.crystal_system == y[first], group_of[np.unique(src.material)], 1000))
            ts, sh = shares(y), shares(p.crystal_system)
            r = sh / np.maximum(ts, 1e-9)
            lines.append(f"| {which} | {label} | {fmt_ci(b)} | {mv} | {r.max():.2f} (class {int(np.argmax(r))}) |")
            logger.info("%s (%.0f s)", lines[-1], time.perf_counter() - t0)
    write_report(lines, args.out)


def main(argv=None) -> None:
    from py4dstem_gnn.data.detector import PRESETS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the detected sets")
    b.add_argument("--presets", nargs="+", default=list(PRESETS))
    b.add_argument("--sets", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    b.add_argument("--chunk", type=int, default=64)
    b.add_argument("--overwrite", action="store_true")
    m = sub.add_parser("measure", help="statistics, causes, aggregation -> report")
    m.add_argument("--presets", nargs="+", default=list(PRESETS))
    m.add_argument("--model", default="default")
    m.add_argument("--n-boot", type=int, default=1000)
    m.add_argument("--max-materials", type=int, default=0, help="seeded subset of whole materials (0: all)")
    m.add_argument("--out", default=str(ROOT / "benchmarks/results/detection.md"))
    w = sub.add_parser("sweep", help="accuracy against the detection threshold of one preset")
    w.add_argument("--preset", default="hybrid128_lowdose")
    w.add_argument("--thresholds", nargs="+", type=float, default=[0.005, 0.002, 0.001])
    w.add_argument("--model", default="default")
    w.add_argument("--chunk", type=int, default=64)
    w.add_argument("--out", default=str(ROOT / "benchmarks/results/detection_threshold.md"))
    mt = sub.add_parser("match", help="the package default (match stage + network), clean vs detected")
    mt.add_argument("--presets", nargs="+", default=list(PRESETS))
    mt.add_argument("--out", default=str(ROOT / "benchmarks/results/detection_match.md"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("py4DSTEM").setLevel(logging.WARNING)
    if args.cmd == "build":
        build(args)
    elif args.cmd == "match":
        match(args)
    elif args.cmd == "sweep":
        sweep(args)
    else:
        from detection_measure import measure  # noqa: E402

        measure(args)


if __name__ == "__main__":
    main()
