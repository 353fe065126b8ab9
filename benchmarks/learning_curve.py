"""Does more training data close the gap? Random-forest accuracy against the number of training patterns.

The paper trained on 3.6 M Bloch-wave patterns; the classifiers here saw 10^3–10^5. This script
measures how the random-forest baseline's held-out accuracy grows with its training set, on
kinematic zone-axis patterns of the package's own split (test materials never share a material
group with training ones), everything else fixed:

* for each ``--sizes`` value ``n``, one forest is trained on ``n`` patterns of the training split
  (materials uniform, fresh orientations; the same seed, so smaller sets are drawn the same way);
* each forest is tested on the same ``--per-material`` patterns of ``--test-materials`` test-split
  materials.

Usage::

    python benchmarks/learning_curve.py --library data/cache/kinematic \\
        [--sizes 2000 8000 32000] [--no-augment] [--in-plane random] [--trees 40] \\
        [--out benchmarks/results/learning_curve.md]
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time

import numpy as np
from _report import command_line, write_report

from py4dstem_gnn.baselines.forest import RandomForestBaseline
from py4dstem_gnn.data.orientations import IN_PLANE
from py4dstem_gnn.data.sources import KinematicSource

logger = logging.getLogger("learning_curve")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--library", required=True, help="kinematic structure-factor library")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000], help="training-set sizes (patterns)")
    parser.add_argument("--per-material", type=int, default=2, help="test patterns per test material")
    parser.add_argument("--test-materials", type=int, default=2500, help="test-split materials to test on")
    parser.add_argument("--trees", type=int, default=40, help="trees per forest (CS and each SG forest)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-augment", action="store_true", help="clean patterns (no realism augmentations)")
    parser.add_argument("--in-plane", choices=IN_PLANE, default="random",
                        help="in-plane rotation: random, or py4DSTEM's default frame tied to the crystal axes")
    parser.add_argument("--out", default="benchmarks/results/learning_curve.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    kw = dict(balance_power=0.0, augment=not args.no_augment, in_plane=args.in_plane)
    train = KinematicSource(args.library, split="train", **kw)
    test = KinematicSource(args.library, split="test", **kw)
    test_pls, test_cs, test_sg = test.fixed_set(per_material=args.per_material, seed=args.seed + 99,
                                                max_materials=args.test_materials)
    pls, cs, sg = train.sample(np.random.default_rng(args.seed), max(args.sizes))
    rows = []
    for n in sorted(args.sizes):
        t0 = time.perf_counter()
        rf = RandomForestBaseline(n_estimators_cs=args.trees, n_estimators_sg=args.trees, random_state=args.seed)
        rf.fit(pls[:n], cs[:n], sg[:n])
        pred = rf.predict(test_pls)
        row = {"n": n, "cs": float(np.mean(pred.crystal_system == test_cs)), "sg": float(np.mean(pred.space_group == test_sg)),
               "seconds": time.perf_counter() - t0}
        logger.info("%s", row)
        rows.append(row)

    n_test = len(test_pls)
    se = max(np.sqrt(r["cs"] * (1 - r["cs"]) / n_test) for r in rows)
    lines = [
        "# Random-forest accuracy against training-set size (kinematic zone-axis patterns, split by material group)",
        "",
        f"Command: `{command_line('learning_curve.py', argv)}`  ",
        f"Machine: {platform.machine()}, CPython {platform.python_version()}; one core.",
        "",
        f"Patterns: {'clean (no augmentations)' if args.no_augment else 'with the training augmentations'}; zone axes up to "
        f"index 3; in-plane rotation {args.in_plane}. Training: {len(train)} training-split materials, uniform draws. "
        f"Test: {n_test} patterns of {n_test // args.per_material} test-split materials (the same for every row; "
        f"binomial standard error of a CS figure ≤ {100 * se:.1f} points). Forests: {args.trees} trees each.",
        "",
        "| training patterns | CS acc (%) | SG acc (%) | fit + test (s) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['n']:,} | {100 * r['cs']:.1f} | {100 * r['sg']:.1f} | {r['seconds']:.0f} |")
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
