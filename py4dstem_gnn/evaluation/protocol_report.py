"""``py4dstem-gnn protocols``: the three-protocol report (network and baselines side by side).

Loads one or more stored pattern sets (a zone-axis set and a random-orientation set over the
held-out materials, :func:`py4dstem_gnn.data.splits.evaluation_materials`), adds a seeded
corrupted copy of every pattern (an :class:`~py4dstem_gnn.data.augment.AugmentConfig` preset),
predicts with the network and any baseline per protocol (each protocol may have its own
weights: ``--weights unseen-type=runs/type/best.safetensors``), scores everything with
:func:`py4dstem_gnn.evaluation.protocols.evaluate_protocols` and writes
``<out-root>/<name>/protocols.md`` and ``protocols.json``.

Each classifier predicts only the patterns of the protocols it serves. For the network, the report
adds selective prediction and conformal coverage per protocol x regime x corruption
(:mod:`py4dstem_gnn.evaluation.protocol_selective`: risk–coverage figures
``risk_coverage_<protocol>.png`` beside ``protocols.md``, AURC, abstention at the card's threshold,
raw scores compared, set coverage), from the calibrations recorded in each weights' card.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .protocols import PROTOCOLS, evaluate_protocols, protocol_membership, render_protocols_markdown
from .protocol_selective import COVERAGE_LEVELS, render_selective_markdown, selective_protocols

__all__ = ["parse_specs", "load_sets", "corrupt_copy", "predict_per_protocol", "run_protocols",
           "configure_parser", "run_cli"]

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
    from .scoring import load_pattern_set

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


def _load_reference(path: str) -> Any:
    """The gradient-boosting reference of :mod:`py4dstem_gnn.evaluation.reference` (trusted files only)."""
    import importlib

    mod = importlib.import_module("py4dstem_gnn.evaluation.reference")
    for name in ("load_reference", "load"):
        if callable(getattr(mod, name, None)):
            return getattr(mod, name)(path)
    for obj in vars(mod).values():
        if isinstance(obj, type) and callable(getattr(obj, "load", None)) and hasattr(obj, "predict"):
            return obj.load(path)
    raise ValueError("py4dstem_gnn.evaluation.reference offers no loader (load_reference(path))")


def _predictor(kind: str, spec: str, device: str, batch_size: int | None, n_jobs: int, progress: bool) -> Callable:
    if kind == "network":
        from ..predict import resolve_device
        from ..weights import load_model
        from .scoring import predict_model

        net = load_model(spec, device=str(resolve_device(device)))
        return lambda pls: predict_model(pls, net, device, batch_size, progress)[0]
    if kind == "forest":
        from .baseline import RandomForestBaseline

        rf = RandomForestBaseline.load(spec, n_jobs=n_jobs)
        return lambda pls: rf.predict(pls, progress=progress)
    ref = _load_reference(spec)
    return lambda pls: ref.predict(pls)


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
        pred = predict(spec)([pointlists[i] for i in rows])
        cs_p = np.full((n, 7), 1.0 / 7, np.float32)
        sg_p = np.full((n, 230), 1.0 / 230, np.float32)
        cs_p[rows], sg_p[rows] = pred.crystal_system_probs, pred.space_group_probs
        full = Prediction.from_probs(cs_p, sg_p, np.zeros(n))
        full.crystal_system[rows], full.space_group[rows] = pred.crystal_system, pred.space_group
        if getattr(pred, "confidence", None) is not None:
            full.confidence[rows] = pred.confidence
        full.meta.update(getattr(pred, "meta", None) or {})
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


def run_protocols(args: argparse.Namespace, command: str | None = None) -> dict[str, Any]:
    """Load, corrupt, predict, score and write the report; returns the JSON payload."""
    from ..data.structures import load_manifest

    if getattr(args, "quiet", False):
        args.no_progress = True
    kinds = {"network": parse_specs(args.weights, {"known": "default"}), "forest": parse_specs(args.rf),
             "reference": parse_specs(args.reference)}
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
    material = np.tile(data["material"], reps)
    space_group = np.tile(data["space_group"], reps)
    regime = np.tile(data["regime"], reps)
    corrupted = np.repeat([False, True], n_clean)[: len(pls)]
    membership = protocol_membership(material, manifest, args.known)
    predictions, used = {}, {}
    for kind, specs in kinds.items():
        if not specs:
            continue
        make = lambda spec, kind=kind: _predictor(kind, spec, args.device, args.batch_size, args.n_jobs,  # noqa: E731
                                                  not args.no_progress)
        predictions[kind] = predict_per_protocol(pls, membership, specs, make)
        used[kind] = specs
    views = tuple(int(v) for v in str(args.views).split(",") if v)
    results = evaluate_protocols(predictions, material, space_group, regime, corrupted, manifest,
                                 membership=membership, known=args.known, k_views=views, n_draws=args.draws,
                                 n_boot=args.boot, seed=args.seed)
    info: dict[str, Any] = {
        "command": command or "py4dstem_gnn.evaluation.protocol_report.run_protocols(...)",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "sets": "; ".join(data["sets"]),
        "manifest": f"{args.manifest or 'committed data/manifest.csv.gz'} (protocol splits: seed "
        f"{manifest.attrs.get('protocol_split_seed', '?')}, test {manifest.attrs.get('protocol_split_test_fraction', '?')}, "
        f"val {manifest.attrs.get('protocol_split_val_fraction', '?')})",
        "corruption": "none" if corruption is None else
        f"AugmentConfig preset {corruption['preset']!r}, seed {corruption['seed']}, applied to every pattern",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores visible",
    }
    for kind, specs in used.items():
        desc = ", ".join(f"{p}: {s}" + (f" ({_card_training(s)})" if kind == "network" else "") for p, s in specs.items())
        info[f"{kind} per protocol"] = desc
        if kind == "network" and len(set(specs.values())) == 1 and len(specs) > 1 and "known" in specs:
            info["warning"] = ("the same network weights serve `known` and `unseen-*`: the unseen-* figures mean "
                               "something only if these weights never trained on the held-out materials")
    out = Path(args.out_root) / args.name
    out.mkdir(parents=True, exist_ok=True)
    md = render_protocols_markdown(results, title=f"Protocols: {args.name}", info=info)
    payload = {"info": info, "corruption": corruption, **results}
    if "network" in predictions and not getattr(args, "no_selective", False):
        levels = tuple(float(v) for v in str(getattr(args, "set_coverage", "0.9")).split(",") if v) or COVERAGE_LEVELS
        selective = selective_protocols(predictions["network"], material, space_group, regime, corrupted, manifest,
                                        membership, weights=used["network"], levels=levels, n_boot=args.boot,
                                        seed=args.seed, figure_dir=out)
        md = md.rstrip() + "\n\n" + render_selective_markdown(selective, "network")
        payload["selective"] = selective
    (out / "protocols.md").write_text(md)
    (out / "protocols.json").write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    logger.info("wrote %s and %s", out / "protocols.md", out / "protocols.json")
    if getattr(args, "update_card", False) and "network" in used:
        write_card_figures(payload, used["network"], out / "protocols.md")
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
    """Options of ``py4dstem-gnn protocols``."""
    parser.description = (
        "Score the network and baselines per evaluation protocol (known, unseen-material, unseen-type) x "
        "orientation regime x clean/corrupted, with 95 % intervals over material groups; writes "
        "<out-root>/<name>/protocols.md and protocols.json. For the network: risk–coverage figures "
        "(risk_coverage_<protocol>.png), AURC, abstention at the card's threshold and conformal set coverage."
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
                        help=f"gradient-boosting reference file (evaluation/reference.py): {spec}")
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
    """Entry point of ``py4dstem-gnn protocols``."""
    argv = sys.argv
    command = None
    if "protocols" in argv[1:]:
        i = argv.index("protocols", 1)
        command = " ".join(["py4dstem-gnn", *map(shlex.quote, argv[1:i]), "protocols", *map(shlex.quote, argv[i + 1:])])
    run_protocols(args, command)
    return 0
