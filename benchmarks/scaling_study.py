"""Model size by validation loss at equal compute: a short scaling study.

Reads the ``metrics.jsonl`` of training runs that differ only in model size (same protocol, data,
learning rate and seed; ``py4dstem-gnn train --model '{...}' --max-minutes M``, see the command
lines recorded below), converts training progress to compute (patterns seen × 3 × forward FLOPs per
pattern, counted by ``torch.utils.flop_counter`` at 45 spots; the factor 3 counts the backward
pass), and writes a table and a figure of validation loss against compute, on a log axis.

Run (from the repository root)::

    python benchmarks/scaling_study.py --run S=runs/scale_s --run M=runs/scale_m --run L=runs/scale_l \\
        --out benchmarks/results/scaling_study.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
from pathlib import Path

import torch

from py4dstem_gnn.info import forward_flops
from py4dstem_gnn.model import ModelConfig, PEAGGMoE
from py4dstem_gnn.training.train import read_metrics

logger = logging.getLogger("scaling_study")


def run_config(run_dir: Path) -> tuple[ModelConfig, dict]:
    """Model and training configuration of a run, from its checkpoint."""
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    return ModelConfig.from_dict(state["model_config"]), state["train_config"]


def interpolate_log(points: list[tuple[float, float]], x: float) -> float | None:
    """Loss at compute ``x``, linear in log compute between the two evaluations around it (no extrapolation)."""
    pts = sorted(points)
    if not pts or x < pts[0][0] * (1 - 1e-9) or x > pts[-1][0] * (1 + 1e-9):
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x0 <= x <= x1:
            t = 0.0 if x1 == x0 else (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    return pts[-1][1] if abs(x - pts[-1][0]) <= 1e-9 * x else pts[0][1]


def equal_compute_table(curves: dict, lrs: dict, sets: list[str]) -> list[str]:
    """Markdown rows: every run's loss at every evaluation's compute (interpolated in log compute)."""
    if len(curves) < 2:
        return []
    labels = list(curves)
    lines = ["", "## At equal compute", "",
             ("Each evaluation of each run, with the other runs' losses at the same compute interpolated linearly in "
             "log compute between their two nearest evaluations (*italics*; – outside a run's range; evaluations in "
             "**bold**, with the learning rate there as a share of the peak: 1.00 = stable phase of WSD; "
             "below 1 = in the cool-down), so compare stable-phase rows with each other."), ""]
    for s in sets:
        # evaluations within 1 % of compute share a row
        points: list[tuple[float, dict[str, float]]] = []
        for x, lab in sorted((x_, run) for run in labels for x_, _ in curves[run].get(s, [])):
            if points and abs(x - points[-1][0]) <= 0.01 * x:
                points[-1][1][lab] = x
            else:
                points.append((x, {lab: x}))
        if not points:
            continue
        lines += [f"### {s}", "", "| compute (FLOP) | " + " | ".join(f"{lab} loss (lr / peak)" for lab in labels) + " |",
                  "|---:|" + "---:|" * len(labels)]
        for x, evaluated in points:
            cells = []
            for lab in labels:
                if lab in evaluated:
                    own = dict(curves[lab][s])[evaluated[lab]]
                    lr = dict(lrs.get(lab, [])).get(evaluated[lab], float("nan"))
                    cells.append(f"**{own:.3f}** ({lr:.2f})")
                else:
                    v = interpolate_log(curves[lab].get(s, []), x)
                    cells.append("–" if v is None else f"*{v:.3f}*")
            lines.append(f"| {x:.2e} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar="LABEL=DIR")
    ap.add_argument("--out", default="benchmarks/results/scaling_study.md")
    ap.add_argument("--n-spots", type=int, default=45)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    rows, curves, lrs = [], {}, {}
    for spec in args.run:
        label, _, d = spec.partition("=")
        cfg, tcfg = run_config(Path(d))
        model = PEAGGMoE(cfg)
        flops = forward_flops(model, n_spots=args.n_spots)
        metrics = read_metrics(d)
        val = [r for r in metrics if r.get("kind") == "val"]
        batch = tcfg["batch_size"] * tcfg.get("accumulate", 1)
        sets = sorted({k.rsplit("/", 1)[0] for r in val for k in r if k.endswith("/loss")})
        curves[label] = {s: [(r["step"] * batch * 3 * flops, r[f"{s}/loss"]) for r in val if f"{s}/loss" in r] for s in sets}
        logged = sorted((r["step"], r["lr"]) for r in metrics if r.get("kind") == "train" and "lr" in r)

        def lr_at(step: int, logged=logged) -> float:
            """Learning rate of the last logged training step at or before ``step``."""
            before = [lr for s_, lr in logged if s_ <= step]
            return before[-1] if before else float("nan")

        lrs[label] = [(r["step"] * batch * 3 * flops, lr_at(r["step"]) / tcfg["lr"]) for r in val]
        last = val[-1] if val else {}
        rows.append({
            "label": label, "dir": d, "model": {k: getattr(cfg, k) for k in ("n_layers", "feature_dim", "hidden_dim", "n_heads", "lattice_token")},
            "parameters": model.num_parameters(), "mflop_per_pattern": flops / 1e6, "steps": last.get("step", 0),
            "patterns": last.get("step", 0) * batch, "seconds": last.get("seconds", 0.0),
            "train_flop": last.get("step", 0) * batch * 3 * flops,
            **{k: v for k, v in last.items() if k.endswith(("/loss", "/cs_acc", "/sg_acc"))},
        })
        logger.info("%s: %s", label, rows[-1])
    sets = sorted({s for c in curves.values() for s in c})
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 5), squeeze=False)
    for ax, s in zip(axes[0], sets):
        for n, (label, c) in enumerate(curves.items()):
            if c.get(s):
                ax.plot(*zip(*c[s]), "o-", ms=3, color=f"C{n}", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("training compute (FLOP, log scale)")
        ax.set_ylabel("validation loss (CE CS + SG)")
        ax.set_title(s)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    png = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    lines = ["# Scaling study: validation loss against compute", "",
             f"Command: `python benchmarks/scaling_study.py {' '.join(argv if argv is not None else __import__('sys').argv[1:])}`", "",
             (f"Compute = patterns seen × 3 × forward FLOPs per pattern ({args.n_spots} spots). Loss: mean cross-entropy, "
             "crystal system + space group, on the run's fixed validation sets (last evaluation). Figure: "
             f"[{png.name}]({png.name})."), "",
             "| size | model | parameters | MFLOP / pattern | steps | patterns | train seconds | compute (FLOP) | " + " | ".join(f"{s} loss | {s} CS %" for s in sets) + " |",
             "|---|---|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * len(sets)]
    for r in rows:
        cells = [r["label"], json.dumps(r["model"]), f"{r['parameters']:,}", f"{r['mflop_per_pattern']:.1f}", str(r["steps"]),
                 f"{r['patterns']:,}", f"{r['seconds']:.0f}", f"{r['train_flop']:.2e}"]
        for s in sets:
            cells += [f"{r.get(f'{s}/loss', float('nan')):.3f}", f"{100 * r.get(f'{s}/cs_acc', float('nan')):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per run, the validation curve (compute → loss, per set):", ""]
    for label, c in curves.items():
        lines.append(f"- {label}: " + "; ".join(f"{s}: " + ", ".join(f"{x:.1e}→{y:.3f}" for x, y in pts) for s, pts in c.items()))
    lines += equal_compute_table(curves, lrs, sets)
    out.write_text("\n".join(lines) + "\n")
    logger.info("wrote %s and %s", out, png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
