"""Crystal-system and space-group maps of Au nanoparticles from a synthetic 4D-STEM scan.

The end-to-end workflow of a microscopist, on data simulated here:

1. render a 4D-STEM scan (64 x 64 probe positions, 128 x 128 detector) of six Au
   (fcc, a = 4.078 A, Fm-3m) nanoparticles in different zone axes -- [111] (which
   mimics a hexagonal pattern), [110], [001], [112], [310] -- on a weak amorphous
   support, with finite-size disks, a drifting direct beam and Poisson noise
   (spot positions and intensities from py4DSTEM's kinematic ``Crystal``);
2. py4DSTEM's ``find_Bragg_disks`` (parameters sized for the small detector) and
   calibration (origin fit, Q pixel size);
3. ``py4dstem_gnn.classify_braggvectors``;
4. the figure (Fig. 2 layout) as PNG, and the maps attached to the Bragg vectors
   and saved with ``py4DSTEM.save`` (readable with ``py4DSTEM.read`` alone).

Run::

    python examples/au_nanoparticles.py            # writes outputs/
    python examples/au_nanoparticles.py --help

It takes a few minutes on 2 CPU cores; the time of each stage is logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("au_nanoparticles")


class _Stage:
    """Context manager that logs and records the wall time of a stage."""

    def __init__(self, name: str, times: dict[str, float]) -> None:
        self.name, self.times = name, times

    def __enter__(self) -> "_Stage":
        logger.info("%s ...", self.name)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.times[self.name] = time.perf_counter() - self.t0
        logger.info("%s: %.1f s", self.name, self.times[self.name])


def run_example(
    output_dir: str | os.PathLike = "outputs",
    model: Any = "default",
    scan_shape: tuple[int, int] = (64, 64),
    qshape: tuple[int, int] = (128, 128),
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Simulate, detect, calibrate, classify, plot and save.

    Parameters
    ----------
    output_dir : str or path
        Folder for ``au_nanoparticles_fig2.png``, ``au_nanoparticles_space_groups.png``
        and ``au_nanoparticles_maps.h5``.
    model : str, path or PEAGGMoE
        Weights to use (``"default"``: the shipped weights; it is an error if none
        are installed).
    scan_shape, qshape : tuple of int
        Probe positions and detector pixels.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    seed : int
        Noise seed.
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        ``maps`` (RealSlice), ``braggvectors``, ``scan`` (SyntheticScan), ``times``
        (seconds per stage), ``paths`` (written files), ``summary`` (fractions).

    Raises
    ------
    FileNotFoundError
        If ``model="default"`` and no shipped weights are installed.
    """
    import py4DSTEM

    from py4dstem_gnn.inference import _load, resolve_device
    from py4dstem_gnn.labels import CRYSTAL_SYSTEMS
    from py4dstem_gnn.plot import crystal_system_figure, space_group_figure
    from py4dstem_gnn.py4dstem import classify_braggvectors
    from py4dstem_gnn.data.synthetic import au_nanoparticle_scan, detect_braggvectors

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    # fail early (before minutes of simulation) if the weights are missing
    with _Stage("load model", times):
        net = _load(model, resolve_device(device))

    with _Stage("simulate 4D-STEM scan", times):
        scan = au_nanoparticle_scan(scan_shape=scan_shape, qshape=qshape, seed=seed)
    logger.info(
        "scan %s x detector %s, %d particles: %s",
        scan_shape, qshape, len(scan.particles), ", ".join(str(list(p.zone_axis)) for p in scan.particles),
    )

    with _Stage("find Bragg disks + calibrate", times):
        bv = detect_braggvectors(scan.datacube, scan.disk_radius, scan.q_pixel_size)
    n_vec = np.array([len(bv.raw[i, j].data) for i in range(scan_shape[0]) for j in range(scan_shape[1])])
    logger.info("Bragg vectors per position: median %d, max %d", int(np.median(n_vec)), int(n_vec.max()))

    with _Stage("classify", times):
        maps = classify_braggvectors(bv, model=net, device=device, progress=progress)

    with _Stage("figures", times):
        fig = crystal_system_figure(maps, datacube=scan.datacube, title="Au nanoparticles (synthetic 4D-STEM)")
        fig_path = out / "au_nanoparticles_fig2.png"
        fig.savefig(fig_path, dpi=120)
        fig_sg = space_group_figure(maps)
        sg_path = out / "au_nanoparticles_space_groups.png"
        fig_sg.savefig(sg_path, dpi=120)

    with _Stage("save maps (py4DSTEM.save)", times):
        bv.attach(maps)
        h5_path = out / "au_nanoparticles_maps.h5"
        py4DSTEM.save(str(h5_path), bv, mode="o")

    cs = maps.get_slice("crystal_system").data.astype(int)
    sg = maps.get_slice("space_group").data.astype(int)
    valid = cs >= 0
    on_particle = scan.particle_map >= 0
    summary = {
        "valid_fraction_on_particles": float(valid[on_particle].mean()) if on_particle.any() else 0.0,
        "valid_fraction_background": float(valid[~on_particle].mean()) if (~on_particle).any() else 0.0,
        "cubic_fraction_of_valid": float((cs[valid] == 6).mean()) if valid.any() else 0.0,
        "fm3m_fraction_of_valid": float((sg[valid] == 225).mean()) if valid.any() else 0.0,
    }
    per_particle = {}
    for k, p in enumerate(scan.particles):
        sel = (scan.particle_map == k) & valid
        if sel.any():
            counts = np.bincount(cs[sel], minlength=7)
            per_particle[f"{k} {list(p.zone_axis)}"] = CRYSTAL_SYSTEMS[int(np.argmax(counts))]
    summary["majority_system_per_particle"] = per_particle
    logger.info("summary: %s", summary)
    logger.info("wrote %s, %s, %s", fig_path, sg_path, h5_path)
    logger.info("stage times (s): %s", {k: round(v, 1) for k, v in times.items()})
    return {
        "maps": maps,
        "braggvectors": bv,
        "scan": scan,
        "times": times,
        "paths": {"figure": fig_path, "space_groups": sg_path, "maps": h5_path},
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", nargs="?", default="outputs", help="output folder (default: outputs/)")
    parser.add_argument("--model", default="default", help="weights name or path (default: the shipped weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--scan", type=int, nargs=2, default=(64, 64), metavar=("RX", "RY"), help="probe positions")
    parser.add_argument("--detector", type=int, nargs=2, default=(128, 128), metavar=("QX", "QY"), help="detector pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        run_example(
            args.output_dir, model=args.model, scan_shape=tuple(args.scan), qshape=tuple(args.detector),
            device=args.device, seed=args.seed, progress=not args.no_progress,
        )
    except FileNotFoundError as err:
        logger.error("cannot load the model: %s", err)
        logger.error("install the package with its shipped weights, or pass --model PATH/TO/weights.safetensors")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
