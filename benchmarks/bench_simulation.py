"""Benchmark of the simulation pipeline (issue 7): kinematic and Bloch-wave patterns per second.

Side by side, on one core (one BLAS thread):

* kinematic: this package's vectorised sampler (``sample_kinematic``) vs a per-pattern
  loop over py4DSTEM's ``Crystal.generate_diffraction_pattern``; the one-off
  structure-factor set-up per material; the augmentations;
* Bloch wave: this package's per-material pipeline (beam budget checked first,
  ``g_vec_precision=3`` form-factor cache) vs a plain loop over the py4DSTEM recipe
  calls (unrounded form factors);
* where the time goes (cProfile, top functions).

Usage::

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench_simulation.py \\
        [--kin-materials 200] [--bloch-materials 6] [--bloch-orientations 3] \\
        [--out benchmarks/results/simulation.md]

Materials are a seeded random sample of the manifest's test split (needs the
OQMD-ICSD database); without it the three hand-built test crystals are used.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import logging
import os
import platform
import pstats
import sys
import time
from pathlib import Path

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

from py4dstem_gnn.data import bloch as B  # noqa: E402
from py4dstem_gnn.data import kinematic as S  # noqa: E402
from py4dstem_gnn.data.augment import augment_pointlists  # noqa: E402

logger = logging.getLogger("bench_simulation")


def _cells(n: int, seed: int):
    from py4dstem_gnn.data import structures as T

    if T.default_db_path().exists():
        m = T.load_manifest()
        mats = np.random.default_rng(seed).choice(m.indices("test"), n, replace=False)
        db = T._connect(None)
        return [(int(k), T.cell_for_row(m, k, db=db)) for k in mats], "OQMD-ICSD test split"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _crystals import CELLS

    return [(k, CELLS[k % 3][0]) for k in range(n)], "hand-built test crystals"


def _profile(fn, top: int = 8) -> str:
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    s = io.StringIO()
    st = pstats.Stats(pr, stream=s).sort_stats("tottime")
    total = st.total_tt
    rows = []
    for (file, line, name), (cc, nc, tt, ct, callers) in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]:
        rows.append(f"| `{Path(file).name}:{name}` | {tt:.2f} | {100 * tt / total:.0f} % |")
    return "| function | own time (s) | share |\n|---|---|---|\n" + "\n".join(rows)


def bench_kinematic(cells, n_patterns: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    crystals, entries = [], []
    for _, c in cells:
        x = c.to_crystal()
        entries.append(S.kinematic_entry(x))
        crystals.append(x)
    t_setup = (time.perf_counter() - t) / len(cells)
    lib = S.KinematicLibrary.from_entries([k for k, _ in cells], entries, {"k_max": S.K_MAX})
    mats = rng.choice(lib.material, n_patterns)
    R = S.random_rotations(n_patterns, rng)
    S.sample_kinematic(lib, mats[:50], R[:50])  # warm-up
    t = time.perf_counter()
    pls = S.sample_kinematic(lib, mats, R)
    t_sampler = time.perf_counter() - t
    t = time.perf_counter()
    augment_pointlists(pls, rng)
    t_aug = time.perf_counter() - t
    # plain py4DSTEM loop (structure factors already computed: only the per-pattern cost)
    row = {int(k): i for i, (k, _) in enumerate(cells)}
    n_ref = min(n_patterns, 500)
    with contextlib.redirect_stdout(io.StringIO()):
        for x in crystals:
            x.setup_diffraction(S.VOLTAGE)
        t = time.perf_counter()
        for k, r in zip(mats[:n_ref], R[:n_ref]):
            S.kinematic_pattern_py4dstem(crystals[row[int(k)]], r)
        t_ref = (time.perf_counter() - t) / n_ref
    prof = _profile(lambda: S.sample_kinematic(lib, mats, R))
    return dict(setup_s=t_setup, sampler_pps=n_patterns / t_sampler, augment_pps=n_patterns / t_aug,
                py4dstem_pps=1 / t_ref, spots=float(np.mean([len(p) for p in pls])), profile=prof,
                n_g=float(np.mean(np.diff(lib.offsets))))


def bench_bloch(cells, n_orient: int, seed: int) -> dict:
    fast = B.BlochParams(max_beams=10**6)
    t = time.perf_counter()
    n_pat = 0
    beams = []
    for k, c in cells:
        out = B.bloch_patterns_for_material(c.to_crystal(), k, n_orient, seed, fast)
        n_pat += len(out[0])
        beams += list(out[2])
    t_pipe = time.perf_counter() - t
    # plain loop over py4DSTEM's recipe calls
    t = time.perf_counter()
    t_prep = 0.0
    for k, c in cells:
        x = c.to_crystal()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            x.calculate_dynamical_structure_factors(S.VOLTAGE, "WK-CP", k_max=2 * S.K_MAX, thermal_sigma=S.THERMAL_SIGMA)
        t_prep += time.perf_counter() - t0
        for r in S.random_rotations(n_orient, S.material_rng(seed, k, "bloch")):
            b = x.generate_diffraction_pattern(orientation_matrix=r, sigma_excitation_error=0.02, k_max=S.K_MAX)
            x.generate_dynamical_diffraction_pattern(b, thickness=S.THICKNESS, zone_axis_cartesian=r[:, 2])
    t_plain = time.perf_counter() - t
    k0, c0 = cells[0]
    prof = _profile(lambda: [B.bloch_patterns_for_material(c.to_crystal(), k, n_orient, seed, fast)
                             for k, c in cells[:3]])
    return dict(pipeline_pps=n_pat / t_pipe, plain_pps=n_pat / t_plain, plain_prep_share=t_prep / t_plain,
                n_patterns=n_pat, beams_mean=float(np.mean(beams)), beams_max=int(np.max(beams)), profile=prof,
                per_material_pipeline=t_pipe / len(cells), per_material_plain=t_plain / len(cells))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kin-materials", type=int, default=200)
    ap.add_argument("--kin-patterns", type=int, default=4000)
    ap.add_argument("--bloch-materials", type=int, default=6)
    ap.add_argument("--bloch-orientations", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "simulation.md"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cells_k, source = _cells(args.kin_materials, args.seed)
    k = bench_kinematic(cells_k, args.kin_patterns, args.seed)
    logger.info("kinematic: %s", {a: b for a, b in k.items() if a != "profile"})
    cells_b, _ = _cells(args.bloch_materials, args.seed + 1)
    b = bench_bloch(cells_b, args.bloch_orientations, args.seed)
    logger.info("bloch: %s", {a: v for a, v in b.items() if a != "profile"})
    load = os.getloadavg()
    cmd = "OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench_simulation.py " + " ".join(argv or sys.argv[1:])
    text = f"""# Simulation benchmark

Command: `{cmd.strip()}`
Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, one BLAS thread, Python {platform.python_version()};
load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (the machine was shared with a training run,
so the figures are pessimistic). Materials: {source} (seeded sample).

## Kinematic ({args.kin_materials} materials, {args.kin_patterns} patterns, uniform SO(3) orientations)

| step | figure |
|---|---|
| structure-factor set-up (py4DSTEM `calculate_structure_factors`, k_max 2 1/A), per material | {k['setup_s'] * 1e3:.1f} ms |
| reflections stored per material (Friedel half, above threshold) | {k['n_g']:.0f} |
| **this package, `sample_kinematic`** | **{k['sampler_pps']:,.0f} patterns/s** |
| plain per-pattern loop, py4DSTEM `generate_diffraction_pattern` | {k['py4dstem_pps']:,.0f} patterns/s |
| speed-up | {k['sampler_pps'] / k['py4dstem_pps']:.1f} x |
| `augment_pointlists` (all augmentations) | {k['augment_pps']:,.0f} patterns/s |
| spots per pattern (mean, direct beam included) | {k['spots']:.0f} |

Where the time goes in `sample_kinematic` (cProfile):

{k['profile']}

## Bloch wave ({args.bloch_materials} materials x {args.bloch_orientations} orientations, 300 kV, WK-CP, 20 nm)

| path | figure |
|---|---|
| **this package** (`bloch_patterns_for_material`: beam budget first, `g_vec_precision=3`) | **{b['pipeline_pps']:.2f} patterns/s** ({b['per_material_pipeline']:.1f} s per material) |
| plain loop over py4DSTEM recipe calls (unrounded form factors) | {b['plain_pps']:.2f} patterns/s ({b['per_material_plain']:.1f} s per material) |
| share of the plain loop spent in `calculate_dynamical_structure_factors` | {100 * b['plain_prep_share']:.0f} % |
| beams per pattern | mean {b['beams_mean']:.0f}, max {b['beams_max']} |

With {args.bloch_orientations} orientations per material the per-material set-up dominates; with 10 per
material (the stored test set) it is amortised over more patterns. Shards run in parallel over
materials (`--workers N`, one BLAS thread each, or `--dask-address` on a cluster).

Where the time goes in the pipeline (cProfile, 3 materials):

{b['profile']}
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
