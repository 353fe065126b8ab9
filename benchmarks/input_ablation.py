"""Weights compared at equal training compute (input ablation, model sizes), with group-bootstrap intervals.

Every arm is a set of weights trained with the same command from the same starting weights for the
same number of steps (``runs/ablate.sh`` style: ``py4dstem-gnn train --init-from W --steps S ...``
with only ``--model`` changed). Each arm is scored on the same fixed validation patterns:

* the kinematic validation set a training run monitors (``--per-material`` fresh patterns of every
  material of the protocol's validation split, the recipe of training: conventional zone axes and
  20 % random orientations, Bloch-matched spots, calibrated augmentation; seed 1234), and
* stored Bloch-wave validation sets (``--val-set NAME=PATH``),

(``--held-out``: only the stored patterns of the protocol's validation-split materials, for runs that
did not train on them) by the mean cross-entropy (crystal system + space group, the training objective without the
load-balancing term) and the accuracies; differences to the first arm get a paired bootstrap
interval over the manifest's material groups (``py4dstem_gnn.evaluation.bootstrap``).

Run (from the repository root)::

    python benchmarks/input_ablation.py --library data/cache/kinematic \\
        --arm baseline=runs/ablate_a/cooldown_600.safetensors \\
        --arm lattice_token=runs/ablate_b/cooldown_600.safetensors \\
        --val-set bloch_val_za=data/bloch_val_za.h5 --val-set bloch_val_random=data/bloch_val_random.h5
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from py4dstem_gnn.data.augment import AugmentConfig
from py4dstem_gnn.data.kinematic import SpotSelection
from py4dstem_gnn.data.sources import KinematicSource, load_pattern_set
from py4dstem_gnn.data.structures import load_manifest
from py4dstem_gnn.evaluation.bootstrap import group_bootstrap, group_bootstrap_difference
from py4dstem_gnn.training.cli import PROTOCOL_SPLITS
from py4dstem_gnn.training.train import predict_logits
from py4dstem_gnn.weights import load_model, read_card, resolve_weights

logger = logging.getLogger("input_ablation")


def per_pattern(weights: str, pointlists: list, cs: np.ndarray, sg: np.ndarray) -> dict[str, np.ndarray]:
    """Loss and correctness of every pattern under one set of weights."""
    model = load_model(weights)
    cs_logits, sg_logits = predict_logits(model, pointlists)
    cs_t, sg_t = torch.as_tensor(cs, dtype=torch.long), torch.as_tensor(sg, dtype=torch.long) - 1
    loss = (F.cross_entropy(torch.from_numpy(cs_logits), cs_t, reduction="none")
            + F.cross_entropy(torch.from_numpy(sg_logits), sg_t, reduction="none")).numpy()
    return {"loss": loss, "cs": cs_logits.argmax(1) == cs, "sg": sg_logits.argmax(1) + 1 == sg}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arm", action="append", required=True, metavar="NAME=WEIGHTS", help="first arm = reference")
    ap.add_argument("--library", required=True)
    ap.add_argument("--protocol", default="known", choices=list(PROTOCOL_SPLITS))
    ap.add_argument("--per-material", type=int, default=13)
    ap.add_argument("--val-set", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--held-out", action="store_true",
                    help="keep only the stored-set patterns of the protocol's validation-split materials")
    ap.add_argument("--title", default="Network input ablation at equal training compute")
    ap.add_argument("--out", default="benchmarks/results/input_ablation.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    torch.set_num_threads(args.threads)
    arms = [a.partition("=")[::2] for a in args.arm]
    manifest = load_manifest()
    group_of = np.asarray(manifest["group"])

    column, _, val_split = PROTOCOL_SPLITS[args.protocol]
    source = KinematicSource(args.library, None, split=val_split, split_column=column,
                             augment=AugmentConfig.preset("calibrated"), axes="conventional", random_fraction=0.2,
                             tilt_deg=1.0, selection=SpotSelection(), in_plane="random")
    pick, rng = source._evaluation_picks(args.per_material, 1234, None)
    pls, cs, sg = source.patterns(pick, rng)
    sets = {"val_kinematic": (pls, cs, sg, np.asarray(source.materials)[pick])}
    for spec in args.val_set:
        name, _, path = spec.partition("=")
        ps = load_pattern_set(path)
        if args.held_out:
            ps = ps.subset(np.flatnonzero(np.isin(ps.material, manifest.indices(val_split, column))))
        sets[name] = (ps.pointlists, ps.crystal_system.astype(np.int64), ps.space_group.astype(np.int64), ps.material)

    lines = [f"# {args.title}", "",
             f"Command: `python benchmarks/input_ablation.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             "Mean cross-entropy (crystal system + space group) and accuracies per pattern; brackets: 95 % "
             f"bootstrap interval over material groups ({args.boot} replicates); Δ: arm minus `{arms[0][0]}`, "
             "paired (same group draws).", ""]
    lines += ["| arm | weights | steps | patterns seen (this run) |", "|---|---|---|---|"]
    for name, w in arms:
        tr = read_card(resolve_weights(w)).get("training", {})
        lines.append(f"| {name} | `{w}` | {tr.get('steps', '?')} | {tr.get('patterns_seen', '?'):,} |")
    for set_name, (p, c, s, mat) in sets.items():
        groups = group_of[np.asarray(mat, dtype=np.int64)]
        results = {name: per_pattern(w, p, c, s) for name, w in arms}
        lines += ["", f"## {set_name}: {len(p):,} patterns, {len(np.unique(mat)):,} materials, "
                  f"{len(np.unique(groups)):,} groups", "",
                  "| arm | loss | Δ loss | CS % | Δ CS points | SG % | Δ SG points |", "|---|---|---|---|---|---|---|"]
        ref = results[arms[0][0]]
        for name, _ in arms:
            r = results[name]
            row = [name]
            for key, scale in (("loss", 1.0), ("cs", 100.0), ("sg", 100.0)):
                v = r[key].astype(float)
                bi = group_bootstrap(v, groups, n_boot=args.boot)
                row.append(f"{scale * bi.mean:.3f} [{scale * bi.low:.3f}, {scale * bi.high:.3f}]" if key == "loss"
                           else f"{scale * bi.mean:.1f} [{scale * bi.low:.1f}, {scale * bi.high:.1f}]")
                if name == arms[0][0]:
                    row.append("–")
                else:
                    d = group_bootstrap_difference(v, groups, ref[key].astype(float), groups, n_boot=args.boot)
                    row.append(f"{scale * d.mean:+.3f} [{scale * d.low:+.3f}, {scale * d.high:+.3f}]" if key == "loss"
                               else f"{scale * d.mean:+.1f} [{scale * d.low:+.1f}, {scale * d.high:+.1f}]")
            lines.append("| " + " | ".join(row) + " |")
            logger.info("%s %s: %s", set_name, name, row[1:])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
