"""How much does splitting by material *group* lower accuracy? (random forest, kinematic patterns)

This package splits train/val/test by material group: materials of the same prototype, or with
the same formula and space group, never straddle splits (``py4dstem_gnn.data.structures``). A split by
single material lets near twins (the same prototype with other elements, the same compound
relaxed twice) sit on both sides, so a classifier can recognise a test pattern from a training
pattern of its twin. This script measures the size of that effect with the random-forest
baseline, holding everything else fixed:

* a random ``--holdout`` fraction of the training split's *materials* is held out (a split by
  material: most of them keep a group twin among the training materials);
* one forest is trained on ``--train-patterns`` zone-axis patterns (augmented unless
  ``--no-augment``) of the remaining training materials (uniform over materials);
* it is tested on ``--per-material`` patterns of each held-out material (**random split**) and of
  ``--test-materials`` materials of the test split (**group split**, the package's own split).

Usage::

    python benchmarks/split_leakage.py --library data/cache/kinematic \\
        [--train-patterns 15000] [--holdout 0.1] [--per-material 2] [--test-materials 2500] \\
        [--trees 40] [--seeds 0] [--no-augment] [--max-index 3] [--out benchmarks/results/split_leakage.md]
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time

import numpy as np
from _report import command_line, run_split_experiment, write_report

from py4dstem_gnn.baselines.forest import RandomForestBaseline
from py4dstem_gnn.data.orientations import IN_PLANE
from py4dstem_gnn.data.sources import KinematicSource

logger = logging.getLogger("split_leakage")


def run_one(source: KinematicSource, test_split: KinematicSource, args: argparse.Namespace, seed: int) -> list[dict]:
    """Train one forest, test it on both kinds of held-out materials; returns one row per kind."""
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(source.materials, int(round(args.holdout * len(source))), replace=False))
    train_src = source.subset(np.setdiff1d(source.materials, held))
    t0 = time.perf_counter()
    pls, cs, sg = train_src.sample(rng, args.train_patterns)
    rf = RandomForestBaseline(n_estimators_cs=args.trees, n_estimators_sg=args.trees, random_state=seed)
    rf.fit(pls, cs, sg)
    majority = np.bincount(cs, minlength=7).argmax()
    train_groups = source.manifest["group"][train_src.materials]
    rows = []
    # kind -> (held-out materials, test patterns); test-split materials never share a group with training ones
    tests = {
        "random (by material)": (held, source.subset(held).fixed_set(per_material=args.per_material, seed=seed + 99)),
        "group (package split)": (None, test_split.fixed_set(per_material=args.per_material, seed=seed + 99, max_materials=args.test_materials)),
    }
    for kind, (mats, (test_pls, test_cs, test_sg)) in tests.items():
        pred = rf.predict(test_pls)
        rows.append({
            "split": kind,
            "seed": seed,
            "train_materials": len(train_src),
            "test_materials": len(test_pls) // args.per_material,
            "twin_fraction": float(np.isin(source.manifest["group"][mats], train_groups).mean()) if mats is not None else 0.0,
            "test_patterns": len(test_pls),
            "cs_acc": float(np.mean(pred.crystal_system == test_cs)),
            "sg_acc": float(np.mean(pred.space_group == test_sg)),
            "majority_cs_acc": float(np.mean(test_cs == majority)),
            "seconds": time.perf_counter() - t0,
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--library", required=True, help="kinematic structure-factor library")
    parser.add_argument("--train-patterns", type=int, default=15000)
    parser.add_argument("--holdout", type=float, default=0.1, help="fraction of the pool held out")
    parser.add_argument("--per-material", type=int, default=2, help="test patterns per held-out material")
    parser.add_argument("--test-materials", type=int, default=2500, help="test-split materials to test on")
    parser.add_argument("--trees", type=int, default=40, help="trees per forest (CS and each SG forest)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--no-augment", action="store_true", help="clean patterns (reference excitation error, no realism augmentations)")
    parser.add_argument("--max-index", type=int, default=3, help="largest Miller index of the zone axes (primitive cell)")
    parser.add_argument("--in-plane", choices=IN_PLANE, default="random",
                        help="in-plane rotation: random (as a detector sees it) or py4DSTEM's default frame tied to the crystal axes")
    parser.add_argument("--orientations", choices=["zone_axis", "uniform"], default="zone_axis",
                        help="low-index zone axes (default) or uniform over all directions")
    parser.add_argument("--out", default="benchmarks/results/split_leakage.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    kw = dict(balance_power=0.0, augment=not args.no_augment, max_index=args.max_index, in_plane=args.in_plane,
              orientations=args.orientations)
    rows = run_split_experiment(run_one, args, **kw)

    geometry = (f"zone axes up to index {args.max_index} of the primitive cell" if args.orientations == "zone_axis"
                else "beam directions uniform over the sphere")
    frame = ("in-plane rotation random" if args.in_plane == "random" else
             "in-plane rotation fixed by the crystal axes (py4DSTEM's default frame: detector x = projection of "
             "the crystal's Cartesian -z)")
    lines = [
        "# Split by material vs split by material group (random forest, kinematic zone-axis patterns)",
        "",
        f"Command: `{command_line('split_leakage.py', argv)}`  ",
        f"Machine: {platform.machine()}, CPython {platform.python_version()}; one core.",
        "",
        f"Patterns: {'clean (no augmentations)' if args.no_augment else 'with the training augmentations'}; "
        f"{geometry}; {frame}.",
        "",
        "One forest per seed, trained on zone-axis patterns of the training split minus a random",
        f"{100 * args.holdout:.0f} % of its materials (uniform over materials); tested on those held-out materials (split by",
        "material) and on test-split materials (split by group: no test material shares a group with a training one).",
        "",
        "| split | seed | train materials | test materials | test materials whose group is also in train | test patterns | CS acc (%) | SG acc (%) | majority CS (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['split']} | {r['seed']} | {r['train_materials']} | {r['test_materials']} | "
            f"{100 * r['twin_fraction']:.0f} % | {r['test_patterns']} | "
            f"{100 * r['cs_acc']:.1f} | {100 * r['sg_acc']:.1f} | {100 * r['majority_cs_acc']:.1f} |"
        )
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
