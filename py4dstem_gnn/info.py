"""``py4dstem-gnn info``: what a model is, how big it is and what it costs.

Without arguments it describes the shipped default weights (``model="default"``): where
they are, their card (training, evaluation, confidence calibration), the parameter count
and the forward FLOPs per pattern. ``--model NAME_OR_PATH`` describes other weights;
``--untrained '{...}'`` an untrained configuration (``'{}'``: the paper's Table 6).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch

from .features import collate
from .model import ModelConfig, PEAGGMoE
from .weights import load_model, read_card, resolve_weights

__all__ = ["forward_flops", "describe_model", "configure_parser", "run_cli"]

#: Card entries shown by ``py4dstem-gnn info`` (when the card has them), in this order.
CARD_KEYS: tuple[str, ...] = (
    "name",
    "architecture",
    "paper",
    "licence",
    "sha256",
    "lineage",
    "compute_total",
    "validation",
    "evaluation",
    "selection",
    "confidence_threshold",
    "confidence_calibration",
    "conformal",
)


def forward_flops(model: PEAGGMoE, n_spots: int = 40, batch: int = 64, seed: int = 0) -> float:
    """Forward FLOPs per pattern with ``n_spots`` diffracted spots (counted by torch's FlopCounterMode).

    Matrix products are counted (2 FLOPs per multiply-add); element-wise operations are not.
    Only the experts a token is routed to are counted, as they are the only ones computed.
    """
    from torch.utils.flop_counter import FlopCounterMode

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
    """What ``py4dstem-gnn info`` prints, as a dictionary.

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
        ``model`` (what was described), ``weights`` (path, or None), ``card`` (the
        card's main entries), ``config``, ``parameters``, and
        ``forward_GFLOPs_per_pattern_<n>_spots``.

    Raises
    ------
    FileNotFoundError
        If the weights are not found (the message lists where it looked).
    """
    if untrained is not None:
        net = PEAGGMoE(ModelConfig(**json.loads(untrained)))
        info: dict[str, Any] = {"model": "untrained (random initialisation)", "weights": None, "card": None}
    else:
        name = "default" if model is None else str(model)
        path = resolve_weights(name)
        net = load_model(name)
        card = read_card(path)
        info = {
            "model": name,
            "weights": str(path),
            "card": {k: _short(card[k]) for k in CARD_KEYS if k in card},
        }
    info["config"] = _short(net.config.to_dict(), limit=12)
    info["parameters"] = int(net.num_parameters())
    info[f"forward_GFLOPs_per_pattern_{n_spots}_spots"] = round(forward_flops(net, n_spots) / 1e9, 4)
    return info


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``py4dstem-gnn info``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model", default="default", help="weights name or path (default: the shipped default weights)")
    group.add_argument(
        "--untrained", default=None, metavar="JSON",
        help="describe an untrained model of this config instead ('{}': the paper's Table 6)",
    )
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)  # older spelling of --untrained
    parser.add_argument("--spots", type=int, default=40, help="diffracted spots per pattern for the FLOP count")


def run_cli(args: argparse.Namespace) -> int:
    """Print the description of the model as JSON."""
    untrained = args.untrained if args.untrained is not None else args.config
    info = describe_model(args.model, untrained=untrained, n_spots=args.spots)
    print(json.dumps(info, indent=2))
    return 0
