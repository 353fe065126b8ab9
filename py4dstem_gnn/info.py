"""``py4dstem-gnn info``: size and cost of a model."""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from .features import collate
from .model import ModelConfig, PEAGGMoE
from .weights import load_model

__all__ = ["forward_flops", "configure_parser", "run_cli"]


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


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``py4dstem-gnn info``."""
    parser.add_argument("--model", default=None, help="weights name or path (default: the paper's Table 6 config, untrained)")
    parser.add_argument("--config", default="{}", help="JSON overrides of the model config when --model is not given")
    parser.add_argument("--spots", type=int, default=40, help="diffracted spots per pattern for the FLOP count")


def run_cli(args: argparse.Namespace) -> int:
    """Print the config, parameter count and forward FLOPs per pattern."""
    model = load_model(args.model) if args.model else PEAGGMoE(ModelConfig(**json.loads(args.config)))
    flops = forward_flops(model, args.spots)
    print(json.dumps({"config": model.config.to_dict(), "parameters": model.num_parameters(),
                      f"forward_GFLOPs_per_pattern_{args.spots}_spots": round(flops / 1e9, 4)}, indent=2))
    return 0
