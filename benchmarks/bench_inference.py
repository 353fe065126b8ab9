"""Speed of ``classify_braggvectors`` on a synthetic 256 x 256 scan, against a per-position loop.

Measures, in one run and on one model:

* end-to-end ``classify_braggvectors`` (patterns/s) and where the time goes
  (reading + calibration + beam removal, model, post-processing);
* a plain per-position loop (``bv.cal[rx, ry]`` -> split beam -> model on one
  pattern) on a subset, extrapolated to the whole scan;
* the conversion alone: ``bv.cal[rx, ry]`` over every position vs the vectorised
  read (:func:`py4dstem_gnn.classify.calibrated_vectors`);
* model FLOPs per pattern (``torch.utils.flop_counter.FlopCounterMode``);
* fp32 vs bf16 autocast, and the automatic batch (token budget);
* with ``--large``: peak memory (RSS) of a 1024 x 1024 scan;
* everything again on CUDA when available.

Run::

    python benchmarks/bench_inference.py                    # writes benchmarks/results/inference.md
    python benchmarks/bench_inference.py --large            # adds the 1024 x 1024 memory check

The BraggVectors are built directly (no DataCube) with 30-60 diffracted spots per
position (:func:`py4dstem_gnn.data.synthetic.random_braggvectors`). Without shipped
weights the model is randomly initialised at the paper's size (``ModelConfig()``);
its speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("bench_inference")


class _Report(list):
    """Lines of the report, written to ``path`` after every addition (partial runs keep their results)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def _flush(self) -> None:
        self.path.write_text("\n".join(self) + "\n")

    def append(self, line: str) -> None:  # type: ignore[override]
        super().append(line)
        if line.strip():
            logger.info("report: %s", line)
        self._flush()

    def __iadd__(self, lines):  # type: ignore[override]
        for line in lines:
            self.append(line)
        return self


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MB), from /proc (VmHWM) or getrusage."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _load_model(name: str, device: torch.device) -> tuple[torch.nn.Module, str]:
    from py4dstem_gnn.model import ModelConfig, PEAGGMoE
    from py4dstem_gnn.weights import available_models, load_model

    if name == "random" or (name == "default" and "default" not in available_models()):
        torch.manual_seed(0)
        net = PEAGGMoE(ModelConfig()).to(device).eval()
        return net, "randomly initialised PEAGGMoE(ModelConfig()) (paper size; no shipped weights used)"
    return load_model(name, device=str(device)), f"weights {name!r}"


class _StandInModel(torch.nn.Module):
    """One linear layer on the mean spot: exercises the pipeline's memory, not the network's."""

    def __init__(self, max_spots: int = 64) -> None:
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(max_spots=max_spots)
        self.cs = torch.nn.Linear(3, 7)
        self.sg = torch.nn.Linear(3, 230)

    def forward(self, spots: torch.Tensor, mask: torch.Tensor):
        from py4dstem_gnn.model import ModelOutput

        m = mask.unsqueeze(-1).to(spots.dtype)
        mean = (spots * m).sum(1) / m.sum(1).clamp_min(1)
        return ModelOutput(self.cs(mean), self.sg(mean), torch.zeros((), device=spots.device))


def flops_per_pattern(net: torch.nn.Module, n_spots: int, device: torch.device, batch: int = 32) -> float:
    """Model FLOPs per pattern with ``n_spots`` diffracted spots (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    g = torch.Generator().manual_seed(0)
    spots = torch.rand(batch, n_spots, 3, generator=g) * 2 - 1
    spots[..., 2] = spots[..., 2].abs() + 0.1
    mask = torch.ones(batch, n_spots, dtype=torch.bool)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(spots.to(device), mask.to(device))
    return counter.get_total_flops() / batch


def matmul_peak_gflops(device: torch.device) -> float:
    """Measured fp32 matmul rate (GFLOP/s) at the model's shapes (4096 x 256 @ 256 x 256)."""
    a = torch.randn(4096, 256, device=device)
    b = torch.randn(256, 256, device=device)
    a @ b
    reps = 20 if device.type == "cpu" else 200
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * 4096 * 256 * 256 * reps / (time.perf_counter() - t0) / 1e9


def per_position_loop(bv: Any, net: torch.nn.Module, device: torch.device, n: int) -> float:
    """Seconds for a naive loop over the first ``n`` positions (C order)."""
    from py4dstem_gnn.features import collate, split_direct_beam
    from py4dstem_gnn.predict import consistent_labels

    ny = bv.Rshape[1]
    max_spots = net.config.max_spots
    t0 = time.perf_counter()
    with torch.inference_mode():
        for p in range(n):
            v = bv.cal[p // ny, p % ny]
            pl = np.stack([v.qx, v.qy, v.I], axis=1)
            spots, _ = split_direct_beam(pl)
            x, m = collate([spots], max_spots)
            out = net(x.to(device), m.to(device))
            cs_p = torch.softmax(out.cs_logits, -1).cpu().numpy()
            sg_p = torch.softmax(out.sg_logits, -1).cpu().numpy()
            consistent_labels(cs_p, sg_p)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def model_only(
    net: torch.nn.Module, spot_lists: list[np.ndarray], device: torch.device, autocast: bool, batch_size: int | None
) -> float:
    """Seconds for the model part alone on ``spot_lists``."""
    from py4dstem_gnn.predict import _predict_spot_lists

    _predict_spot_lists(spot_lists[:64], net, device, batch_size, False, autocast)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    _predict_spot_lists(spot_lists, net, device, batch_size, False, autocast)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench_device(args: argparse.Namespace, device: torch.device, bv: Any, lines: list[str]) -> None:
    from py4dstem_gnn import batching  # the token budgets are read from py4dstem_gnn.batching
    from py4dstem_gnn.classify import calibrated_vectors, classify_braggvectors, remove_direct_beam

    n_pos = int(np.prod(bv.Rshape))
    net, model_desc = _load_model(args.model, device)
    n_params = sum(p.numel() for p in net.parameters())
    lines += [f"\n## Device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), ""]
    lines.append(f"Model: {model_desc}; {n_params / 1e6:.2f} M parameters; max_spots {net.config.max_spots}.")

    # FLOPs
    f_mean = flops_per_pattern(net, 45, device)
    f_max = flops_per_pattern(net, net.config.max_spots, device)
    lines.append(
        f"Model FLOPs per pattern (FlopCounterMode; matmuls/convolutions): {f_mean / 1e6:.1f} MFLOP at 45 spots "
        f"(the scan's mean), {f_max / 1e6:.1f} MFLOP at {net.config.max_spots} spots."
    )

    # conversion only
    t0 = time.perf_counter()
    rv = calibrated_vectors(bv)
    diff, _ = remove_direct_beam(rv)
    t_fast = time.perf_counter() - t0
    sub = min(n_pos, args.cal_subset)
    ny = bv.Rshape[1]
    t0 = time.perf_counter()
    for p in range(sub):
        bv.cal[p // ny, p % ny]
    t_cal = (time.perf_counter() - t0) * n_pos / sub
    lines.append(
        f"Conversion of the whole scan ({rv.qx.size:,} vectors): vectorised read + calibration + beam removal "
        f"{t_fast:.2f} s; `bv.cal[rx, ry]` per position {t_cal:.2f} s"
        + (f" (measured on {sub:,} positions, extrapolated)" if sub < n_pos else "")
        + f" -> {t_cal / max(t_fast, 1e-9):.0f}x."
    )

    # end to end, fp32 then bf16 autocast
    lines += ["", "| run | total (s) | patterns/s | read (s) | model (s) | post (s) |", "|---|---|---|---|---|---|"]
    results: dict[bool, float] = {}
    times_model_fp32 = [float("nan")]
    peaks: dict[bool, tuple[float, float]] = {}
    for ac in ([False, True] if args.autocast_compare else [False]):
        times: dict[str, float] = {}
        rss_before = _rss_mb()
        _reset_peak_rss()
        t0 = time.perf_counter()
        maps = classify_braggvectors(bv, model=net, device=str(device), progress=False, autocast=ac, timings=times)
        if device.type == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - t0
        results[ac] = total
        if not ac:
            times_model_fp32[0] = times["model"]
        peaks[ac] = (rss_before, _peak_rss_mb())
        label = "classify_braggvectors" + (" (bf16 autocast)" if ac else " (fp32)")
        lines.append(
            f"| {label} | {total:.1f} | {n_pos / total:,.0f} | {times['read']:.2f} | {times['model']:.1f} | {times['post']:.2f} |"
        )
        logger.info("%s on %s: %.1f s, %.0f patterns/s, %s", label, device, total, n_pos / total, times)
    valid = int((maps.get_slice("n_spots").data >= 5).sum())

    # per-position loop
    sub = min(n_pos, args.loop_subset)
    t_loop = per_position_loop(bv, net, device, sub)
    t_loop_full = t_loop * n_pos / sub
    lines.append(
        f"| per-position loop (`bv.cal` + model on 1 pattern) | {t_loop_full:.0f} (extrapolated from {sub:,} positions, {t_loop:.1f} s) "
        f"| {sub / t_loop:,.0f} | | | |"
    )
    if device.type == "cpu":
        r0, r1 = peaks[False]
        lines.append(f"\nPeak RSS during the fp32 run: {r1:,.0f} MB ({r1 - r0:,.0f} MB above the RSS before the call).")
    peak = matmul_peak_gflops(device)
    achieved = f_mean * n_pos / max(times_model_fp32[0], 1e-9) / 1e9
    lines.append("")
    lines.append(
        f"Compute bound: the model part ran at {achieved:.1f} GFLOP/s (at 45 spots per pattern); a plain fp32 "
        f"matmul of the model's width runs at {peak:.1f} GFLOP/s here with {torch.get_num_threads()} threads under the "
        f"same load. 1,000 patterns/s would need {f_mean * 1000 / 1e9:.0f} GFLOP/s of model arithmetic."
    )
    lines.append(
        f"Speed-up of classify_braggvectors (fp32) over the per-position loop: {t_loop_full / results[False]:.1f}x. "
        f"{valid:,} of {n_pos:,} positions had >= 5 diffracted spots (all were classified)."
    )

    # automatic batch: token budget sweep on the model part alone
    if args.sweep:
        spots = np.stack([diff.qx, diff.qy, diff.intensity], 1).astype(np.float32)
        lists = [spots[diff.offsets[p] : diff.offsets[p + 1]] for p in range(min(n_pos, args.sweep_patterns))]
        lines += ["", f"Model part alone on {len(lists):,} patterns, by token budget (patterns x padded spots per batch):", ""]
        lines += ["| token budget | fp32 patterns/s | bf16 autocast patterns/s |", "|---|---|---|"]
        saved = batching.CPU_TOKEN_BUDGET
        budgets = [1024, 4096, 16384] if device.type == "cpu" else [None]
        for b in budgets:
            if b is not None:
                batching.CPU_TOKEN_BUDGET = b
            r32 = len(lists) / model_only(net, lists, device, False, None)
            r16 = len(lists) / model_only(net, lists, device, True, None)
            lines.append(f"| {b if b is not None else 'auto (CUDA free memory)'} | {r32:,.0f} | {r16:,.0f} |")
            logger.info("token budget %s: fp32 %.0f, bf16 %.0f patterns/s", b, r32, r16)
        batching.CPU_TOKEN_BUDGET = saved


def bench_large(args: argparse.Namespace, lines: list[str]) -> None:
    """Peak RSS of classify_braggvectors on a 1024 x 1024 scan (stand-in model: memory, not speed)."""
    from py4dstem_gnn.classify import classify_braggvectors
    from py4dstem_gnn.data.synthetic import random_braggvectors

    shape = (args.large_size, args.large_size)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    bv = random_braggvectors(shape, spots=tuple(args.spots), seed=1)
    t_build = time.perf_counter() - t0
    rss_bv = _rss_mb()
    reset = _reset_peak_rss()
    torch.manual_seed(0)
    net = _StandInModel()
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    maps = classify_braggvectors(bv, model=net, device="cpu", progress=False, timings=times)
    total = time.perf_counter() - t0
    peak = _peak_rss_mb()
    lines += [
        "",
        f"## Memory: {shape[0]} x {shape[1]} scan ({int(np.prod(shape)):,} positions, {args.spots[0]}-{args.spots[1]} spots)",
        "",
        "Stand-in model (one linear layer on the mean spot) so that the run takes minutes, not hours: the network's "
        "memory per batch is bounded by the token budget whatever the scan size (see the run above), so what grows "
        "with the scan is the conversion, the padded spot lists and the outputs, all measured here.",
        "",
        f"- RSS before building the BraggVectors: {rss0:,.0f} MB; after (py4DSTEM's PointListArray): {rss_bv:,.0f} MB "
        f"(built in {t_build:.0f} s)",
        f"- peak RSS during classify_braggvectors: {peak:,.0f} MB"
        + ("" if reset else " (peak counter could not be reset: includes the build)")
        + f", i.e. {peak - rss_bv:,.0f} MB above the BraggVectors",
        f"- classify_braggvectors: {total:.0f} s (read {times['read']:.1f} s, model {times['model']:.0f} s, post {times['post']:.1f} s)",
        f"- result: RealSlice {tuple(maps.data.shape)} float32 = {maps.data.nbytes / 2**20:,.0f} MB",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scan", type=int, nargs=2, default=(256, 256))
    parser.add_argument("--spots", type=int, nargs=2, default=(30, 60), help="diffracted spots per position (range)")
    parser.add_argument("--model", default="default", help="'default', a weights path, or 'random' (paper-size, random init)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--device", default="auto", help="'auto' runs the CPU and, when available, CUDA")
    parser.add_argument("--loop-subset", type=int, default=1000, help="positions timed in the per-position loop")
    parser.add_argument("--cal-subset", type=int, default=20000, help="positions timed with bv.cal")
    parser.add_argument("--autocast-compare", action="store_true", help="also run the whole scan under bf16 autocast")
    parser.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the token-budget sweep")
    parser.add_argument("--sweep-patterns", type=int, default=4096)
    parser.add_argument("--large", action="store_true", help="also check the memory of a 1024 x 1024 scan")
    parser.add_argument("--large-size", type=int, default=1024)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "inference.md"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    from py4dstem_gnn.data.synthetic import random_braggvectors

    cmd = "python " + " ".join([os.path.relpath(__file__, Path(__file__).parent.parent)] + (argv if argv is not None else sys.argv[1:]))
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    out = Path(args.out)
    lines = _Report(out)
    lines += [
        "# Inference speed: classify_braggvectors",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; load average at start {load[0]:.1f} "
        "(other jobs share the cores: the figures are lower bounds of an idle machine).",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
    ]
    t0 = time.perf_counter()
    bv = random_braggvectors(tuple(args.scan), spots=tuple(args.spots), seed=0)
    lines.append(
        f"Scan: {args.scan[0]} x {args.scan[1]} synthetic BraggVectors (built directly, {time.perf_counter() - t0:.0f} s), "
        f"{args.spots[0]}-{args.spots[1]} diffracted spots + direct beam per position."
    )
    devices = [torch.device("cpu")]
    if args.device == "auto" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif args.device != "auto":
        devices = [torch.device(args.device)]
    for dev in devices:
        bench_device(args, dev, bv, lines)
    if not torch.cuda.is_available():
        lines += ["", "CUDA: not available on this machine; no GPU figures."]
    if args.large:
        del bv
        bench_large(args, lines)
    logger.info("wrote %s", out)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
