"""Command line ``py4dstem-gnn bank``: build the whole-pool template bank, fit the decision, describe a bank."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["configure_parser", "run_cli", "decision_conditions"]

logger = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``py4dstem-gnn bank``."""
    sub = parser.add_subparsers(dest="action", metavar="action", required=True)
    b = sub.add_parser("build", help="build the whole-pool bank from the kinematic library (resumable, sharded)")
    b.add_argument("--library", default=None, help="kinematic library shards (default data/cache/kinematic)")
    b.add_argument("--out", default=None, help="bank file (default weights/bank_pool.npz)")
    b.add_argument("--workers", type=int, default=1, help="local worker processes (one BLAS thread each)")
    b.add_argument("--max-axes", type=int, default=24, help="distinct zone axes per structure, shortest repeat first")
    b.add_argument("--max-index", type=int, default=3, help="largest index of the conventional zone axes")
    b.add_argument("--n-spots", type=int, default=20, help="reflections kept per template (one of each Friedel pair)")
    f = sub.add_parser("fit-decision", help="fit the match/network decision on validation sets -> weights/decision.json")
    f.add_argument("--val", nargs="+", default=["data/bloch_val_za.h5", "data/bloch_val_random.h5"],
                   help="stored validation sets (PatternSet HDF5)")
    f.add_argument("--bank", default="pool", help="bank name or path (default: the shipped pool bank)")
    f.add_argument("--weights", default="default", help="network weights")
    f.add_argument("--goal", type=float, default=0.9, help="accuracy goal of the default confidence threshold")
    f.add_argument("--out", default=None, help="output JSON (default weights/decision.json)")
    i = sub.add_parser("info", help="size and contents of a bank")
    i.add_argument("bank", nargs="?", default="pool", help="bank name or path (default: the shipped pool bank)")


def decision_conditions(patterns: Any, bank: Any, net: Any, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Match + network outputs of validation patterns under the known / unseen / perturbed conditions."""
    from ..data.structures import load_manifest
    from ..network_stage import network_probabilities
    from ..predict import resolve_device
    from ..features import split_direct_beam
    from .matcher import match_patterns
    from ..confidence.decision_fit import perturb_patterns

    manifest = load_manifest()
    dev = resolve_device("cpu")
    spots = [np.asarray(split_direct_beam(p)[0], np.float32).reshape(-1, 3) for p in patterns.pointlists]
    mats = patterns.material
    cs, sg = patterns.crystal_system.astype(np.int64), patterns.space_group.astype(np.int64)
    # unseen: drop every phase of the validation materials' groups from the bank
    group = np.asarray(manifest["group"])
    pool_ids = np.array([int(s.split(":")[1]) if s.startswith("pool:") else -1 for s in bank.source])
    held = np.isin(group[np.clip(pool_ids, 0, None)], np.unique(group[mats])) & (pool_ids >= 0)
    unseen_bank = bank.subset(np.flatnonzero(~held))
    perturbed = perturb_patterns(spots, seed=seed)
    out = {}
    cs_p, sg_p = network_probabilities(spots, net, dev)
    cs_q, sg_q = network_probabilities(perturbed, net, dev)
    for name, b, pls, cp, sp in (("known", bank, spots, cs_p, sg_p), ("unseen", unseen_bank, spots, cs_p, sg_p),
                                 ("perturbed", bank, perturbed, cs_q, sg_q)):
        m = match_patterns(pls, b)
        out[name] = {"match": m, "cs_probs": cp, "sg_probs": sp, "cs": cs, "sg": sg,
                     "phase_cs": b.crystal_system.astype(np.int64), "phase_sg": b.space_group.astype(np.int64)}
        logger.info("%s: best match right crystal system %.3f (phase named for %.3f)", name,
                    float(np.mean(np.where(m.phase[:, 0] >= 0, b.crystal_system[np.maximum(m.phase[:, 0], 0)] == cs, False))),
                    float(np.mean(m.phase[:, 0] >= 0)))
    return out


def run_cli(args: argparse.Namespace) -> int:
    """Run ``py4dstem-gnn bank ...``."""
    from .bank import TemplateBank, build_pool_bank, load_bank
    from .templates import TemplateConfig

    if args.action == "build":
        cfg = TemplateConfig(max_index=args.max_index, max_axes=args.max_axes, n_spots=args.n_spots)
        out = build_pool_bank(args.library, args.out, cfg, workers=args.workers)
        print(f"wrote {out} ({Path(out).stat().st_size / 1e6:.1f} MB)")
        return 0
    if args.action == "info":
        bank = load_bank(args.bank) if not str(args.bank).endswith(".npz") else TemplateBank.load(args.bank)
        counts = np.bincount(bank.crystal_system.astype(int), minlength=7)
        print(f"{bank.n_phases} phases, {len(bank)} templates ({np.mean(bank.kind == 1) * 100:.1f} % present-net), "
              f"{len(bank.value)} reflections, {bank.nbytes / 1e6:.1f} MB in memory")
        print("phases per crystal system:", dict(zip(("tric", "mono", "orth", "tetr", "trig", "hex", "cub"), counts.tolist())))
        print({k: v for k, v in bank.meta.items() if not k.startswith("_") and k != "materials"})
        return 0
    if args.action == "fit-decision":
        from ..confidence.decision_fit import fit_decision
        from ..data.dataset import PatternSet
        from ..decide import DECISION_PATH
        from ..weights import load_model

        sets = PatternSet.concatenate([PatternSet.from_hdf5(p) for p in args.val])
        bank = load_bank(args.bank) if not str(args.bank).endswith(".npz") else TemplateBank.load(args.bank)
        net = load_model(args.weights, device="cpu").eval()
        conditions = decision_conditions(sets, bank, net)
        params = fit_decision(conditions, goal=args.goal)
        params.provenance = {"command": "py4dstem-gnn " + " ".join(sys.argv[1:]) if sys.argv else "",
                             "validation": list(args.val), "n_patterns": int(len(sets)), "weights": args.weights,
                             "bank": str(args.bank), "conditions": list(conditions)}
        path = params.save(args.out or DECISION_PATH)
        print(f"wrote {path}")
        return 0
    return 2
