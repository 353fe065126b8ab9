"""``py4dstem-gnn evaluate`` (also ``protocols``): load the stored sets, predict, score, write the report.

Loads one or more stored pattern sets (a zone-axis set and a random-orientation set over the
held-out materials, :func:`py4dstem_gnn.data.splits.evaluation_materials`), adds a seeded corrupted
copy of every pattern (an :class:`~py4dstem_gnn.data.augment.AugmentConfig` preset), predicts with
every classifier given, each protocol with its own weights where named
(``--weights unseen-type=runs/type/best.safetensors``; each classifier predicts only the patterns
of the protocols it serves), scores everything with :func:`py4dstem_gnn.evaluation.report.evaluate`
and writes ``<out-root>/<name>/protocols.md``, ``protocols.json`` and the figures beside them.

A classifier kind is one entry of :data:`LOADERS`: its option (``--weights``, ``--rf``,
``--reference``) and a loader ``(spec, args) -> (pointlists -> prediction object)``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .protocols import PROTOCOLS, protocol_membership
from .report import COVERAGE_LEVELS, evaluate, write_report

__all__ = ["LOADERS", "parse_specs", "load_sets", "corrupt_copy", "predict_per_protocol", "run", "configure_parser",
           "run_cli", "main"]

logger = logging.getLogger(__name__)


def parse_specs(specs: Sequence[str] | None, default: Mapping[str, str] | None = None) -> dict[str, str]:
    """``["PATH"]`` or ``["unseen-type=PATH", ...]`` -> protocol -> spec (``none`` drops a protocol).

    A spec without ``PROTOCOL=`` serves every protocol not named elsewhere.
    """
    if not specs:
        return dict(default or {})
    out: dict[str, str] = {}
    fallback = None
    for s in specs:
        proto, eq, value = s.partition("=")
        if eq and proto in PROTOCOLS:
            out[proto] = value
        elif eq and proto not in PROTOCOLS and not Path(s).exists():
            raise ValueError(f"unknown protocol {proto!r} in {s!r}; protocols: {', '.join(PROTOCOLS)}")
        else:
            fallback = s
    if fallback is not None:
        for p in PROTOCOLS:
            out.setdefault(p, fallback)
    return {p: v for p, v in out.items() if v.lower() not in ("none", "")}


def load_sets(sets: Sequence[str] = (), zone_axis: Sequence[str] = (), random: Sequence[str] = ()) -> dict[str, Any]:
    """Concatenate stored sets into pointlists, material, space_group, regime (and uvw when stored).

    ``sets`` must carry a per-pattern ``regime`` (0 or 1; -1, unknown, is refused); ``zone_axis`` /
    ``random`` sets get regime 0 / 1 (refused if they store another known regime).
    """
    from ..data.sources import load_pattern_set

    parts = [(p, None) for p in sets] + [(p, 0) for p in zone_axis] + [(p, 1) for p in random]
    if not parts:
        raise ValueError("no pattern set given (--set, --zone-axis or --random)")
    pls: list[np.ndarray] = []
    cols: dict[str, list[np.ndarray]] = {"material": [], "space_group": [], "regime": []}
    described = []
    for path, reg in parts:
        ps = load_pattern_set(path)
        stored = getattr(ps, "regime", None)
        stored = None if stored is None else np.asarray(stored, dtype=np.int64)
        if reg is None:
            if stored is None or np.any((stored != 0) & (stored != 1)):
                raise ValueError(f"{path} stores no (or an unknown, -1) regime: pass it with --zone-axis or --random")
            regime = stored
        else:
            if stored is not None and np.any((stored >= 0) & (stored != reg)):
                raise ValueError(f"{path} stores regime {sorted(set(stored.tolist()))}, not only {reg}: use --set")
            regime = np.full(len(ps), reg, dtype=np.int64)
        pls += list(ps.pointlists)
        cols["material"].append(np.asarray(ps.material, dtype=np.int64))
        cols["space_group"].append(np.asarray(ps.space_group, dtype=np.int64))
        cols["regime"].append(regime)
        described.append(f"{path} ({len(ps)} patterns, regime {'stored' if reg is None else ('zone_axis', 'random')[reg]})")
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out["pointlists"] = pls
    out["sets"] = described
    return out


def corrupt_copy(pointlists: Sequence[np.ndarray], preset: str = "calibrated", seed: int = 0) -> tuple[list[np.ndarray], dict]:
    """A seeded experiment-like corruption of every pattern (``AugmentConfig`` preset by name).

    ``preset`` is a classmethod of :class:`~py4dstem_gnn.data.augment.AugmentConfig`
    (``calibrated``, ``uncalibrated``) or ``training`` (the default constructor).
    """
    from ..data.augment import AugmentConfig, augment_pointlists

    if preset == "training":
        cfg = AugmentConfig()
    else:
        make = getattr(AugmentConfig, preset, None)
        if not callable(make):
            raise ValueError(f"AugmentConfig has no preset {preset!r}")
        cfg = make()
    return augment_pointlists(pointlists, np.random.default_rng(seed), cfg), {"preset": preset, "seed": seed, **cfg.to_dict()}


def _network(spec: str, args: argparse.Namespace) -> Callable:
    from ..predict import predict_pointlists
    from ..validation import resolve_device
    from ..weights import load_model

    dev = resolve_device(args.device)
    net = load_model(spec, device=str(dev))
    # the network alone: no template-bank match (a match or hybrid classifier is one more LOADERS entry)
    return lambda pls: predict_pointlists(pls, model=net, device=dev, batch_size=args.batch_size,
                                          progress=not args.no_progress, phases=None)


def _forest(spec: str, args: argparse.Namespace) -> Callable:
    from ..baselines.forest import RandomForestBaseline

    rf = RandomForestBaseline.load(spec, n_jobs=args.n_jobs)
    return lambda pls: rf.predict(pls, progress=not args.no_progress)


def _reference(spec: str, args: argparse.Namespace) -> Callable:
    from ..baselines.reference import GradientBoostingReference

    return GradientBoostingReference.load(spec).predict


#: classifier name -> (command-line option, loader(spec, args) -> predict(pointlists) -> prediction object).
#: The first kind given is the one the others are compared with.
LOADERS: dict[str, tuple[str, Callable[[str, argparse.Namespace], Callable]]] = {
    "network": ("weights", _network),
    "forest": ("rf", _forest),
    "reference": ("reference", _reference),
}


def predict_per_protocol(pointlists: Sequence[np.ndarray], membership: Mapping[str, np.ndarray],
                         specs: Mapping[str, str], predict: Callable[[str], Callable]) -> dict[str, Any]:
    """protocol -> full-length prediction arrays; each distinct spec predicts only the patterns it serves.

    The rows a spec predicts keep its labels and confidence, and the prediction its ``meta`` (the
    card's calibrations); the other rows hold uniform probabilities.
    """
    from ..predict import Prediction

    n = len(pointlists)
    out: dict[str, Any] = {}
    for spec in dict.fromkeys(specs.values()):
        protos = [p for p, s in specs.items() if s == spec]
        rows = np.flatnonzero(np.any([membership[p] for p in protos], axis=0))
        if not len(rows):
            continue
        logger.info("%s: predicting %d patterns for %s", spec, len(rows), ", ".join(protos))
        t0 = time.perf_counter()
        pred = predict(spec)([pointlists[i] for i in rows])
        dt = time.perf_counter() - t0
        cs_p = np.full((n, 7), 1.0 / 7, np.float32)
        sg_p = np.full((n, 230), 1.0 / 230, np.float32)
        cs_p[rows], sg_p[rows] = pred.crystal_system_probs, pred.space_group_probs
        full = Prediction.from_probs(cs_p, sg_p, np.zeros(n))
        full.crystal_system[rows], full.space_group[rows] = pred.crystal_system, pred.space_group
        if getattr(pred, "confidence", None) is not None:
            full.confidence[rows] = pred.confidence
        full.meta.update(getattr(pred, "meta", None) or {})
        full.meta["timings"] = {"per_pattern_ms": 1e3 * dt / len(rows), "n": int(len(rows)),
                                "threads": int(__import__("torch").get_num_threads())}
        for p in protos:
            out[p] = full
    return out


def _card_training(spec: str) -> str:
    """What a weights card says about its training materials (for the report)."""
    try:
        from ..weights import read_card, resolve_weights

        data = read_card(resolve_weights(spec)).get("training", {}).get("data", {})
    except Exception:  # a missing or foreign card is reported, not fatal
        return "card unreadable"
    main = data.get("main", data)
    if "split" not in main:
        return "the card states no training split"
    return f"card: trained on manifest column {main.get('split_column', 'split')!r} = {main['split']!r}"


def run(args: argparse.Namespace, command: str | None = None) -> dict[str, Any]:
    """Load, corrupt, predict, score and write the report; returns the JSON payload."""
    from ..data.structures import load_manifest

    if getattr(args, "quiet", False):
        args.no_progress = True
    kinds = {kind: parse_specs(getattr(args, opt), {"known": "default"} if kind == "network" else None)
             for kind, (opt, _) in LOADERS.items()}
    if not any(kinds.values()):
        raise ValueError("nothing to score: give --weights, --rf or --reference")
    manifest = load_manifest(args.manifest)
    data = load_sets(args.set, args.zone_axis, args.random)
    if args.max_materials:
        chosen = np.random.default_rng(args.seed).permutation(np.unique(data["material"]))[: args.max_materials]
        keep = np.flatnonzero(np.isin(data["material"], chosen))
        for k in ("material", "space_group", "regime"):
            data[k] = data[k][keep]
        data["pointlists"] = [data["pointlists"][i] for i in keep]
    n_clean = len(data["pointlists"])
    pls = list(data["pointlists"])
    corruption = None
    if not args.no_corrupt:
        bad, corruption = corrupt_copy(pls, args.corruption, args.corruption_seed)
        pls += bad
    reps = 1 if args.no_corrupt else 2
    patterns = {"material": np.tile(data["material"], reps), "space_group": np.tile(data["space_group"], reps),
                "regime": np.tile(data["regime"], reps), "corrupted": np.repeat([False, True], n_clean)[: len(pls)]}
    membership = protocol_membership(patterns["material"], manifest, args.known)
    predictions, used, makers = {}, {}, {}
    for kind, specs in kinds.items():
        if not specs:
            continue
        cache: dict[str, Callable] = {}
        makers[kind] = lambda spec, kind=kind, cache=cache: cache.setdefault(spec, LOADERS[kind][1](spec, args))
        predictions[kind] = predict_per_protocol(pls, membership, specs, makers[kind])
        used[kind] = specs
    validation = None
    if args.val:
        from ..data.sources import load_pattern_set

        vsets = [load_pattern_set(p) for p in args.val]
        validation = {"space_group": np.concatenate([np.asarray(v.space_group, dtype=np.int64) for v in vsets])}
        for kind, specs in used.items():
            if args.detail in specs:
                validation[kind] = makers[kind](specs[args.detail])([pl for v in vsets for pl in v.pointlists])
    out = Path(args.out_root) / args.name
    views = tuple(int(v) for v in str(args.views).split(",") if v)
    levels = tuple(float(v) for v in str(args.set_coverage).split(",") if v) or COVERAGE_LEVELS
    payload = evaluate(predictions, patterns, manifest, membership=membership, known=args.known, k_views=views,
                       n_draws=args.draws, n_boot=args.boot, seed=args.seed, levels=levels,
                       selective=not args.no_selective, detail=None if args.detail == "none" else args.detail,
                       validation=validation, weights=used, figure_dir=out)
    info: dict[str, Any] = {
        "command": command or "py4dstem_gnn.evaluation.cli.run(...)",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "sets": "; ".join(data["sets"]),
        "manifest": f"{args.manifest or 'committed data/manifest.csv.gz'} (protocol splits: seed "
        f"{manifest.attrs.get('protocol_split_seed', '?')}, test {manifest.attrs.get('protocol_split_test_fraction', '?')}, "
        f"val {manifest.attrs.get('protocol_split_val_fraction', '?')})",
        "corruption": "none" if corruption is None else
        f"AugmentConfig preset {corruption['preset']!r}, seed {corruption['seed']}, applied to every pattern",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores visible",
    }
    if args.val:
        info["validation"] = ", ".join(args.val) + " (temperature scaling in the detail)"
    for kind, specs in used.items():
        desc = ", ".join(f"{p}: {s}" + (f" ({_card_training(s)})" if kind == "network" else "") for p, s in specs.items())
        info[f"{kind} per protocol"] = desc
        if kind == "network" and len(set(specs.values())) == 1 and len(specs) > 1 and "known" in specs:
            info["warning"] = ("the same network weights serve `known` and `unseen-*`: the unseen-* figures mean "
                               "something only if these weights never trained on the held-out materials")
    payload = {"corruption": corruption, **payload}
    report = write_report(payload, out, f"Protocols: {args.name}", info)
    payload = {"info": info, **payload}
    if getattr(args, "update_card", False) and "network" in used:
        write_card_figures(payload, used["network"], report)
    return payload


def card_figures(payload: dict[str, Any], protocol_weights: dict[str, str]) -> dict[str, Any]:
    """The network's accuracies per protocol x regime x corruption (%, with intervals), for a card."""
    rows: dict[str, Any] = {}
    for cell in payload["cells"]:
        net = cell["classifiers"].get("network")
        if not net:
            continue
        key = f"{cell['protocol']}/{cell['regime']}/{cell['corruption']}"
        rows[key] = {
            "weights": protocol_weights.get(cell["protocol"]),
            "n_patterns": cell["n_patterns"], "n_materials": cell["n_materials"], "n_groups": cell["n_groups"],
            **{m: [round(100 * v["mean"], 1), round(100 * v["low"], 1), round(100 * v["high"], 1)]
               for m, v in net.items() if isinstance(v, dict) and "mean" in v},
        }
    return rows


def write_card_figures(payload: dict[str, Any], protocol_weights: dict[str, str], report: Path) -> None:
    """Write :func:`card_figures` into the card of every network weights file scored (``evaluation_protocols``)."""
    from ..weights import resolve_weights, update_card

    figures = card_figures(payload, protocol_weights)
    for spec in dict.fromkeys(protocol_weights.values()):
        if spec in ("none", ""):
            continue
        protocols = [p for p, s in protocol_weights.items() if s == spec]
        own = {k: v for k, v in figures.items() if k.split("/")[0] in protocols}
        update_card(resolve_weights(spec), {"evaluation_protocols": {
            "report": str(report), "command": payload["info"]["command"], "date": payload["info"]["date"],
            "metric_keys": "cs_1/sg_1: one pattern; cs_kK/sg_kK: K views of a material; [mean, low, high] in %, "
                           "95 % group-bootstrap interval",
            "figures": own,
        }})
        logger.info("wrote the %s figures into the card of %s", ", ".join(protocols), spec)


# ----------------------------------------------------------------------------- command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``py4dstem-gnn evaluate`` (alias ``protocols``)."""
    parser.description = (
        "Score the network and baselines per evaluation protocol (known, unseen-material, unseen-type) x "
        "orientation regime x clean/corrupted, with 95 % intervals over material groups; writes "
        "<out-root>/<name>/protocols.md and protocols.json. For the network: risk–coverage figures "
        "(risk_coverage_<protocol>.png), AURC, abstention at the card's threshold and conformal set coverage; per "
        "classifier: the paper's tables, confusion matrices, calibration and time per pattern (--detail)."
    )
    parser.add_argument("--name", required=True, help="report folder name")
    parser.add_argument("--out-root", default="reports", help="parent folder of the report")
    parser.add_argument("--set", action="append", default=[], metavar="PATH",
                        help="stored set with a per-pattern regime (repeatable)")
    parser.add_argument("--zone-axis", action="append", default=[], metavar="PATH", help="zone-axis set (repeatable)")
    parser.add_argument("--random", action="append", default=[], metavar="PATH",
                        help="random-orientation set (repeatable)")
    spec = "NAME_OR_PATH for every protocol, or PROTOCOL=NAME_OR_PATH (repeatable; 'none' drops one)"
    parser.add_argument("--weights", action="append", default=[], help=f"network weights: {spec}; default: "
                        "'default' for known only")
    parser.add_argument("--rf", action="append", default=[], help=f"random-forest file (joblib, trusted only): {spec}")
    parser.add_argument("--reference", action="append", default=[],
                        help=f"gradient-boosting reference file (baselines/reference.py, trusted only): {spec}")
    parser.add_argument("--val", action="append", default=[], metavar="PATH",
                        help="validation set(s) for temperature scaling in the detail (default: cross-fitting)")
    parser.add_argument("--detail", default="known",
                        help="protocol whose clean patterns get the per-classifier detail (paper tables, confusion, "
                        "calibration, timing); 'none' leaves it out")
    parser.add_argument("--manifest", default=None, help="manifest with split_type / split_material (default: committed)")
    parser.add_argument("--known", choices=("all", "material_test"), default="all",
                        help="patterns scored by `known`: all, or the split_material test materials only")
    parser.add_argument("--corruption", default="calibrated",
                        help="AugmentConfig preset of the corrupted copy: calibrated, uncalibrated or training")
    parser.add_argument("--corruption-seed", type=int, default=0)
    parser.add_argument("--no-corrupt", action="store_true", help="score the clean patterns only")
    parser.add_argument("--update-card", action="store_true",
                        help="write each network's figures (its protocol) into its weights' card")
    parser.add_argument("--views", default="6,10", help="views combined per material, comma-separated")
    parser.add_argument("--draws", type=int, default=5, help="seeded draws of the views")
    parser.add_argument("--boot", type=int, default=1000, help="group-bootstrap replicates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-materials", type=int, default=None, help="a seeded subset of the materials (quick runs)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--n-jobs", type=int, default=1, help="scikit-learn jobs for the forest")
    parser.add_argument("--set-coverage", default="0.9",
                        help="conformal levels whose set coverage is reported, comma-separated (the card's default "
                        "level is added)")
    parser.add_argument("--no-selective", action="store_true",
                        help="leave out risk–coverage, abstention and conformal coverage")
    parser.add_argument("--no-progress", action="store_true")


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``py4dstem-gnn evaluate`` / ``py4dstem-gnn protocols``."""
    run(args, _command_line(sys.argv))
    return 0


def _command_line(argv: Sequence[str]) -> str | None:
    """The command as typed (global options before the command name kept), or None."""
    i = next((j for j, a in enumerate(argv[1:], 1) if a in ("evaluate", "protocols")), None)
    if i is None:
        return None
    return " ".join(["py4dstem-gnn", *map(shlex.quote, argv[1:i]), argv[i], *map(shlex.quote, argv[i + 1:])])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m py4dstem_gnn.evaluation.cli ...``: the same as ``py4dstem-gnn evaluate ...``."""
    from ..cli import module_main

    return module_main(configure_parser, run_cli, argv, prog="python -m py4dstem_gnn.evaluation.cli")


if __name__ == "__main__":  # pragma: no cover - command line
    raise SystemExit(main())
