"""Compare candidate weights on the validation sets (the model-selection table of the model card).

For each weights file: parameters, forward FLOPs per pattern, and single-pattern accuracy on the
Bloch-wave validation sets and on a fixed kinematic validation set (validation-split materials),
with the card's logit adjustment (as shipped) and without it (raw heads). The test set is not
touched: selection happens here, the test figures come from ``py4dstem-gnn evaluate``.

Usage::

    python benchmarks/compare_weights.py NAME=WEIGHTS [NAME=WEIGHTS ...] \\
        [--val data/bloch_val.h5 data/bloch_val_large.h5] [--library data/cache/kinematic] \\
        [--kinematic-materials 1000] [--out benchmarks/results/model_selection.md]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from _report import command_line, write_report

from py4dstem_gnn.inference import predict_pointlists
from py4dstem_gnn.sources import KinematicSource, load_pattern_set
from py4dstem_gnn.weights import load_model

logger = logging.getLogger("compare_weights")


def _flops(model, spots: int = 45) -> float:
    from py4dstem_gnn.info import forward_flops

    return forward_flops(model, spots) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", nargs="+", metavar="NAME=WEIGHTS")
    parser.add_argument("--val", nargs="+", default=["data/bloch_val.h5", "data/bloch_val_large.h5"])
    parser.add_argument("--library", default=None, help="kinematic library: adds a kinematic validation set")
    parser.add_argument("--kinematic-materials", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/model_selection.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    sets = {}
    for path in args.val:
        ps = load_pattern_set(path)
        sets[f"{Path(path).stem} ({len(np.unique(ps.material))} mat. × {len(ps) // max(1, len(np.unique(ps.material)))})"] = (
            ps.pointlists, np.asarray(ps.crystal_system), np.asarray(ps.space_group))
    if args.library:
        src = KinematicSource(args.library, split="val")
        sets[f"kinematic val ({args.kinematic_materials} mat. × 2)"] = src.fixed_set(per_material=2, seed=1234, max_materials=args.kinematic_materials)
    pooled_bloch = [k for k in sets if not k.startswith("kinematic")]

    header = "| weights | parameters | MFLOP/pattern (45 spots) | " + " | ".join(f"{k}: CS / SG (%)" for k in sets)
    header += " | Bloch val pooled: CS / SG (%) |"
    lines = [
        "# Candidate weights on the validation sets (single pattern)",
        "",
        f"Command: `{command_line('compare_weights.py', argv)}`",
        "",
        "Each cell: with the card's logit adjustment (as shipped) — in brackets without it (raw heads).",
        "",
        header,
        "|---|---|---|" + "---|" * (len(sets) + 1),
    ]
    for spec in args.weights:
        name, _, path = spec.partition("=")
        model = load_model(path or name)
        adjustment = (model.config.cs_logit_adjustment, model.config.sg_logit_adjustment)
        cells, pooled = [], {True: [0, 0, 0], False: [0, 0, 0]}
        for key, (pls, cs, sg) in sets.items():
            acc = {}
            for adjusted in (True, False):
                model.set_logit_adjustment(*adjustment) if adjusted else model.set_logit_adjustment()
                pred = predict_pointlists(pls, model=model, device="cpu")
                acc[adjusted] = (np.sum(pred.crystal_system == cs), np.sum(pred.space_group == sg), len(cs))
                if key in pooled_bloch:
                    pooled[adjusted] = [a + b for a, b in zip(pooled[adjusted], acc[adjusted])]
            cells.append(f"{100 * acc[True][0] / acc[True][2]:.1f} / {100 * acc[True][1] / acc[True][2]:.1f} "
                         f"({100 * acc[False][0] / acc[False][2]:.1f} / {100 * acc[False][1] / acc[False][2]:.1f})")
        cells.append(f"{100 * pooled[True][0] / pooled[True][2]:.1f} / {100 * pooled[True][1] / pooled[True][2]:.1f} "
                     f"({100 * pooled[False][0] / pooled[False][2]:.1f} / {100 * pooled[False][1] / pooled[False][2]:.1f})")
        model.set_logit_adjustment(*adjustment)
        lines.append(f"| {name} | {model.num_parameters():,} | {_flops(model):.1f} | " + " | ".join(cells) + " |")
        logger.info("%s", lines[-1])
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
