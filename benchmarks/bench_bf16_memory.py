"""Peak memory added by one prediction call, fp32 against bf16 autocast (issue 23, speed item).

Runs ``network_probabilities`` of a tiny real model (1 layer, width 16) on ``--n`` random patterns of
3–39 spots in this process, after a warm-up call, and prints the growth of the peak resident memory
(``VmHWM`` reset through ``/proc/self/clear_refs``, so Linux only) and the seconds. Options pad every
batch to one shape (``--fixed-shape``: 256 patterns × 40 spots) and compute the experts densely
(``--fuse``), to find which shapes make oneDNN's caches grow.

Usage (one configuration per process, since the caches live for the process)::

    python benchmarks/bench_bf16_memory.py --n 50000 --autocast
    python benchmarks/bench_bf16_memory.py --n 30000 --autocast --fixed-shape --fuse
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from py4dstem_gnn import network_stage
from py4dstem_gnn.batching import RaggedSpots
from py4dstem_gnn.model import ModelConfig, PEAGGMoE
from py4dstem_gnn.model.inference import prepare_for_inference

BATCH, SPOTS = 256, 40


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def _fixed_shape_batch(net, ragged, idx, device, autocast):
    """As ``batching._run_batch``, with the batch padded to BATCH × SPOTS (padding rows hold one spot)."""
    s, m = ragged.pad(idx)
    spots = torch.zeros(BATCH, SPOTS, 3)
    mask = torch.zeros(BATCH, SPOTS, dtype=torch.bool)
    spots[: s.shape[0], : s.shape[1]] = s
    mask[: s.shape[0], : s.shape[1]] = m
    mask[s.shape[0]:, 0] = True
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = net(spots, mask)
    k = len(idx)
    return (torch.softmax(out.cs_logits.float()[:k], -1).numpy(), torch.softmax(out.sg_logits.float()[:k], -1).numpy())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--autocast", action="store_true")
    ap.add_argument("--fixed-shape", action="store_true")
    ap.add_argument("--fuse", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = PEAGGMoE(ModelConfig(feature_dim=16, hidden_dim=16, n_layers=1, n_heads=4, ffn_dim=16)).eval()
    if args.fuse:
        net = prepare_for_inference(net, "fp32", fuse_moe=True)
    batch_size = None
    if args.fixed_shape:
        network_stage._run_batch = _fixed_shape_batch
        batch_size = BATCH
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, SPOTS, args.n)
    offsets = np.zeros(args.n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    spots = rng.uniform(-1, 1, (int(offsets[-1]), 3)).astype(np.float32)
    cpu = torch.device("cpu")
    network_stage.network_probabilities(RaggedSpots(spots[: offsets[10]], offsets[:11]), net, cpu,
                                        batch_size=batch_size, autocast=args.autocast)
    before = _status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    t0 = time.perf_counter()
    network_stage.network_probabilities(RaggedSpots(spots, offsets), net, cpu, space_group_probs=False,
                                        batch_size=batch_size, autocast=args.autocast)
    print(f"n {args.n}, autocast {args.autocast}, fixed shape {args.fixed_shape}, fused experts {args.fuse}: "
          f"peak RSS growth {(_status('VmHWM:') - before) / 1e9:.2f} GB, {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
