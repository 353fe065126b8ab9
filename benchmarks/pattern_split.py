"""How much does a split by *pattern* raise accuracy? (random forest, kinematic zone-axis patterns)

A split by pattern puts other orientations of the test materials into the training set: a
classifier can then recognise a material by its lattice spacings instead of reading its
symmetry. This script measures that effect with the random-forest baseline:

* ``--materials`` training-split materials are drawn; one forest is trained on
  ``--train-per-material`` fresh zone-axis patterns of each;
* it is tested on ``--test-per-material`` *other* patterns (new orientations) of
  ``--test-materials`` of those same materials (**split by pattern**) and on as many patterns of
  as many test-split materials (**split by group**, the package's own split).

With ``--weights NAME``, the shipped network is tested on the same two sets. It was trained on
every training-split material, so for it the first set is a split by pattern as well.

Usage::

    python benchmarks/pattern_split.py --library data/cache/kinematic \\
        [--materials 2000] [--train-per-material 8] [--test-materials 1000] [--test-per-material 2] \\
        [--no-augment] [--trees 40] [--seeds 0] [--weights default] [--out benchmarks/results/pattern_split.md]
"""

from __future__ import annotations

import argparse
import functools
import logging
import platform
import sys
import time

import numpy as np
from _report import command_line, run_split_experiment, write_report

from py4dstem_gnn.baselines.forest import RandomForestBaseline
from py4dstem_gnn.predict import predict_pointlists
from py4dstem_gnn.weights import load_model
from py4dstem_gnn.data.sources import KinematicSource

logger = logging.getLogger("pattern_split")

_load_model = functools.lru_cache(maxsize=None)(load_model)  # one load per weights name, shared by the seeds


def run_one(source: KinematicSource, test_split: KinematicSource, args: argparse.Namespace, seed: int) -> list[dict]:
    """Train one forest on a few materials, test it on new patterns of them and on test-split materials."""
    rng = np.random.default_rng(seed)
    mats = np.sort(rng.choice(source.materials, args.materials, replace=False))
    train_src = source.subset(mats)
    t0 = time.perf_counter()
    pls, cs, sg = train_src.fixed_set(per_material=args.train_per_material, seed=seed)
    rf = RandomForestBaseline(n_estimators_cs=args.trees, n_estimators_sg=args.trees, random_state=seed)
    rf.fit(pls, cs, sg)
    tests = {
        "pattern (same materials, new orientations)": train_src.fixed_set(
            per_material=args.test_per_material, seed=seed + 99, max_materials=args.test_materials),
        "group (package split)": test_split.fixed_set(
            per_material=args.test_per_material, seed=seed + 99, max_materials=args.test_materials),
    }
    classifiers = {"random forest": rf.predict}
    if args.weights:
        model = _load_model(args.weights)
        classifiers[f"network `{args.weights}`"] = lambda p: predict_pointlists(p, model=model, progress=False)
    rows = []
    for name, predict in classifiers.items():
        for kind, (test_pls, test_cs, test_sg) in tests.items():
            pred = predict(test_pls)
            rows.append({
                "classifier": name,
                "split": kind,
                "seed": seed,
                "train_patterns": len(pls) if name == "random forest" else None,
                "test_patterns": len(test_pls),
                "cs_acc": float(np.mean(pred.crystal_system == test_cs)),
                "sg_acc": float(np.mean(pred.space_group == test_sg)),
                "seconds": time.perf_counter() - t0,
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--library", required=True, help="kinematic structure-factor library")
    parser.add_argument("--materials", type=int, default=2000, help="training materials")
    parser.add_argument("--train-per-material", type=int, default=8, help="training patterns per material")
    parser.add_argument("--test-materials", type=int, default=1000, help="materials tested in each split")
    parser.add_argument("--test-per-material", type=int, default=2, help="test patterns per material")
    parser.add_argument("--trees", type=int, default=40, help="trees per forest (CS and each SG forest)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--no-augment", action="store_true", help="clean patterns (no realism augmentations)")
    parser.add_argument("--weights", default=None, help="also test these shipped weights (e.g. default)")
    parser.add_argument("--out", default="benchmarks/results/pattern_split.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    kw = dict(balance_power=0.0, augment=not args.no_augment)
    rows = run_split_experiment(run_one, args, **kw)

    lines = [
        "# Split by pattern vs split by material group (random forest, kinematic zone-axis patterns)",
        "",
        f"Command: `{command_line('pattern_split.py', argv)}`  ",
        f"Machine: {platform.machine()}, CPython {platform.python_version()}; one core.",
        "",
        f"Patterns: {'clean (no augmentations)' if args.no_augment else 'with the training augmentations'}; zone axes up to "
        "index 3 of the primitive cell, random in-plane rotation.",
        "",
        f"One forest per seed, trained on {args.train_per_material} patterns of each of {args.materials} training-split "
        f"materials; tested on {args.test_per_material} new patterns (fresh zone axes and rotations) of {args.test_materials} "
        "of those materials (split by pattern) and of as many test-split materials (split by group).",
        "",
        "| classifier | split | seed | training patterns | test patterns | CS acc (%) | SG acc (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n_train = "all training-split materials" if r["train_patterns"] is None else r["train_patterns"]
        lines.append(f"| {r['classifier']} | {r['split']} | {r['seed']} | {n_train} | {r['test_patterns']} | "
                     f"{100 * r['cs_acc']:.1f} | {100 * r['sg_acc']:.1f} |")
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
