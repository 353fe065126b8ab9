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
4. the figures (Fig. 2 layout, space groups, and the phase map when the maps carry the
   match stage's ``phase`` slice), each as PNG and PDF at journal page width, and the maps
   attached to the Bragg vectors and saved with ``py4DSTEM.save`` (readable with
   ``py4DSTEM.read`` alone).

Run::

    python examples/au_nanoparticles.py            # writes outputs/ (beside examples/)
    python examples/au_nanoparticles.py --help

It takes about a minute on 2 CPU cores; the time of each stage is logged, and the
class fractions of the valid positions are printed before and after the majority
filter (the filter smooths the maps, so both are worth reading).
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

#: ``outputs/`` at the top of the repository (git-ignored), wherever the script is run from.
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "outputs"
#: Probe step assumed for the synthetic scan (nm per scan position): particles of 12-20 nm diameter.
PROBE_STEP_NM = 0.5


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
    output_dir: str | os.PathLike = DEFAULT_OUTPUT,
    model: Any = "default",
    scan_shape: tuple[int, int] = (64, 64),
    qshape: tuple[int, int] = (128, 128),
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    phases: Any = "pool",
    elements: Any = ("Au",),
) -> dict[str, Any]:
    """Simulate, detect, calibrate, classify, plot and save.

    Parameters
    ----------
    output_dir : str or path
        Folder for ``au_nanoparticles_fig2.png`` / ``.pdf``, ``au_nanoparticles_space_groups.png``
        / ``.pdf``, ``au_nanoparticles_phases.png`` / ``.pdf`` (when the maps have a ``phase``
        slice) and ``au_nanoparticles_maps.h5``.
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
    elements : sequence of str or None
        The element filter of the match stage (what an EDS spectrum of the sample says: Au); ``None``
        searches the whole pool.
    phases : "pool", None or a list of structures
        What the match stage compares the patterns with (``classify_braggvectors(phases=...)``);
        ``"pool"`` falls back to the network alone (``None``) when no template bank is installed.

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

    from py4dstem_gnn.predict import _load, resolve_device
    from py4dstem_gnn.plot import crystal_system_figure, phase_map_figure, save_figure, space_group_figure
    from py4dstem_gnn.progress import quiet_py4dstem
    from py4dstem_gnn.classify import classify_braggvectors
    from py4dstem_gnn.data.synthetic import au_nanoparticle_scan, detect_braggvectors

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    # fail early (before minutes of simulation) if the weights are missing
    with _Stage("load model", times):
        net = _load(model, resolve_device(device))

    with _Stage("simulate 4D-STEM scan", times):
        scan = au_nanoparticle_scan(scan_shape=scan_shape, qshape=qshape, seed=seed)
        scan.datacube.calibration.set_R_pixel_size(PROBE_STEP_NM)  # the figures' scale bars
        scan.datacube.calibration.set_R_pixel_units("nm")
    logger.info(
        "scan %s x detector %s, %d particles: %s",
        scan_shape, qshape, len(scan.particles), ", ".join(str(list(p.zone_axis)) for p in scan.particles),
    )

    with _Stage("find Bragg disks + calibrate", times), quiet_py4dstem(not progress):
        bv = detect_braggvectors(scan.datacube, scan.disk_radius, scan.q_pixel_size)
    n_vec = np.array([len(bv.raw[i, j].data) for i in range(scan_shape[0]) for j in range(scan_shape[1])])
    logger.info("Bragg vectors per position: median %d, max %d", int(np.median(n_vec)), int(n_vec.max()))

    with _Stage("classify", times):
        try:
            maps = classify_braggvectors(bv, model=net, device=device, progress=progress, phases=phases,
                                         elements=list(elements) if (elements and phases is not None) else None)
        except FileNotFoundError as err:  # the model is loaded already: this is the template bank
            if phases != "pool":
                raise
            logger.warning("%s -- classifying with the network alone (phases=None)", err)
            maps = classify_braggvectors(bv, model=net, device=device, progress=progress, phases=None)

    paths: dict[str, Path] = {}
    with _Stage("figures", times):
        fig = crystal_system_figure(maps, datacube=scan.datacube, title="Au nanoparticles (synthetic 4D-STEM)")
        paths["figure"], paths["figure_pdf"] = save_figure(fig, out / "au_nanoparticles_fig2")
        fig_sg = space_group_figure(maps, datacube=scan.datacube, math_symbols=True)
        paths["space_groups"], paths["space_groups_pdf"] = save_figure(fig_sg, out / "au_nanoparticles_space_groups")
        if "phase" in list(maps.slicelabels):
            fig_ph = phase_map_figure(maps, datacube=scan.datacube, math_symbols=True)
            paths["phases"], paths["phases_pdf"] = save_figure(fig_ph, out / "au_nanoparticles_phases")

    with _Stage("save maps (py4DSTEM.save)", times), quiet_py4dstem(not progress):
        bv.attach(maps)
        h5_path = out / "au_nanoparticles_maps.h5"
        py4DSTEM.save(str(h5_path), bv, mode="o")
        paths["maps"] = h5_path

    summary = summarise(maps, scan.particle_map, [list(p.zone_axis) for p in scan.particles])
    logger.info("summary: %s", {k: v for k, v in summary.items() if not k.endswith("_counts")})
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    logger.info("stage times (s): %s", {k: round(v, 1) for k, v in times.items()})
    return {
        "maps": maps,
        "braggvectors": bv,
        "scan": scan,
        "times": times,
        "paths": paths,
        "summary": summary,
    }


def summarise(maps: Any, particle_map: np.ndarray, zone_axes: list[list[int]]) -> dict[str, Any]:
    """Counts of each label over the valid positions, before and after the majority filter.

    ``*_raw`` slices hold the model's labels at valid positions before the
    ``median_filter`` x ``median_filter`` majority filter; ``crystal_system`` and
    ``space_group`` after it. Both count the same valid positions.
    """
    from py4dstem_gnn.labels import CRYSTAL_SYSTEMS, hermann_mauguin

    def counts(label: str, name) -> dict[str, int]:
        values = maps.get_slice(label).data.astype(int)
        values = values[values >= 0]
        nums, n = np.unique(values, return_counts=True)
        order = np.argsort(-n, kind="stable")
        return {name(int(v)): int(c) for v, c in zip(nums[order], n[order])}

    cs = maps.get_slice("crystal_system").data.astype(int)
    sg = maps.get_slice("space_group").data.astype(int)
    valid = cs >= 0
    on_particle = particle_map >= 0
    sg_name = lambda v: f"{v} {hermann_mauguin(v)}"  # noqa: E731
    summary: dict[str, Any] = {
        "positions": int(cs.size),
        "valid": int(valid.sum()),
        "valid_fraction_on_particles": float(valid[on_particle].mean()) if on_particle.any() else 0.0,
        "valid_fraction_background": float(valid[~on_particle].mean()) if (~on_particle).any() else 0.0,
        "crystal_system_raw_counts": counts("crystal_system_raw", lambda v: CRYSTAL_SYSTEMS[v]),
        "crystal_system_filtered_counts": counts("crystal_system", lambda v: CRYSTAL_SYSTEMS[v]),
        "space_group_raw_counts": counts("space_group_raw", sg_name),
        "space_group_filtered_counts": counts("space_group", sg_name),
    }
    per_particle = {}
    for k, axis in enumerate(zone_axes):
        sel = (particle_map == k) & valid
        if sel.any():
            cs_major = int(np.argmax(np.bincount(cs[sel], minlength=7)))
            nums, n = np.unique(sg[sel], return_counts=True)
            per_particle[f"{k} {axis}"] = f"{CRYSTAL_SYSTEMS[cs_major]}, {sg_name(int(nums[np.argmax(n)]))}"
    summary["majority_per_particle"] = per_particle
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The class fractions of valid positions, raw and filtered, as a text table."""
    n = max(summary["valid"], 1)
    lines = [f"valid positions: {summary['valid']:,} of {summary['positions']:,}", ""]
    for what in ("crystal_system", "space_group"):
        raw, filt = summary[f"{what}_raw_counts"], summary[f"{what}_filtered_counts"]
        lines.append(f"{what.replace('_', ' '):<18} {'raw (before the majority filter)':>34} {'after the filter':>20}")
        for key in list(dict.fromkeys([*raw, *filt])):
            r, f = raw.get(key, 0), filt.get(key, 0)
            lines.append(f"{key:<18} {r:>24,} ({100 * r / n:5.1f} %) {f:>10,} ({100 * f / n:5.1f} %)")
        lines.append("")
    lines.append("majority label per particle (after the filter):")
    lines += [f"  particle {k}: {v}" for k, v in summary["majority_per_particle"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "output_dir", nargs="?", default=str(DEFAULT_OUTPUT), help=f"output folder (default: {DEFAULT_OUTPUT})"
    )
    parser.add_argument("--model", default="default", help="weights name or path (default: the shipped weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--scan", type=int, nargs=2, default=(64, 64), metavar=("RX", "RY"), help="probe positions")
    parser.add_argument("--detector", type=int, nargs=2, default=(128, 128), metavar=("QX", "QY"), help="detector pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Poisson noise of the synthetic scan")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--phases", choices=("pool", "none"), default="pool",
        help="match against the shipped bank of known structures (pool, the default) or not (none: the network alone)",
    )
    parser.add_argument(
        "--elements", nargs="*", default=["Au"],
        help="element filter of the match stage (default: Au, what EDS of the particles says); give none "
             "(--elements with no names) to search the whole pool",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        result = run_example(
            args.output_dir, model=args.model, scan_shape=tuple(args.scan), qshape=tuple(args.detector),
            device=args.device, seed=args.seed, progress=not args.no_progress,
            phases=None if args.phases == "none" else "pool", elements=args.elements or None,
        )
    except FileNotFoundError as err:
        logger.error("cannot load the model: %s", err)
        logger.error("install the package with its shipped weights, or pass --model PATH/TO/weights.safetensors")
        return 1
    print(format_summary(result["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
