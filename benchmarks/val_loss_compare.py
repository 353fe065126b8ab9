"""Validation loss of several weights on the same fixed held-out sets, against their training compute.

The sets are those the training CLI validates on (``train --val-kinematic 1592 --val-per-material 13``:
20,696 kinematic patterns of validation materials, seed 1234, plus the stored Bloch-wave validation sets),
so weights whose run folders are gone can be compared with a fresh run on equal terms. Compute is each
card's ``training.total.wall_seconds`` (seconds of one CPU core, cumulative over the lineage).

    python benchmarks/val_loss_compare.py default weights/default_2026-12-06.safetensors \
        --out reports/val_loss_2026-12-06.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="+", help="weights names or paths")
    ap.add_argument("--out", required=True,
                    help="figure (.png, with a .md table beside it) or only the table (.md: weights at equal compute)")
    ap.add_argument("--val-set", action="append", default=[], metavar="NAME=PATH",
                    help="further stored sets to take the loss on (e.g. detected_hybrid256=data/cache/detected_hybrid256_val_za.h5)")
    ap.add_argument("--title", default="Held-out validation loss of the shipped lineage")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    import torch.nn.functional as F

    from py4dstem_gnn.data.augment import AugmentConfig
    from py4dstem_gnn.data.kinematic import SpotSelection
    from py4dstem_gnn.data.sources import KinematicSource, load_validation_sets
    from py4dstem_gnn.training.cli import PROTOCOL_SPLITS
    from py4dstem_gnn.training.train import predict_logits
    from py4dstem_gnn.weights import load_model, resolve_weights

    torch.set_num_threads(2)
    column, _train, val_split = PROTOCOL_SPLITS["known"]
    recipe = dict(axes="conventional", random_fraction=0.2, tilt_deg=1.0, selection=SpotSelection(), in_plane="random")
    val = load_validation_sets([f"bloch_val_za={ROOT / 'data/bloch_val_za.h5'}", f"bloch_val_random={ROOT / 'data/bloch_val_random.h5'}"]
                               + list(args.val_set))
    source = KinematicSource(str(ROOT / "data/cache/kinematic"), None, split=val_split, split_column=column,
                             augment=AugmentConfig.preset("calibrated"), **recipe)
    val["val_kinematic"] = source.fixed_set(per_material=13, seed=1234, max_materials=1592)
    rows = []
    for w in args.weights:
        model = load_model(w, device="cpu").eval()
        card = json.loads(Path(resolve_weights(w)).with_suffix(".json").read_text())
        total = card.get("training", {}).get("total", {})
        row = {"weights": w, "compute_s": float(total.get("wall_seconds", np.nan)),
               "patterns": int(total.get("patterns_seen", 0))}
        for name, (pls, cs, sg) in val.items():
            cl, sl = predict_logits(model, pls)
            loss = F.cross_entropy(torch.from_numpy(cl), torch.as_tensor(cs, dtype=torch.long)) + \
                F.cross_entropy(torch.from_numpy(sl), torch.as_tensor(sg, dtype=torch.long) - 1)
            row[name] = float(loss)
            row[name + " cs"] = float(np.mean(cl.argmax(1) == np.asarray(cs)))
            row[name + " n"] = len(cs)
        rows.append(row)
        print(row, flush=True)
    names = [k for k in val]
    md = [f"# {args.title}\n", f"Command: `python {' '.join(sys.argv)}`\n",
          "Validation loss (cross-entropy, crystal system + space group) on fixed held-out sets; crystal-system "
          "accuracy of one pattern in brackets (%).\n",
          "| weights | compute (s, one core) | patterns seen | " + " | ".join(f"{n} (n = {rows[0][n + ' n']:,})" for n in names) + " |",
          "|---|---|---|" + "---|" * len(names)]
    md += [f"| {r['weights']} | {r['compute_s']:,.0f} | {r['patterns']:,} | "
           + " | ".join(f"{r[n]:.3f} ({100 * r[n + ' cs']:.1f})" for n in names) + " |" for r in rows]
    Path(args.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    if args.out.endswith(".md"):
        return 0
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=200)
    for name, marker in zip(names, "osD^v<>"):
        x = [r["compute_s"] for r in rows]
        y = [r[name] for r in rows]
        ax.plot(x, y, marker=marker, label=f"{name} (n = {rows[0][name + ' n']:,})")
    for r in rows:
        ax.annotate(Path(r["weights"]).stem, (r["compute_s"], r[names[-1]]), textcoords="offset points", xytext=(0, -14),
                    fontsize=7, ha="center")
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    xs = [r["compute_s"] for r in rows]
    ax.set_xlim(min(xs) / 1.25, max(xs) * 1.25)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(min(min(r[n] for n in names) for r in rows) - 0.15, max(max(r[n] for n in names) for r in rows) + 0.1)
    ax.set_xlabel("cumulative training compute (s of one CPU core, log scale)")
    ax.set_ylabel("validation loss\n(cross-entropy, CS + SG)")
    ax.set_title(args.title, fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
