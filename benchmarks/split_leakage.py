"""How much does splitting by material *group* lower accuracy? (random forest, kinematic patterns)

This package splits train/val/test by material group: materials of the same prototype, or with
the same formula and space group, never straddle splits (``py4dstem_gnn.structures``). A split by
single material lets near twins (the same prototype with other elements, the same compound
relaxed twice) sit on both sides, so a classifier can recognise a test pattern from a training
pattern of its twin. This script measures the size of that effect with the random-forest
baseline, holding everything else fixed:

* pool: the training split's materials in the kinematic library;
* **random split**: a random ``--holdout`` fraction of the *materials* is held out;
* **group split**: whole *groups* are held out (drawn with probability proportional to their size)
  until they hold the same fraction of materials;
* for each, the forest is trained on ``--train-patterns`` augmented zone-axis patterns of the
  remaining materials (uniform over materials) and tested on ``--per-material`` patterns of each
  held-out material.

Usage::

    python benchmarks/split_leakage.py --library data/cache/kinematic \\
        [--train-patterns 15000] [--holdout 0.1] [--per-material 2] [--trees 40] [--seeds 0] \\
        [--out benchmarks/results/split_leakage.md]
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

from py4dstem_gnn.baseline import RandomForestBaseline
from py4dstem_gnn.sources import KinematicSource

logger = logging.getLogger("split_leakage")


def _holdout(source: KinematicSource, kind: str, fraction: float, rng: np.random.Generator) -> np.ndarray:
    mats = source.materials
    if kind == "random":
        return np.sort(rng.choice(mats, int(round(fraction * len(mats))), replace=False))
    groups = source.manifest["group"][mats]
    names, sizes = np.unique(groups, return_counts=True)
    # groups drawn with probability proportional to their size, so that every material is about
    # as likely to be held out as in the random split (only whole groups at a time)
    order = rng.choice(len(names), size=len(names), replace=False, p=sizes / sizes.sum())
    n_groups = int(np.searchsorted(np.cumsum(sizes[order]), fraction * len(mats))) + 1
    return np.sort(mats[np.isin(groups, names[order[:n_groups]])])


def run_one(source: KinematicSource, kind: str, args: argparse.Namespace, seed: int) -> dict:
    """Train and test one forest for one split kind; returns the figures."""
    rng = np.random.default_rng([seed, 0 if kind == "random" else 1])
    held = _holdout(source, kind, args.holdout, rng)
    train_src = source.subset(np.setdiff1d(source.materials, held))
    test_src = source.subset(held)
    t0 = time.perf_counter()
    pls, cs, sg = train_src.sample(rng, args.train_patterns)
    test_pls, test_cs, test_sg = test_src.fixed_set(per_material=args.per_material, seed=seed + 99)
    rf = RandomForestBaseline(n_estimators_cs=args.trees, n_estimators_sg=args.trees, random_state=seed)
    rf.fit(pls, cs, sg)
    pred = rf.predict(test_pls)
    majority = np.bincount(cs, minlength=7).argmax()
    shared_groups = np.isin(source.manifest["group"][held], source.manifest["group"][train_src.materials])
    return {
        "split": kind,
        "seed": seed,
        "train_materials": len(train_src),
        "test_materials": len(held),
        "test_materials_with_a_group_twin_in_train": float(shared_groups.mean()),
        "test_patterns": len(test_pls),
        "cs_acc": float(np.mean(pred.crystal_system == test_cs)),
        "sg_acc": float(np.mean(pred.space_group == test_sg)),
        "majority_cs_acc": float(np.mean(test_cs == majority)),
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--library", required=True, help="kinematic structure-factor library")
    parser.add_argument("--train-patterns", type=int, default=15000)
    parser.add_argument("--holdout", type=float, default=0.1, help="fraction of the pool held out")
    parser.add_argument("--per-material", type=int, default=2, help="test patterns per held-out material")
    parser.add_argument("--trees", type=int, default=40, help="trees per forest (CS and each SG forest)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default="benchmarks/results/split_leakage.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    source = KinematicSource(args.library, split="train", balance_power=0.0)
    rows = []
    for seed in args.seeds:
        for kind in ("random", "group"):
            row = run_one(source, kind, args, seed)
            logger.info("%s", row)
            rows.append(row)

    lines = [
        "# Split by material vs split by material group (random forest, kinematic zone-axis patterns)",
        "",
        f"Command: `python benchmarks/split_leakage.py {' '.join(sys.argv[1:] if argv is None else argv)}`  ",
        f"Machine: {platform.machine()}, CPython {platform.python_version()}; one core.",
        "",
        "Pool: training-split materials of the kinematic library. Forests trained on augmented zone-axis",
        "patterns of the remaining materials (uniform over materials) and tested on patterns of the held-out ones.",
        "",
        "| split | seed | train materials | test materials | test materials whose group is also in train | test patterns | CS acc (%) | SG acc (%) | majority CS (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['split']} | {r['seed']} | {r['train_materials']} | {r['test_materials']} | "
            f"{100 * r['test_materials_with_a_group_twin_in_train']:.0f} % | {r['test_patterns']} | "
            f"{100 * r['cs_acc']:.1f} | {100 * r['sg_acc']:.1f} | {100 * r['majority_cs_acc']:.1f} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
