"""One training step, old and new, side by side: patterns per second and where the time goes.

* **old**: today's loop -- kinematic patterns made by the numpy sampler on the CPU
  (:class:`py4dstem_gnn.data.sources.KinematicSource`: orientations, ``sample_kinematic``,
  ``augment_pointlists``), collated with numpy (direct beam removed, brightest ``max_spots``), then
  forward, backward and AdamW. Timed twice: with bf16 autocast (the ``TrainConfig`` default before
  this benchmark) and in float32.
* **new**: the same recipe made batched with torch on the training device
  (:class:`py4dstem_gnn.data.sources_torch.TorchKinematicSource`: ``sample_kinematic_torch``,
  ``augment_padded``, ``collate_padded``), bf16 autocast only where the device has native bf16
  (:func:`py4dstem_gnn.training.runtime.native_bf16`), optionally ``torch.compile``.

Same thread count, batch, model (the shipped default's configuration and weights) and optimizer for
all; sampling included. Variants run in alternating rounds (the machine is shared: alternation spreads
the load of other jobs evenly) and each is reported in patterns per second of wall time and of this
thread's CPU time (``time.thread_time``, insensitive to other processes). The breakdown wraps the
functions each step calls with timers.

Usage::

    python benchmarks/bench_train_step.py --library data/cache/kinematic --seconds 60 \\
        [--batch-size 128] [--threads 1] [--variants old-bf16 old new] [--out benchmarks/results/train_step.md]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import platform
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from _report import command_line, write_report

logger = logging.getLogger("bench_train_step")

PHASES = ("orientations", "sampling", "augmentation", "collate", "forward", "(of which features)", "backward",
          "optimizer")


class Timers:
    """Accumulated thread CPU seconds per phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.thread_time()
        try:
            yield
        finally:
            self.seconds[name] += time.thread_time() - t0

    def wrap(self, module: Any, attr: str, name: str) -> Callable[[], None]:
        """Time every call of ``module.attr`` as phase ``name``; returns the undo."""
        original = getattr(module, attr)

        def timed(*args, **kwargs):
            with self(name):
                return original(*args, **kwargs)

        setattr(module, attr, timed)
        return lambda: setattr(module, attr, original)


def _model(threads: int):
    from py4dstem_gnn.weights import load_model

    torch.set_num_threads(threads)
    model = load_model("default").train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=1e-4,
                            betas=(0.9, 0.98))
    return model, opt


class Variant:
    """One way of making a training step; ``step(i)`` runs step ``i`` and returns the batch size."""

    def __init__(self, name: str, args: argparse.Namespace, timers: Timers) -> None:
        from py4dstem_gnn.data.kinematic import SpotSelection
        from py4dstem_gnn.training.runtime import native_bf16

        self.name, self.args, self.timers = name, args, timers
        self.model, self.opt = _model(args.threads)
        self.patterns = 0
        self.wall = self.cpu = 0.0
        self.spots: list[float] = []
        recipe = dict(split="train", axes=args.axes, random_fraction=args.random_fraction, selection=SpotSelection())
        if name.startswith("old"):
            from py4dstem_gnn.data.sources import KinematicSource

            self.source = KinematicSource(args.library, **recipe)
            self.autocast = name == "old-bf16"
        else:
            from py4dstem_gnn.data.sources_torch import TorchKinematicSource

            self.source = TorchKinematicSource(args.library, **recipe)
            self.autocast = native_bf16(torch.device("cpu"))
            if name == "new-compiled":
                from py4dstem_gnn.training.runtime import compile_model

                compile_model(self.model)

    def batch(self, i: int):
        from py4dstem_gnn.features import collate, split_direct_beam

        rng = np.random.default_rng([0, i, 0])
        if self.name.startswith("old"):
            pls, cs, sg = self.source.sample(rng, self.args.batch_size)
            with self.timers("collate"):
                spots, mask = collate([split_direct_beam(p)[0] for p in pls], self.model.config.max_spots)
            return spots, mask, torch.as_tensor(cs), torch.as_tensor(sg)
        pad_to = self.model.config.max_spots if self.name == "new-compiled" else None
        return self.source.sample_tensors(self.source.generator([0, i, 0]), self.args.batch_size,
                                          self.model.config.max_spots, pad_to)

    def step(self, i: int) -> int:
        from py4dstem_gnn.training.train import compute_loss

        t_wall, t_cpu = time.perf_counter(), time.thread_time()
        spots, mask, cs, sg = self.batch(i)
        self.opt.zero_grad(set_to_none=True)
        with self.timers("forward"), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            loss, _ = compute_loss(self.model, spots, mask, cs.long(), sg.long(), self.model.config.aux_loss_weight,
                                   sync=False)
        with self.timers("backward"):
            loss.backward()
        with self.timers("optimizer"):
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
        self.wall += time.perf_counter() - t_wall
        self.cpu += time.thread_time() - t_cpu
        self.patterns += len(cs)
        self.spots.append(float(mask.sum(1).float().mean()))
        return len(cs)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Alternate the variants in rounds until each has run ``args.seconds`` of wall time (after warm-up)."""
    variants: list[Variant] = []
    timers: dict[str, Timers] = {}
    for name in args.variants:
        timers[name] = Timers()
        t0 = time.perf_counter()
        v = Variant(name, args, timers[name])
        for i in range(args.warmup):
            v.step(10_000 + i)
        logger.info("%s ready (set-up and %d warm-up steps: %.0f s)", name, args.warmup, time.perf_counter() - t0)
        v.patterns, v.wall, v.cpu, v.spots = 0, 0.0, 0.0, []
        timers[name].seconds.clear()
        variants.append(v)
    step = 0
    while min(v.wall for v in variants) < args.seconds:
        for v in variants:
            if v.wall >= args.seconds:
                continue
            rewrap = _rewrap(v, timers[v.name])  # only the running variant's timers are installed
            t_end = time.perf_counter() + args.round_seconds
            while time.perf_counter() < t_end and v.wall < args.seconds:
                v.step(step)
                step += 1
            for undo in rewrap:
                undo()
        logger.info("%s", ", ".join(f"{v.name}: {v.patterns / v.wall:.1f}/s" for v in variants))
    rows = []
    for v in variants:
        steps = v.patterns / args.batch_size
        rows.append({"variant": v.name, "patterns": v.patterns, "wall_s": v.wall, "cpu_s": v.cpu,
                     "per_s_wall": v.patterns / v.wall, "per_s_cpu": v.patterns / v.cpu, "autocast": v.autocast,
                     "mean_spots": float(np.mean(v.spots)),
                     "ms_per_step": {k: 1000 * timers[v.name].seconds.get(k, 0.0) / steps for k in PHASES}})
    return rows


def _rewrap(v: Variant, timers: Timers) -> list[Callable[[], None]]:
    """Install this variant's timing wrappers (undone after its round)."""
    from py4dstem_gnn import features
    from py4dstem_gnn.data import sources, sources_torch
    from py4dstem_gnn.model import network

    undo = [timers.wrap(network, "spot_features", "(of which features)")]
    if v.name.startswith("old"):
        for attr, phase in (("zone_axis_rotations", "orientations"), ("random_rotations", "orientations"),
                            ("sample_kinematic", "sampling"), ("augment_pointlists", "augmentation")):
            undo.append(timers.wrap(sources, attr, phase))
    else:
        for mod, attr, phase in ((sources_torch.TorchKinematicSource, "rotations", "orientations"),
                                 (sources_torch, "sample_kinematic_torch", "sampling"),
                                 (sources_torch, "augment_padded", "augmentation"),
                                 (features, "collate_padded", "collate")):
            undo.append(timers.wrap(mod, attr, phase))
    return undo


def report(rows: list[dict[str, Any]], args: argparse.Namespace, argv: list[str] | None) -> list[str]:
    base = {r["variant"]: r for r in rows}
    lines = [
        "# Training step: old (numpy sampler, current loop) and new (torch sampler on the device)",
        "",
        f"Command: `{command_line('bench_train_step.py', argv)}`",
        "",
        f"Machine: {platform.machine()}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{args.threads} torch thread(s), torch {torch.__version__}, numpy {np.__version__}; shared with other "
        "jobs (variants alternate in rounds; CPU-time rates are this thread's own seconds).",
        f"Model: shipped default weights (`weights/default.json`), batch {args.batch_size}, AdamW; recipe: "
        f"train split, axes {args.axes}, random fraction {args.random_fraction}, default spot selection and "
        f"augmentation; library `{args.library}`.",
        "",
        "| variant | bf16 autocast | mean spots (model input) | patterns | patterns/s (wall) | patterns/s (CPU time) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['autocast']} | {r['mean_spots']:.1f} | {r['patterns']} | "
                     f"{r['per_s_wall']:.1f} | {r['per_s_cpu']:.1f} |")
    lines += ["", "Where one step's CPU time goes (ms per step):", "",
              "| phase | " + " | ".join(r["variant"] for r in rows) + " |",
              "| --- | " + " | ".join("---" for _ in rows) + " |"]
    for phase in PHASES:
        lines.append(f"| {phase} | " + " | ".join(f"{r['ms_per_step'][phase]:.1f}" for r in rows) + " |")
    for old in ("old-bf16", "old"):
        if old in base:
            for r in rows:
                if r["variant"].startswith("new"):
                    lines.append(f"\n{r['variant']} / {old}: {r['per_s_cpu'] / base[old]['per_s_cpu']:.2f}x "
                                 f"(CPU time), {r['per_s_wall'] / base[old]['per_s_wall']:.2f}x (wall).")
    return lines


def compute_bound(spots: float, threads: int, seconds: float = 3.0) -> list[str]:
    """The FLOP ceiling: forward FLOPs of the model per pattern and this CPU's float32 matmul rate."""
    from py4dstem_gnn.info import forward_flops
    from py4dstem_gnn.weights import load_model

    torch.set_num_threads(threads)
    flops = forward_flops(load_model("default"), int(round(spots)))
    rates = []
    for n in (256, 1024):
        a, b = torch.randn(n, n), torch.randn(n, n)
        t0, k = time.thread_time(), 0
        while time.thread_time() - t0 < seconds:
            a @ b
            k += 1
        rates.append(2 * n**3 * k / (time.thread_time() - t0))
    best = max(rates)
    return [f"Forward: {flops / 1e6:.1f} MFLOP per pattern at {int(round(spots))} spots (matrix products, "
            "`py4dstem_gnn.info.forward_flops`); forward + backward ~3x that.",
            f"float32 matrix product on {threads} thread(s): {rates[0] / 1e9:.0f} GFLOP/s (256^3), "
            f"{rates[1] / 1e9:.0f} GFLOP/s (1024^3).",
            f"Ceiling if a step were matrix products at {best / 1e9:.0f} GFLOP/s and nothing else: "
            f"{best / (3 * flops):.0f} patterns/s."]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--library", default=None, help="kinematic library (HDF5 file or shard folder); needed to time steps")
    ap.add_argument("--seconds", type=float, default=60.0, help="timed wall seconds per variant")
    ap.add_argument("--round-seconds", type=float, default=10.0, help="length of one round of one variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--axes", choices=["conventional", "primitive"], default="conventional")
    ap.add_argument("--random-fraction", type=float, default=0.2)
    ap.add_argument("--variants", nargs="+", default=["old-bf16", "old", "new"],
                    choices=["old-bf16", "old", "new", "new-compiled"])
    ap.add_argument("--out", default=None, help="Markdown report (e.g. benchmarks/results/train_step.md)")
    ap.add_argument("--flops-only", type=float, default=None, metavar="SPOTS",
                    help="only print the FLOP ceiling at this mean number of spots (no timing of steps)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.flops_only is not None:
        print("\n".join(compute_bound(args.flops_only, args.threads)))
        return 0
    if args.library is None:
        ap.error("--library is needed to time training steps")
    rows = run(args)
    lines = report(rows, args, argv)
    print("\n".join(lines))
    if args.out:
        write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
