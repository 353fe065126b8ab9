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

from py4dstem_gnn.predict import Prediction, predict_pointlists
from py4dstem_gnn.data.sources import KinematicSource, load_pattern_set
from py4dstem_gnn.weights import load_model

logger = logging.getLogger("compare_weights")


def _flops(model, spots: int = 45) -> float:
    from py4dstem_gnn.info import forward_flops

    return forward_flops(model, spots) / 1e6


def _with_offsets(pred: Prediction, cs_offsets, sg_offsets) -> Prediction:
    """The prediction of the same heads with logit offsets added (softmax of log p + offset)."""
    if not cs_offsets:
        return pred

    def shift(p: np.ndarray, offset) -> np.ndarray:
        z = np.log(np.maximum(p, np.finfo(np.float32).tiny)) + np.asarray(offset)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    return Prediction.from_probs(shift(pred.crystal_system_probs, cs_offsets), shift(pred.space_group_probs, sg_offsets), pred.n_spots)


def _hits(pred: Prediction, cs: np.ndarray, sg: np.ndarray) -> tuple[int, int, int]:
    """Right crystal systems, right space groups, patterns."""
    return int(np.sum(pred.crystal_system == cs)), int(np.sum(pred.space_group == sg)), len(cs)


def _cell(hits: np.ndarray) -> str:
    """``CS / SG`` with offsets, and in brackets without (``hits``: rows with / without offsets)."""
    (c1, s1, n1), (c0, s0, n0) = hits
    return f"{100 * c1 / n1:.1f} / {100 * s1 / n1:.1f} ({100 * c0 / n0:.1f} / {100 * s0 / n0:.1f})"


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
        offsets = (model.config.cs_logit_adjustment, model.config.sg_logit_adjustment)
        model.set_logit_adjustment()  # one forward pass per set: raw heads, offsets added below
        cells, pooled = [], np.zeros((2, 3), dtype=np.int64)
        for key, (pls, cs, sg) in sets.items():
            raw = predict_pointlists(pls, model=model, device="cpu")
            hits = np.array([_hits(_with_offsets(raw, *offsets), cs, sg), _hits(raw, cs, sg)])
            if key in pooled_bloch:
                pooled += hits
            cells.append(_cell(hits))
        cells.append(_cell(pooled))
        model.set_logit_adjustment(*offsets)
        lines.append(f"| {name} | {model.num_parameters():,} | {_flops(model):.1f} | " + " | ".join(cells) + " |")
        logger.info("%s", lines[-1])
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
