"""Train a reference classifier for one protocol on kinematic patterns: the gradient-boosting reference
(lattice descriptors, ``--kind gb``) or the random forest of Gleason et al. (``--kind rf``).

The patterns follow the training recipe of the network (conventional-cell zone axes with a share at
random orientations, the Bloch-matched spot selection, calibrated augmentation), drawn from the training
side of the protocol's split (``known``: the whole pool). The fitted reference is written with joblib
(pickle: load only files you made) for ``py4dstem-gnn evaluate --reference PROTOCOL=PATH``.

Usage::

    python benchmarks/train_reference.py --library data/cache/kinematic --protocol unseen-type \\
        --patterns 30000 --out data/cache/reference_unseen-type.joblib
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from py4dstem_gnn.data.sources import KinematicSource
from py4dstem_gnn.baselines.forest import RandomForestBaseline
from py4dstem_gnn.baselines.reference import GradientBoostingReference
from py4dstem_gnn.training.cli import PROTOCOL_SPLITS

logger = logging.getLogger("train_reference")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--library", required=True)
    ap.add_argument("--protocol", choices=list(PROTOCOL_SPLITS), default="unseen-type")
    ap.add_argument("--patterns", type=int, default=30000)
    ap.add_argument("--random-fraction", type=float, default=0.2)
    ap.add_argument("--kind", choices=["gb", "rf"], default="gb")
    ap.add_argument("--trees", type=int, default=40, help="trees per forest (--kind rf)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    column, split, _ = PROTOCOL_SPLITS[args.protocol]
    src = KinematicSource(args.library, split=split, split_column=column, random_fraction=args.random_fraction)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    pls, cs, sg = src.sample(rng, args.patterns)
    t1 = time.perf_counter()
    if args.kind == "gb":
        ref = GradientBoostingReference(random_state=args.seed)
    else:
        ref = RandomForestBaseline(n_estimators_cs=args.trees, n_estimators_sg=args.trees, random_state=args.seed)
    ref.fit(pls, cs, sg)
    t2 = time.perf_counter()
    ref.save(args.out)
    logger.info("%s %s: %d patterns of %d materials; simulated in %.0f s, fitted in %.0f s; wrote %s",
                args.kind, args.protocol, args.patterns, len(src), t1 - t0, t2 - t1, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
