"""Train on one CUDA GPU for a given number of minutes; leave the checkpoint, the curve and the speeds.

What it does, in order (useful work starts within seconds: no compilation, tables from one file):

1. trains with the torch sampler on the GPU (``py4dstem-gnn train --sampler torch --device cuda``), WSD
   schedule at its constant rate, checkpointing every minute, for 80 % of ``--minutes``;
2. continues the same run with a short decay (a quarter of the steps taken so far; the constant-rate
   checkpoint ``checkpoint_stable.pt`` is kept to continue from later) for the rest;
3. measures inference speed (``predict_pointlists`` of the shipped weights, patterns/s);
4. writes the curve (``py4dstem-gnn curve``) and copies into ``--out`` at most 8 files: ``checkpoint.pt``,
   ``checkpoint_stable.pt``, ``cooldown_<step>.safetensors`` + ``.json``, ``metrics.jsonl``,
   ``curve.png``, ``summary.json`` (speeds, versions, the commands run).

It needs torch, numpy, safetensors, scipy, tqdm and matplotlib, not py4DSTEM (the GPU machine may have
numpy >= 2, where py4DSTEM 0.14 does not import), and reads the structure-factor tables from an
``.npz`` made here, small enough to travel with the working tree (64 MiB in all)::

    py4dstem-gnn export-tables --library data/cache/kinematic --out gpu/tables.npz --max-materials 2000
    echo /gpu/ >> .git/info/exclude
    # device tool: run(command="python3 benchmarks/gpu_train.py --tables gpu/tables.npz --minutes 8 --out $OUT",
    #                  carry=["gpu"], timeout_s=600)

The run resumes: rerunning with the same ``--run-dir`` continues from its checkpoint (also on a CPU:
checkpoints hold CPU tensors only).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the device machine runs the checkout without installing it

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _train_args(a: argparse.Namespace, run_dir: Path, steps: int, decay_steps: int, minutes: float) -> list[str]:
    return ["train", "--sampler", "torch", "--device", a.device, "--library", a.tables, "--run-dir", str(run_dir),
            "--steps", str(steps), "--schedule", "wsd", "--decay-steps", str(decay_steps), "--decay-shape", "sqrt",
            "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--warmup-steps", str(a.warmup_steps),
            "--min-lr-ratio", "0.0", "--max-minutes", f"{minutes:.3f}", "--checkpoint-minutes", "1",
            "--checkpoint-every", "1000000", "--eval-every", str(a.eval_every), "--val-kinematic", str(a.val_kinematic),
            "--model", a.model, "--threads", str(a.threads), "--seed", str(a.seed)] + (
        ["--init-from", a.init_from] if a.init_from else [])


def _train_rate(rows: list[dict], batch: int, first_step: int, last_step: int) -> float | None:
    """Patterns per second of optimiser steps (Trainer seconds, evaluation excluded) between two steps."""
    sel = [r for r in rows if r.get("kind") == "train" and first_step <= r["step"] <= last_step]
    if len(sel) < 2 or sel[-1]["seconds"] <= sel[0]["seconds"]:
        return None
    return (sel[-1]["step"] - sel[0]["step"]) * batch / (sel[-1]["seconds"] - sel[0]["seconds"])


def _inference_rate(a: argparse.Namespace) -> dict[str, float]:
    """``predict_pointlists`` patterns/s of the shipped weights on pointlists from the tables."""
    from py4dstem_gnn import predict_pointlists
    from py4dstem_gnn.data.sources_torch import TorchKinematicSource

    source = TorchKinematicSource(a.tables, split=["train", "val", "test"], split_column="split_type",
                                  device=a.device)
    pls, _, _ = source.sample(np.random.default_rng(0), a.inference_patterns)
    out = {}
    for label, kw in (("auto_batch", {}), ("auto_batch_bf16", {"autocast": True})):
        predict_pointlists(pls[:2048], device=a.device, **kw)  # warm-up
        t0 = time.perf_counter()
        predict_pointlists(pls, device=a.device, **kw)
        out[label] = len(pls) / (time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", required=True, help="structure-factor tables (.npz from py4dstem-gnn export-tables)")
    ap.add_argument("--minutes", type=float, default=8.0, help="training minutes in all")
    ap.add_argument("--out", required=True, help="folder for the files to bring back")
    ap.add_argument("--run-dir", default="/tmp/gpu_run", help="the run's own folder (resumable)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup-steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=2000)
    ap.add_argument("--val-kinematic", type=int, default=1000)
    ap.add_argument("--model", default="{}", help="JSON overrides of the model config (default: Table 6)")
    ap.add_argument("--init-from", default=None, help="start from these weights (e.g. default)")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inference-patterns", type=int, default=100_000)
    a = ap.parse_args(argv)
    from py4dstem_gnn.cli import main as cli
    from py4dstem_gnn.training.train import read_metrics

    t_start = time.monotonic()
    out, run_dir = Path(a.out), Path(a.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"torch": torch.__version__, "numpy": np.__version__, "device": a.device,
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                     "args": vars(a), "commands": []}
    # 1. constant rate
    cmd = _train_args(a, run_dir, 10**9, 1, 0.8 * a.minutes)
    summary["commands"].append("py4dstem-gnn " + " ".join(cmd))
    cli(cmd)
    stable_step = int(torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["step"])
    # 2. the decay: same run, a total that ends a quarter of the steps later (the rates taken so far agree)
    decay = max(1, math.ceil(0.25 * stable_step))
    left = max(0.5, a.minutes - (time.monotonic() - t_start) / 60)
    cmd = _train_args(a, run_dir, stable_step + decay, decay, left)
    summary["commands"].append("py4dstem-gnn " + " ".join(cmd))
    cli(cmd)
    rows = read_metrics(run_dir)
    final = int(torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["step"])
    summary.update(stable_step=stable_step, final_step=final, decay_steps=decay,
                   train_minutes=(time.monotonic() - t_start) / 60,
                   train_patterns_per_s=_train_rate(rows, a.batch_size, min(20, stable_step // 4), stable_step),
                   last_train_row=[r for r in rows if r.get("kind") == "train"][-1:],
                   last_val_row=[r for r in rows if r.get("kind") == "val"][-1:])
    print(json.dumps(summary, indent=1), flush=True)
    # 3. inference speed
    summary["inference_patterns_per_s"] = _inference_rate(a)
    # 4. curve and files
    cli(["curve", "--lineage", f"gpu={run_dir}", "--out", str(out / "curve.png")])
    for name in ["checkpoint.pt", "checkpoint_stable.pt", "metrics.jsonl", f"cooldown_{final}.safetensors",
                 f"cooldown_{final}.json"]:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out / name)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary[k] for k in ("train_patterns_per_s", "inference_patterns_per_s", "final_step")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
