"""``py4dstem-gnn info``: what a model is, how well it does, what its confidence means.

Without arguments it prints a summary of the card of the shipped default weights
(``weights/default.json``): architecture and size, training data and compute, accuracy on
the held-out protocols, the calibrated confidence threshold and conformal coverage. It reads
the card's JSON directly, without torch or py4DSTEM, so it answers at once. ``--json``
prints the whole card; ``--flops`` also builds the network (torch) and counts its forward
FLOPs per pattern; ``--untrained '{...}'`` describes an untrained configuration (``'{}'``:
the paper's Table 6).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "find_card",
    "card_summary",
    "forward_flops",
    "describe_model",
    "configure_parser",
    "run_cli",
]

_PACKAGE_DIR = Path(__file__).resolve().parent


def _weights_dirs() -> list[Path]:
    """Folders searched for named weights, in the order of :func:`py4dstem_gnn.weights.weights_dirs`.

    Repeated here so that reading a card does not import torch (``weights.py`` does);
    ``tests/test_cli.py`` checks that both lists agree.
    """
    dirs = []
    env = os.environ.get("PY4DSTEM_GNN_WEIGHTS")
    if env:
        dirs.append(Path(env))
    dirs += [_PACKAGE_DIR.parent / "weights", _PACKAGE_DIR / "_weights"]
    return dirs


def _available() -> list[str]:
    names: set[str] = set()
    for d in _weights_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.safetensors"))
    return sorted(names)


def find_card(model: str | os.PathLike = "default") -> tuple[Path, Path]:
    """The weights file of a model name or path and the card (``.json``) beside it.

    Parameters
    ----------
    model : str or path-like
        A name (``"default"``) looked up in the weights folders, or a path to a
        ``.safetensors`` (or ``.json``) file.

    Returns
    -------
    tuple of pathlib.Path
        ``(weights, card)``.

    Raises
    ------
    FileNotFoundError
        Naming where it looked and the names available.
    """
    p = Path(model)
    if p.suffix in (".safetensors", ".json") or p.is_file() or os.sep in str(model):
        candidates = [p.with_suffix(".safetensors")]
    else:
        candidates = [d / f"{model}.safetensors" for d in _weights_dirs()]
    for c in candidates:
        if c.with_suffix(".json").is_file():
            return c, c.with_suffix(".json")
    looked = ", ".join(str(c.with_suffix(".json")) for c in candidates)
    raise FileNotFoundError(
        f"no card for model={str(model)!r} (looked for {looked}); available names: {', '.join(_available()) or 'none'}"
    )


def _get(card: dict[str, Any], *keys: str, default: Any = None) -> Any:
    node: Any = card
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def _architecture(card: dict[str, Any]) -> str:
    c = card.get("config") or {}
    parts = [str(card.get("architecture", "PE-AG-GMoE"))]
    if c:
        parts.append(
            f"{c.get('n_layers', '?')} layers x {c.get('n_heads', '?')} heads, encoder width {c.get('feature_dim', '?')}, "
            f"hidden {c.get('hidden_dim', '?')}, {c.get('n_experts', '?')} experts top-{c.get('top_k', '?')}"
            + (" + shared" if c.get("shared_expert") else "")
        )
        if c.get("lattice_token"):
            parts.append("lattice token")
        if c.get("max_spots"):
            parts.append(f"up to {c['max_spots']} spots")
    n = card.get("n_parameters")
    if n:
        parts.append(f"{int(n):,} parameters")
    return "; ".join(parts)


def _training(card: dict[str, Any]) -> str | None:
    total = _get(card, "training", "total") or {}
    data = _get(card, "training", "data") or {}
    bits = []
    if data:
        what = data.get("kind", "")
        if data.get("n_materials"):
            what += f", {int(data['n_materials']):,} materials"
        if data.get("orientations"):
            what += f", {data['orientations']}"
            if data.get("random_fraction"):
                what += f" + {100 * float(data['random_fraction']):.0f} % random orientations"
        bits.append(what.strip(", "))
    seen = total.get("patterns_seen") or _get(card, "training", "patterns_seen")
    wall = total.get("wall_seconds") or _get(card, "training", "compute", "wall_seconds")
    if seen:
        bits.append(f"{int(seen):,} patterns seen")
    if wall:
        bits.append(f"{float(wall) / 3600:.1f} h of compute")
    return "; ".join(bits) or None


def _accuracy(card: dict[str, Any]) -> list[str]:
    figures = _get(card, "evaluation_protocols", "figures") or {}
    rows = []
    for key, fig in figures.items():
        if not isinstance(fig, dict) or "cs_1" not in fig:
            continue
        cs = fig["cs_1"]
        sg = fig.get("sg_1")
        text = f"{key}: crystal system {cs[0]:.1f} % [{cs[1]:.1f}, {cs[2]:.1f}]"
        if sg:
            text += f", space group {sg[0]:.1f} %"
        if fig.get("n_patterns"):
            text += f" (n = {int(fig['n_patterns']):,} patterns)"
        rows.append(text)
    return rows


def card_summary(card: dict[str, Any], weights: str | os.PathLike | None = None) -> str:
    """A readable summary of a model card (what ``py4dstem-gnn info`` prints).

    Parameters
    ----------
    card : dict
        The card (the ``.json`` beside the weights).
    weights : str or path, optional
        The weights file, shown in the first line.

    Returns
    -------
    str
        Name, file and checksum; architecture and size; training; held-out accuracy per
        protocol (one pattern, 95 % interval); confidence threshold and its accuracy goal;
        conformal coverage; paper, licence and where the full report lies.
    """
    lines = [f"{card.get('name', '?')}" + (f"  ({weights})" if weights else "")]
    if card.get("sha256"):
        lines[0] += f"  sha256 {str(card['sha256'])[:12]}..."

    def row(label: str, text: Any) -> None:
        if text not in (None, "", []):
            lines.append(f"  {label:<13}{text}")

    row("architecture", _architecture(card))
    row("training", _training(card))
    acc = _accuracy(card)
    if acc:
        row("accuracy", acc[0])
        lines += [f"  {'':<13}{a}" for a in acc[1:]]
        row("", "(held-out test patterns, one pattern each, 95 % group-bootstrap intervals)")
    threshold = card.get("confidence_threshold")
    rule = _get(card, "confidence_calibration", "threshold_rule") or {}
    if threshold is not None:
        text = f"default threshold {float(threshold):.3f}"
        if rule.get("accuracy_goal") is not None:
            text += f" (accuracy goal {100 * float(rule['accuracy_goal']):.0f} %"
            if rule.get("coverage") is not None:
                text += f": {100 * float(rule['coverage']):.1f} % of validation patterns labelled"
            if rule.get("accuracy") is not None:
                text += f", {100 * float(rule['accuracy']):.1f} % of them right"
            text += ")"
        row("confidence", text)
        row("", _get(card, "confidence_calibration", "definition"))
    elif card.get("confidence_calibration") is None:
        row("confidence", "not calibrated (raw margin of the crystal-system probabilities)")
    coverage = _get(card, "conformal", "default_coverage")
    if coverage is not None:
        row("sets", f"conformal crystal-system and space-group sets, default coverage {100 * float(coverage):.0f} %")
    row("paper", card.get("paper"))
    row("licence", card.get("licence"))
    row("report", _get(card, "evaluation_protocols", "report"))
    others = [n for n in _available() if n != card.get("name")]
    if others:
        lines.append(f"other weights: {', '.join(others)} (py4dstem-gnn info --model NAME)")
    lines.append("the whole card: py4dstem-gnn info --json")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# the network itself (torch): parameters and FLOPs
# --------------------------------------------------------------------------------------


def forward_flops(model: Any, n_spots: int = 40, batch: int = 64, seed: int = 0) -> float:
    """Forward FLOPs per pattern with ``n_spots`` diffracted spots (counted by torch's FlopCounterMode).

    Matrix products are counted (2 FLOPs per multiply-add); element-wise operations are not.
    Only the experts a token is routed to are counted, as they are the only ones computed.
    """
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .features import collate

    rng = np.random.default_rng(seed)
    lists = [np.c_[rng.uniform(-1.5, 1.5, (n_spots, 2)), rng.random(n_spots)].astype(np.float32) for _ in range(batch)]
    spots, mask = collate(lists, model.config.max_spots)
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(spots, mask)
    return counter.get_total_flops() / batch


def _short(value: Any, limit: int = 40) -> Any:
    """Card entries without their long numeric arrays (calibration tables): lists past ``limit`` items summarised."""
    if isinstance(value, dict):
        return {k: _short(v, limit) for k, v in value.items()}
    if isinstance(value, list) and len(value) > limit:
        return f"<list of {len(value)} values>"
    return value


def describe_model(model: str | None = "default", untrained: str | None = None, n_spots: int = 40) -> dict[str, Any]:
    """The network behind a model (loads torch): config, parameter count and forward FLOPs.

    Parameters
    ----------
    model : str or None
        Weights name or path (default: the shipped ``"default"``).
    untrained : str, optional
        JSON overrides of :class:`~py4dstem_gnn.model.ModelConfig` for an untrained
        model instead (``"{}"``: the paper's Table 6 configuration); ``model`` is
        then ignored.
    n_spots : int
        Diffracted spots per pattern for the FLOP count.

    Returns
    -------
    dict
        ``model``, ``weights`` (path, or None), ``config``, ``parameters`` and
        ``forward_GFLOPs_per_pattern_<n>_spots``.
    """
    from .model import ModelConfig, PEAGGMoE
    from .weights import load_model, resolve_weights

    if untrained is not None:
        net = PEAGGMoE(ModelConfig(**json.loads(untrained)))
        info: dict[str, Any] = {"model": "untrained (random initialisation)", "weights": None}
    else:
        name = "default" if model is None else str(model)
        info = {"model": name, "weights": str(resolve_weights(name))}
        net = load_model(name)
    info["config"] = _short(net.config.to_dict(), limit=12)
    info["parameters"] = int(net.num_parameters())
    info[f"forward_GFLOPs_per_pattern_{n_spots}_spots"] = round(forward_flops(net, n_spots) / 1e9, 4)
    return info


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``py4dstem-gnn info``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model", default="default", help="weights name or path (default: the shipped default weights)")
    group.add_argument(
        "--untrained", default=None, metavar="JSON",
        help="describe an untrained network of this config instead, as JSON ('{}': the paper's Table 6; loads torch)",
    )
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)  # older spelling of --untrained
    parser.add_argument("--json", action="store_true", help="print the whole card as JSON instead of the summary")
    parser.add_argument(
        "--flops", action="store_true",
        help="also build the network and print its parameter count and forward FLOPs per pattern (loads torch; slower)",
    )
    parser.add_argument(
        "--spots", type=int, default=40, help="diffracted spots per pattern for the FLOP count (default: 40)"
    )


def run_cli(args: argparse.Namespace) -> int:
    """Print the card summary (or the whole card with ``--json``; the network's size and cost with ``--flops``)."""
    untrained = args.untrained if args.untrained is not None else args.config
    if untrained is not None:
        print(json.dumps(describe_model(None, untrained=untrained, n_spots=args.spots), indent=2))
        return 0
    weights, card_path = find_card(args.model)
    card = json.loads(card_path.read_text())
    if args.json:
        print(json.dumps(card, indent=2))
    else:
        print(card_summary(card, weights))
    if args.flops:
        info = describe_model(str(weights), n_spots=args.spots)
        key = f"forward_GFLOPs_per_pattern_{args.spots}_spots"
        print(f"network: {info['parameters']:,} parameters, {info[key] * 1e3:.1f} MFLOP per pattern of {args.spots} spots")
    return 0
