"""Inference speed of trained models of different sizes, beside their held-out validation loss
(issue 23, "speed by design": the layers choice, which needs retraining).

For each ``LABEL=WEIGHTS``: parameters, forward MFLOP per 64-spot pattern (``torch.utils.flop_counter``,
lattice descriptors excluded), patterns/s of the network alone on 64-spot zone-axis test patterns (the
64 brightest diffracted spots of ``data/bloch_test_za.h5`` patterns with at least 64; 2 threads; fp32 and
bf16 autocast; best of ``--repeats`` passes after a warm-up batch), training patterns seen and the
validation losses recorded in the weights' card at the end of training (held-out materials of the
card's protocol). Compare sizes at equal compute with ``benchmarks/scaling_study.py``, not here: the
losses in this table come at each model's own compute.

``--pause-pid`` / ``--pause-match`` stop background jobs (SIGSTOP) during the timed part only.

    python benchmarks/bench_model_sizes.py S=runs/export/scale_s_unseen_type.safetensors \\
        M=runs/export/unseen_type_2026-12-06.safetensors --out benchmarks/results/model_sizes_speed.md
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_match import paused
from bench_speed_choices import BASE, batches, build, diffracted


def forward_mflop(net, n_spots: int = 64) -> float:
    """Forward MFLOP per pattern of ``n_spots`` spots (descriptors given, so not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    g = torch.Generator().manual_seed(0)
    s = torch.randn(8, n_spots, 3, generator=g).abs()
    m = torch.ones(8, n_spots, dtype=torch.bool)
    n_lat = len(getattr(net.config, "lattice_mean", ()) or ()) or 60
    lat = torch.zeros(8, n_lat) if net.config.lattice_token else None
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        net(s, m, lat)
    return fc.get_total_flops() / 8 / 1e6


def _trained_on(data: dict) -> str:
    """``column = splits`` of the manifest a card's training data came from."""
    d = data.get("main", data)
    split = d.get("split", "?")
    return f"{d.get('split_column', '?')} = {'+'.join(split) if isinstance(split, list) else split}"


def rate(fwd, data, repeats: int) -> float:
    """Best patterns/s over ``repeats`` passes (each after a warm-up batch)."""
    n = sum(len(idx) for idx, _, _ in data)
    best = 0.0
    with torch.inference_mode():
        for _ in range(repeats):
            fwd(*data[0][1:])
            t0 = time.perf_counter()
            for _idx, s, m in data:
                fwd(s, m)
            best = max(best, n / (time.perf_counter() - t0))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", metavar="LABEL=WEIGHTS")
    ap.add_argument("--n", type=int, default=512, help="64-spot test patterns timed")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pause-pid", type=int, nargs="+", action="extend", default=[])
    ap.add_argument("--pause-match", default=None, help="pgrep -f pattern of further jobs to pause while timing")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/model_sizes_speed.md"))
    args = ap.parse_args(argv)
    from py4dstem_gnn.data.dataset import PatternSet
    from py4dstem_gnn.weights import load_model, resolve_weights

    torch.set_num_threads(2)
    test = PatternSet.from_hdf5(ROOT / "data/bloch_test_za.h5")
    spots = diffracted(test.pointlists, 64)[: args.n]
    pids = list(args.pause_pid)
    if args.pause_match:
        pids += [int(p) for p in subprocess.run(["pgrep", "-f", args.pause_match], check=False, capture_output=True,
                                                 text=True).stdout.split()]
    rows = []
    for spec in args.models:
        label, _, w = spec.partition("=")
        net = load_model(w, device="cpu").eval()
        card = json.loads(Path(resolve_weights(w)).with_suffix(".json").read_text())
        tr = card.get("training", {})
        data = batches(spots, 64, args.batch)
        with paused(pids):
            fp32 = rate(build(net, dict(BASE)), data, args.repeats)
            bf16 = rate(build(net, dict(BASE, precision="bf16")), data, args.repeats)
        val = card.get("validation") or {}
        rows.append({"label": label, "weights": w, "protocol": _trained_on(tr.get("data", {})),
                     "layers": net.config.n_layers, "width": net.config.feature_dim,
                     "parameters": sum(p.numel() for p in net.parameters()), "mflop": forward_mflop(net),
                     "fp32": fp32, "bf16": bf16,
                     "patterns": tr.get("total", {}).get("patterns_seen", tr.get("patterns_seen", 0)),
                     "val": {k: v for k, v in val.items() if k.endswith(("/loss", "/cs_acc"))}})
        print(rows[-1], flush=True)
    sets = sorted({k.rsplit("/", 1)[0] for r in rows for k in r["val"]})
    cmd = " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# Inference speed by model size (64-spot zone-axis patterns)", "",
             f"Command: `python benchmarks/bench_model_sizes.py {cmd}`  ",
             (f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
             f"{len(spots)} test patterns of 64 diffracted spots, batch {args.batch}, best of {args.repeats}; "
             f"background jobs paused while timing: {pids or 'none'}."), "",
             ("Validation: the card's losses at the end of each model's own training (held-out materials of its "
             "protocol; CS % in brackets); at equal compute see `scaling_study_extended.md`."), "",
             "| model | layers × width | trained on (manifest column = splits) | parameters | MFLOP / pattern | patterns/s fp32 | patterns/s bf16 | "
             "training patterns | " + " | ".join(f"{s} loss" for s in sets) + " |",
             "|---|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(sets)]
    for r in rows:
        cells = [f"{r['label']} (`{r['weights']}`)", f"{r['layers']} × {r['width']}", r["protocol"], f"{r['parameters']:,}",
                 f"{r['mflop']:.1f}", f"{r['fp32']:.0f}", f"{r['bf16']:.0f}", f"{r['patterns']:,}"]
        for s in sets:
            loss, acc = r["val"].get(f"{s}/loss"), r["val"].get(f"{s}/cs_acc")
            cells.append("–" if loss is None else f"{loss:.3f} ({100 * acc:.1f})")
        lines.append("| " + " | ".join(cells) + " |")
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
