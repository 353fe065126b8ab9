"""Speed choices of the network's inference and what each costs in accuracy (issue 23, "speed by design").

For the shipped default weights: patterns/s of the network alone (lattice descriptors, which the
forward pass measures, included; padding done before timing) on zone-axis patterns of exactly 64
diffracted spots (``data/bloch_test_za.h5`` patterns with at least 64, the 64 brightest kept, as the
batching code keeps them), at the CPU's automatic batch (64 patterns of 64 spots = the 4,096-token
budget of :mod:`py4dstem_gnn.batching`) and at 256, for each choice that needs no retraining:

* lattice descriptors by the numpy reference (the round trip of the old ``forward``) vs the torch port;
* torch threads 1 vs 2;
* precision: fp32, bf16 autocast, dynamic int8 ``Linear`` (:func:`py4dstem_gnn.model.inference.prepare_for_inference`);
* mixture of experts: sparse routing vs fused dense experts; attention: explicit softmax vs SDPA;
* ``torch.compile`` (``--compile``; compiled before the timed part);
* spots read: ``max_spots`` 64, 48, 32 (brightest kept);
* combinations.

Accuracy of every choice on the Bloch-wave zone-axis *validation* set (``data/bloch_val_za.h5``, not
the test set): crystal-system accuracy of the network alone, its change against the baseline and the
share of identical crystal-system argmaxes. Layers (and width) need retraining: the table gives their
FLOPs only.

``--pause-pid PID`` stops background jobs (SIGSTOP) during the timed part only and resumes them
(SIGCONT) in a ``finally``, with :func:`bench_match.paused`.

    python benchmarks/bench_speed_choices.py --pause-pid PID ...  # -> benchmarks/results/speed_choices.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_match import paused  # noqa: E402  (the pause helper is shared, not duplicated)

BASE = dict(desc="torch", threads=2, precision="fp32", fuse_moe=False, attention="explicit", compile=False, max_spots=64)
#: (name, overrides of BASE); the first is the baseline (the shipped path after the torch port).
CHOICES: list[tuple[str, dict]] = [
    ("baseline: fp32, sparse MoE, explicit attention, torch descriptors", {}),
    ("numpy descriptors (old forward: round trip through numpy)", dict(desc="numpy")),
    ("1 thread", dict(threads=1)),
    ("bf16 autocast", dict(precision="bf16")),
    ("int8 dynamic Linear", dict(precision="int8")),
    ("fused MoE", dict(fuse_moe=True)),
    ("SDPA attention", dict(attention="sdpa")),
    ("fused MoE + SDPA", dict(fuse_moe=True, attention="sdpa")),
    ("fused MoE + SDPA + bf16", dict(fuse_moe=True, attention="sdpa", precision="bf16")),
    ("fused MoE + SDPA + int8", dict(fuse_moe=True, attention="sdpa", precision="int8")),
    ("max_spots 48", dict(max_spots=48)),
    ("max_spots 32", dict(max_spots=32)),
    ("fused MoE + SDPA, max_spots 48", dict(fuse_moe=True, attention="sdpa", max_spots=48)),
    ("fused MoE + SDPA + bf16, max_spots 48", dict(fuse_moe=True, attention="sdpa", precision="bf16", max_spots=48)),
    ("fused MoE + SDPA, 1 thread", dict(fuse_moe=True, attention="sdpa", threads=1)),
    ("fused MoE + SDPA, numpy descriptors", dict(fuse_moe=True, attention="sdpa", desc="numpy")),
]
COMPILE_CHOICE = ("fused MoE + SDPA + torch.compile", dict(fuse_moe=True, attention="sdpa", compile=True))


def diffracted(pointlists, min_spots: int = 0) -> list[np.ndarray]:
    """Diffracted spots (direct beam removed) of the patterns with at least ``min_spots`` of them."""
    from py4dstem_gnn.features import split_direct_beam

    out = [split_direct_beam(p)[0] for p in pointlists]
    return [d for d in out if len(d) >= min_spots]


def build(net, choice: dict):
    """The model of a choice and a forward ``(spots, mask) -> cs_logits``."""
    from py4dstem_gnn.model.inference import prepare_for_inference
    from py4dstem_gnn.model.lattice import pattern_descriptors_numpy

    plain = choice["precision"] == "fp32" and not choice["fuse_moe"] and choice["attention"] == "explicit" \
        and not choice["compile"]
    model = net if plain else prepare_for_inference(net, choice["precision"], fuse_moe=choice["fuse_moe"],
                                                     attention=choice["attention"], compile=choice["compile"])
    if choice["desc"] == "numpy":
        return lambda s, m: model(s, m, pattern_descriptors_numpy(s, m)).cs_logits
    return lambda s, m: model(s, m).cs_logits


def batches(spot_lists, max_spots: int, batch_size: int | None):
    """Padded batches as the prediction path forms them (brightest ``max_spots`` kept)."""
    from py4dstem_gnn.batching import CPU_TOKEN_BUDGET, RaggedSpots, _plan_batches

    ragged = RaggedSpots.from_lists(spot_lists).cap(max_spots)
    plan = _plan_batches(ragged.lengths, batch_size, CPU_TOKEN_BUDGET)
    return [(idx, *ragged.pad(idx)) for idx in plan]


def accuracy(fwd, spot_lists, cs, max_spots: int) -> np.ndarray:
    """Crystal-system argmax of every pattern."""
    pred = np.zeros(len(spot_lists), np.int64)
    with torch.inference_mode():
        for idx, s, m in batches(spot_lists, max_spots, None):
            pred[idx] = fwd(s, m).argmax(1).numpy()
    return pred


def flops_per_pattern(config_overrides: dict, n_spots: int = 64) -> float:
    """Forward FLOPs of a randomly initialised model of the default's shape (lattice descriptors excluded)."""
    from torch.utils.flop_counter import FlopCounterMode

    from py4dstem_gnn.model import ModelConfig, PEAGGMoE
    from py4dstem_gnn.weights import load_model

    cfg = load_model("default").config.to_dict()
    net = PEAGGMoE(ModelConfig.from_dict({**cfg, **config_overrides})).eval()
    g = torch.Generator().manual_seed(0)
    s = torch.randn(8, n_spots, 3, generator=g).abs()
    m = torch.ones(8, n_spots, dtype=torch.bool)
    lat = torch.zeros(8, len(cfg.get("lattice_mean", [])) or 60)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        net(s, m, lat)
    return fc.get_total_flops() / 8


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1024, help="64-spot test patterns timed")
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per choice (the best is kept)")
    ap.add_argument("--val-n", type=int, default=None, help="validation patterns (default: all)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--max-pause", type=float, default=420.0, help="seconds the jobs may stay paused (passes are cut)")
    ap.add_argument("--pause-pid", type=int, nargs="+", action="extend", default=[])
    ap.add_argument("--pause-match", default=None,
                    help="also pause the processes whose command line matches this pattern (pgrep -f), found "
                         "just before timing (background runs restart under new ids)")
    ap.add_argument("--accuracy-cache", default=None,
                    help="JSON file of accuracies per choice, reused when the weights and validation set are the same")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/speed_choices.md"))
    args = ap.parse_args(argv)

    from py4dstem_gnn.data.sources import load_pattern_set
    from py4dstem_gnn.model.lattice import pattern_descriptors, pattern_descriptors_numpy
    from py4dstem_gnn.weights import load_model

    torch.set_num_threads(2)
    net = load_model("default").eval()
    choices = CHOICES + ([COMPILE_CHOICE] if args.compile else [])
    test = diffracted(load_pattern_set(ROOT / "data/bloch_test_za.h5").pointlists, 64)[: args.n]
    val = load_pattern_set(ROOT / "data/bloch_val_za.h5")
    val_spots, val_cs = diffracted(val.pointlists)[: args.val_n], val.crystal_system.astype(np.int64)[: args.val_n]

    # accuracy (not timed: the background jobs keep running); cached per weights and validation set
    cache_path = Path(args.accuracy_cache) if args.accuracy_cache else None
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.exists() else {}
    tag = f"{(getattr(net, 'card', None) or {}).get('sha256', 'unknown')}:{len(val_cs)}"
    known = cache.setdefault(tag, {})
    models, acc, agree = {}, {}, {}
    base_pred = None
    for name, over in choices:
        c = {**BASE, **over}
        models[name] = build(net, c)
        if name not in known:
            if base_pred is None:
                base_c = {**BASE, **choices[0][1]}
                base_pred = accuracy(models.get(choices[0][0]) or build(net, base_c), val_spots, val_cs, base_c["max_spots"])
            pred = base_pred if name == choices[0][0] else accuracy(models[name], val_spots, val_cs, c["max_spots"])
            known[name] = [float((pred == val_cs).mean()), float((pred == base_pred).mean())]
            if cache_path:
                cache_path.write_text(json.dumps(cache, indent=1))
        acc[name], agree[name] = known[name]
        print(f"{name}: CS accuracy {acc[name]:.4f}, argmax agreement {agree[name]:.4f}", flush=True)
    padded = {(ms, bs): batches(test, ms, bs) for ms in (64, 48, 32) for bs in args.batch}
    compile_s = None
    if args.compile:  # compile every timed shape before the timed part
        t0 = time.perf_counter()
        with torch.inference_mode():
            for bs in args.batch:
                for _, s, m in padded[(64, bs)][:1] + padded[(64, bs)][-1:]:
                    models[COMPILE_CHOICE[0]](s, m)
        compile_s = time.perf_counter() - t0

    def run(fwd, bl):
        with torch.inference_mode():
            fwd(*bl[0][1:])  # warm-up
            t0 = time.perf_counter()
            for _, s, m in bl:
                fwd(s, m)
            return time.perf_counter() - t0

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a killed run still resumes what it paused
    pids: list[int] = []

    def pause_more(stack: contextlib.ExitStack) -> None:
        """Pause the ``--pause-pid`` jobs and those matching ``--pause-match`` now (runs restart under new ids)."""
        want = list(args.pause_pid)
        if args.pause_match:
            found = subprocess.run(["pgrep", "-f", args.pause_match], capture_output=True, text=True).stdout.split()
            want += [int(p) for p in found if int(p) != os.getpid()]
        new = [p for p in dict.fromkeys(want) if p not in pids]
        if new:
            stack.enter_context(paused(new))
            pids.extend(new)

    with contextlib.ExitStack() as stack:
        pause_more(stack)
        load = os.getloadavg()[0]
        t_start = time.perf_counter()
        times: dict[tuple[str, int], list[float]] = {}
        for rep in range(args.repeats):  # round robin: a slow moment of the machine hits every choice alike
            if rep and time.perf_counter() - t_start > args.max_pause * (rep / (rep + 1)):
                print(f"stopping after {rep} passes: the pause budget ({args.max_pause:.0f} s) would be exceeded", flush=True)
                break
            for name, over in choices:
                pause_more(stack)
                c = {**BASE, **over}
                torch.set_num_threads(c["threads"])
                for bs in args.batch:
                    times.setdefault((name, bs), []).append(run(models[name], padded[(c["max_spots"], bs)]))
                torch.set_num_threads(2)
        rates = {key: len(test) / min(ts) for key, ts in times.items()}
        n_passes = len(times[(choices[0][0], args.batch[0])])
        bl = padded[(64, args.batch[0])]
        desc = {}
        with torch.inference_mode():
            for label, fn in (("torch port", pattern_descriptors), ("numpy reference", pattern_descriptors_numpy)):
                desc[label] = len(test) / min(run(lambda s, m: fn(s, m), bl) for _ in range(args.repeats))
        paused_s = time.perf_counter() - t_start
    flops = {n: flops_per_pattern(o) for n, o in (("4 layers (default)", {}), ("3 layers", dict(n_layers=3)),
                                                   ("2 layers", dict(n_layers=2)))}

    b0 = choices[0][0]
    for name, _ in choices:
        print(name, {bs: round(rates[(name, bs)]) for bs in args.batch}, flush=True)
    lines = [
        "# Speed choices of the network's inference (issue 23, item 3)\n",
        f"Command: `python benchmarks/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}`  ",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
        f"background jobs paused while timing: {pids or 'none'} ({paused_s:.0f} s paused; load average "
        f"before timing {load:.2f}).  ",
        f"Timed: the network alone (lattice descriptors measured inside the forward pass included, padding "
        f"excluded) on {len(test)} patterns of `data/bloch_test_za.h5` with >= 64 diffracted spots, the 64 "
        f"brightest kept (fewer where `max_spots` says so); best of {n_passes} passes (each after a warm-up batch), the choices taken in turn within each pass.  ",
        f"Accuracy: crystal-system accuracy of the network alone on all {len(val_cs)} patterns of "
        f"`data/bloch_val_za.h5` (validation set; automatic batches), its change against the baseline (points) "
        f"and the share of identical crystal-system argmaxes.\n",
        "| choice | " + " | ".join(f"patterns/s, batch {bs}" for bs in args.batch) + " | speed-up | CS accuracy | change (points) | argmax agreement |",
        "|---|" + "---|" * len(args.batch) + "---|---|---|---|",
    ]
    for name, _ in choices:
        r = [rates[(name, bs)] for bs in args.batch]
        lines.append(f"| {name} | " + " | ".join(f"{x:,.0f}" for x in r)
                     + f" | {r[0] / rates[(b0, args.batch[0])]:.2f}x | {100 * acc[name]:.2f} % | "
                     f"{100 * (acc[name] - acc[b0]):+.2f} | {100 * agree[name]:.2f} % |")
    lines += ["", f"Lattice descriptors alone (64-spot patterns, batch {args.batch[0]}, 2 threads): "
              + ", ".join(f"{k} {v:,.0f} patterns/s" for k, v in desc.items()) + ".", ""]
    if compile_s is not None:
        lines.append(f"torch.compile: {compile_s:.0f} s to compile the timed shapes (before timing, jobs running).\n")
    lines += ["Layers need retraining (not measured today); forward FLOPs per 64-spot pattern "
              "(`torch.utils.flop_counter`, descriptors excluded):\n", "| layers | MFLOP per pattern |", "|---|---|"]
    lines += [f"| {k} | {v / 1e6:.1f} |" for k, v in flops.items()]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
