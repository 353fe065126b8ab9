"""Kinematic spot selection against Bloch-wave patterns at identical orientations.

Training patterns are kinematic (fast, on the fly); stored evaluation patterns are Bloch-wave. A
kinematic pattern should keep the spots a Bloch-wave pattern (detection threshold 1e-4 of the
incident beam) keeps. For every pattern of the given stored Bloch-wave sets, this script makes the
kinematic pattern of the same material at the same orientation matrix under each candidate rule
and reports, against the Bloch-wave pattern:

* the median number of diffracted spots (direct beam excluded) and its ratio to the Bloch-wave median
  (target: within ±15 %), and the share of patterns at the 64-spot input cap;
* the overlap of the brightest-64 diffracted spots, ``K``, ``B`` being the brightest ``min(64, n)``
  spots of each (matched by position within ``2e-3`` 1/Å): ``|K ∩ B| / |B|``, the share of the
  Bloch-wave pattern's brightest spots that the kinematic one has (target: ≥ 85 %; the legacy rule
  scores ~70 % by it, close to the 72 % quoted for it before), and the stricter
  ``|K ∩ B| / max(|K|, |B|)``, which also counts spots the Bloch-wave pattern lacks;
* for information, the Pearson correlation of log intensities over the common spots (median over
  patterns with ≥ 5 common spots): dynamical scattering limits it whatever the rule.

A rule is (Gaussian excitation-error envelope sigma, window in sigmas, absolute threshold on the
weighted ``|F_g|^2``, optional cap on the number of spots). The legacy rule is sigma 0.02 1/Å,
window 3 sigma, threshold 1e-5.

Usage::

    python benchmarks/spot_selection.py --library data/cache/kinematic --sets data/bloch_val.h5 data/bloch_val_large.h5 \\
        [--max-patterns 2000] [--out benchmarks/results/spot_selection.md]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys

import numpy as np
from _report import command_line, write_report
from scipy.spatial import cKDTree

from py4dstem_gnn.data.dataset import PatternSet
from py4dstem_gnn.data.kinematic import KinematicLibrary, sample_kinematic

logger = logging.getLogger("spot_selection")

CAP = 64
MATCH_TOL = 2e-3


def _diffracted(pl: np.ndarray) -> np.ndarray:
    """Spots other than the one at q = 0 (the direct beam)."""
    r = np.hypot(pl[:, 0], pl[:, 1])
    return pl[r > 1e-4]


def _brightest(pl: np.ndarray, k: int = CAP) -> np.ndarray:
    return pl[np.argsort(-pl[:, 2], kind="stable")[:k]]


def compare(kin: list[np.ndarray], bloch: list[np.ndarray]) -> dict[str, float]:
    """Count, overlap and log-intensity agreement of two lists of pointlists (same order)."""
    nk, nb, ov, rc, rr = [], [], [], [], []
    for k, b in zip(kin, bloch):
        k, b = _diffracted(k), _diffracted(b)
        nk.append(len(k))
        nb.append(len(b))
        kt, bt = _brightest(k), _brightest(b)
        if len(kt) == 0 or len(bt) == 0:
            ov.append(1.0 if len(kt) == len(bt) else 0.0)
            rc.append(1.0 if len(bt) == 0 else 0.0)
            continue
        d, j = cKDTree(kt[:, :2]).query(bt[:, :2], distance_upper_bound=MATCH_TOL)
        hit = np.isfinite(d)
        ov.append(hit.sum() / max(len(kt), len(bt)))
        rc.append(hit.sum() / len(bt))
        # log-intensity correlation over all common spots (not only the brightest)
        d2, j2 = cKDTree(k[:, :2]).query(b[:, :2], distance_upper_bound=MATCH_TOL)
        h2 = np.isfinite(d2)
        if h2.sum() >= 5:
            li_b = np.log(np.maximum(b[h2, 2], 1e-12))
            li_k = np.log(np.maximum(k[j2[h2], 2], 1e-12))
            if li_b.std() > 0 and li_k.std() > 0:
                rr.append(float(np.corrcoef(li_b, li_k)[0, 1]))
    nk, nb = np.array(nk), np.array(nb)
    return {
        "median_kin": float(np.median(nk)), "median_bloch": float(np.median(nb)),
        "count_ratio": float(np.median(nk) / max(np.median(nb), 1)),
        "cap_kin": float(np.mean(nk >= CAP)), "cap_bloch": float(np.mean(nb >= CAP)),
        "overlap_median": float(np.median(ov)), "overlap_mean": float(np.mean(ov)),
        "recall_median": float(np.median(rc)), "recall_mean": float(np.mean(rc)),
        "logI_r_median": float(np.median(rr)) if rr else float("nan"), "n_patterns": len(nk),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--library", required=True)
    ap.add_argument("--sets", nargs="+", required=True, help="stored Bloch-wave sets (with orientations)")
    ap.add_argument("--max-patterns", type=int, default=2000)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.02, 0.01, 0.0075, 0.005])
    ap.add_argument("--mults", type=float, nargs="+", default=[3.0])
    ap.add_argument("--thresholds", type=float, nargs="+", default=list(np.round(np.logspace(-5, -2, 13), 7)))
    ap.add_argument("--envelopes", nargs="+", default=["gaussian"], choices=["gaussian", "lorentzian"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/spot_selection.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    sets = [PatternSet.from_hdf5(p) for p in args.sets]
    pls = [p for ps in sets for p in ps.pointlists]
    mats = np.concatenate([ps.material for ps in sets])
    rots = np.concatenate([ps.orientation for ps in sets]).astype(np.float64)
    lib = KinematicLibrary.load(args.library, materials=np.unique(mats))
    ok = np.array([lib.has(m) for m in mats]) & np.isfinite(rots).all(axis=(1, 2))
    idx = np.flatnonzero(ok)
    if len(idx) > args.max_patterns:
        idx = np.sort(np.random.default_rng(args.seed).choice(idx, args.max_patterns, replace=False))
    bloch = [pls[i] for i in idx]
    logger.info("%d patterns of %d materials (of %d stored patterns)", len(idx), len(np.unique(mats[idx])), len(mats))

    rows = []
    for env, sigma, mult in itertools.product(args.envelopes, args.sigmas, args.mults):
        # candidates at the lowest threshold, then each threshold is a cut on the same lists
        base = sample_kinematic(lib, mats[idx], rots[idx], sigma_excitation_error=sigma,
                                tol_excitation_error_mult=mult, tol_intensity=min(args.thresholds), envelope=env)
        for thr in args.thresholds:
            kin = [p[p[:, 2] > thr] for p in base]
            row = {"envelope": env, "sigma": sigma, "mult": mult, "threshold": thr,
                   **compare(kin, bloch)}
            rows.append(row)
            logger.info("%s", {k: float(f"{v:.3g}") if isinstance(v, float) else v for k, v in row.items()})

    is_legacy = [r["envelope"] == "gaussian" and r["sigma"] == 0.02 and r["mult"] == 3.0
                 and abs(r["threshold"] - 1e-5) < 1e-12 for r in rows]
    legacy = rows[is_legacy.index(True)] if any(is_legacy) else None
    matched = [r for r in rows if abs(r["count_ratio"] - 1) <= 0.15]
    best = max(matched or rows, key=lambda r: r["recall_mean"] + r["overlap_mean"])

    def fmt(r: dict) -> str:
        return (f"| {r['envelope']} | {r['sigma']:g} | {r['mult']:g} | {r['threshold']:.2g} | {r['median_kin']:.0f} | "
                f"{r['median_bloch']:.0f} | {100 * (r['count_ratio'] - 1):+.0f} % | {100 * r['cap_kin']:.0f} % | "
                f"{100 * r['cap_bloch']:.0f} % | {100 * r['overlap_median']:.0f} % | {100 * r['overlap_mean']:.1f} % | {100 * r['recall_mean']:.1f} % | "
                f"{r['logI_r_median']:.2f} |")

    head = ("| envelope | sigma (1/Å) | window (sigmas) | threshold | median spots, kin | median spots, Bloch | count diff | "
            "at cap, kin | at cap, Bloch | overlap top-64, median | mean | Bloch top-64 found, mean | log-I r |")
    sep = "|" + "---|" * 13
    lines = [
        "# Kinematic spot selection vs Bloch-wave patterns at identical orientations", "",
        f"Command: `{command_line('spot_selection.py', argv)}`  ",
        f"Patterns: {len(idx)} of {len(np.unique(mats[idx]))} materials from {', '.join(args.sets)} "
        "(Bloch-wave: 300 kV, WK-CP, 20 nm, detection threshold 1e-4 of the incident beam).", "",
        "Overlap: |K ∩ B| / max(|K|, |B|) of the brightest-64 diffracted spots of each pattern (K kinematic, "
        "B Bloch-wave); 'Bloch top-64 found': |K ∩ B| / |B|, the share of the Bloch-wave pattern's brightest 64 "
        "that are among the kinematic brightest 64; log-I r: Pearson "
        "correlation of log intensities over common spots (median over patterns with ≥ 5).", "",
        "## Before (legacy rule) and after (chosen rule)", "", head, sep,
    ]
    if legacy is not None:
        lines.append(fmt(legacy) + " ← legacy")
    lines += [fmt(best) + " ← chosen", "",
              f"Chosen: the rule with the highest sum of the two mean overlaps among those whose median count is "
              f"within ±15 % of the Bloch-wave median ({len(matched)} of {len(rows)} rules qualify). Targets: count "
              f"within ±15 %, Bloch top-64 found ≥ 85 %.", "",
              "## All rules", "", head, sep] + [fmt(r) for r in rows]
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
