"""Export of the maps to other tools of the field.

:func:`to_crystal_map` turns the RealSlice of :func:`py4dstem_gnn.classify_braggvectors`
into an orix :class:`~orix.crystal_map.CrystalMap`, so that users of the pyxem / orix
family can plot the phase map, save it (``orix.io.save``: HDF5 or ``.ang``) and combine it
with their orientation maps.

orix is an optional dependency: ``pip install "py4dstem-gnn[orix]"`` (orix 0.13.x,
which works with the ``numpy<2`` that py4DSTEM 0.14 needs).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .labels import INVALID, hermann_mauguin

__all__ = ["to_crystal_map", "orientation_matrices", "ORIX_REQUIREMENT"]

logger = logging.getLogger(__name__)

#: The orix releases this module is tested with (the ``[orix]`` extra).
ORIX_REQUIREMENT: str = "orix>=0.13.3,<0.14"

#: Slices copied into the CrystalMap's properties when the maps have them.
_PROPERTIES: tuple[str, ...] = ("confidence", "crystal_system", "space_group", "n_spots", "cs_set", "cs_set_size",
                                 "sg_set_size", "match_score", "q_scale")

#: py4DSTEM real-space units -> (orix scan unit, factor applied to the step).
_UNITS: dict[str, tuple[str, float]] = {
    "a": ("nm", 0.1),
    "å": ("nm", 0.1),
    "angstrom": ("nm", 0.1),
    "nm": ("nm", 1.0),
    "um": ("um", 1.0),
    "µm": ("um", 1.0),
    "pixels": ("px", 1.0),
    "pixel": ("px", 1.0),
    "px": ("px", 1.0),
}


def _import_orix() -> Any:
    try:
        import orix.crystal_map as crystal_map
        from orix.quaternion import Rotation
    except ImportError as err:
        raise ImportError(
            "to_crystal_map needs orix, an optional dependency: pip install \"py4dstem-gnn[orix]\" "
            f"(installs {ORIX_REQUIREMENT}, compatible with numpy<2)"
        ) from err
    return crystal_map, Rotation


def _slices(maps: Any) -> dict[str, np.ndarray]:
    """Slices by label from a RealSlice or a mapping of arrays."""
    if hasattr(maps, "slicelabels") and hasattr(maps, "get_slice"):
        return {str(label): np.asarray(maps.get_slice(label).data) for label in maps.slicelabels}
    if isinstance(maps, dict):
        return {str(k): np.asarray(v) for k, v in maps.items()}
    raise TypeError(
        f"to_crystal_map needs the RealSlice returned by classify_braggvectors (or a dict of arrays); "
        f"got {type(maps).__name__}"
    )


def _scan_step(maps: Any, step: float | None, unit: str | None) -> tuple[float, str]:
    """Step and orix unit: as given, else from the maps' R pixel calibration, else 1 px."""
    if step is not None:
        if not np.isfinite(step) or step <= 0:
            raise ValueError(f"step must be a positive number; got {step!r}")
        return float(step), unit or "px"
    cal = getattr(maps, "calibration", None)
    try:
        size = cal.get_R_pixel_size() if cal is not None else None
        units = cal.get_R_pixel_units() if cal is not None else None
    except Exception:  # noqa: BLE001 - no usable calibration: pixels
        size, units = None, None
    if size is None or not np.isfinite(float(size)) or float(size) <= 0:
        return 1.0, "px"
    orix_unit, factor = _UNITS.get(str(units).strip().lower(), (str(units), 1.0))
    return float(size) * factor, orix_unit


def _phase_lattices(maps: Any) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """Phase table and per-phase (lat_inv, conv_map) stored by classify_braggvectors (empty if none)."""
    try:
        md = maps.metadata["py4dstem_gnn"]
        table = [{"formula": str(f), "space_group": int(sg)} for f, sg in zip(md["phase_formula"], md["phase_space_group"])]
        lat = np.asarray(md["phase_lat_inv"], dtype=np.float64).reshape(-1, 3, 3)
        conv = np.asarray(md["phase_conv_map"], dtype=np.float64).reshape(-1, 3, 3)
    except (AttributeError, KeyError, TypeError, ValueError):
        return [], np.zeros((0, 3, 3)), np.zeros((0, 3, 3))
    return table, lat, conv


def orientation_matrices(maps: Any) -> np.ndarray:
    """Orientation of the identified phase at every position, from the phase, zone axis and in-plane angle.

    Parameters
    ----------
    maps : py4DSTEM.RealSlice
        Output of :func:`py4dstem_gnn.classify_braggvectors` with the match stage (slices ``phase``,
        ``zone_axis_u/v/w``, ``in_plane_angle``; the phases' lattices in the metadata).

    Returns
    -------
    numpy.ndarray
        ``(Rx, Ry, 3, 3)`` py4DSTEM orientation matrices (``g_lab = g_crystal @ R`` in the Cartesian
        frame of the phase's cell, as py4DSTEM's ``Crystal.generate_diffraction_pattern`` takes
        them), NaN where no phase was identified. The zone axis is exact: the mis-tilt of a pattern
        is below what a template match resolves.
    """
    from .data.orientations import rotation_with_beam_along

    slices = _slices(maps)
    if "phase" not in slices:
        raise KeyError("the maps have no 'phase' slice: classify with the match stage (phases='pool' or a list)")
    table, lat, conv = _phase_lattices(maps)
    phase = slices["phase"].astype(np.int64)
    out = np.full(phase.shape + (3, 3), np.nan)
    sel = (phase >= 0) & (phase < len(lat)) & np.isfinite(slices["in_plane_angle"])
    if not sel.any():
        return out
    uvw = np.stack([slices[f"zone_axis_{c}"][sel] for c in "uvw"], axis=1).astype(np.float64)
    ph = phase[sel]
    lat_real = np.linalg.inv(lat[ph]).transpose(0, 2, 1)
    d = np.einsum("ni,nij,njk->nk", uvw, conv[ph], lat_real)
    out[sel] = rotation_with_beam_along(d, np.radians(slices["in_plane_angle"][sel].astype(np.float64)))
    return out


def to_crystal_map(maps: Any, step: float | None = None, unit: str | None = None):
    """The maps as an orix ``CrystalMap``: one phase per identified material (or per space group).

    With the match stage (maps holding a ``phase`` slice), each identified material is one orix
    phase (name = formula, its space group) and the rotations are real: the orientation of the
    matched zone-axis template (:func:`orientation_matrices`, converted as py4DSTEM's own ACOM
    export does: crystal-to-lab Bunge angles of ``R.T``); positions without an identified phase are
    not indexed. Without it (``phases=None``), the description below applies.

    Parameters
    ----------
    maps : py4DSTEM.RealSlice or dict
        Output of :func:`py4dstem_gnn.classify_braggvectors` (or read back with
        ``py4DSTEM.read``), or a dict of ``(Rx, Ry)`` arrays holding at least
        ``"space_group"``.
    step : float, optional
        Scan step (the same along both axes). Default: the RealSlice's R pixel size
        (``maps.calibration.get_R_pixel_size()``; Angstrom converted to nm), or 1 px
        when it has none.
    unit : str, optional
        orix scan unit of ``step`` (``"nm"``, ``"um"``, ``"px"``); only with ``step``.

    Returns
    -------
    orix.crystal_map.CrystalMap
        Shape ``(Rx, Ry)``: rows are ``rx`` (orix ``y``), columns ``ry`` (orix ``x``).

        * **Phases**: one per space group present in ``space_group`` (after the
          majority filter), phase id = space-group number, name = its short
          Hermann-Mauguin symbol (``"Fm-3m"``), ``space_group`` set (point groups
          follow); orix picks the colours.
        * **Not indexed**: positions whose label is ``-1`` (invalid) have phase id
          ``-1``, orix's "not_indexed".
        * **Rotations**: identity at every position. They are *placeholders*: the
          model predicts crystal system and space group, not orientation. Do not
          read orientations, misorientations or IPF colours from this map; combine
          it with an orientation map from template matching or ACOM instead.
        * **Properties** (``xmap.prop``), when the maps hold these slices:
          ``confidence``, ``crystal_system`` (0..6, -1), ``n_spots``, and the
          conformal-set slices ``cs_set`` (7-bit mask), ``cs_set_size``,
          ``sg_set_size`` (-1 where not available).

    Raises
    ------
    ImportError
        If orix is not installed (install the ``[orix]`` extra).
    TypeError
        If ``maps`` is neither a RealSlice nor a dict of arrays.
    KeyError
        If the maps have no ``space_group`` slice.
    ValueError
        If ``space_group`` holds values other than 1..230 and -1, or ``step`` is
        not a positive number.

    Examples
    --------
    >>> maps = py4dstem_gnn.classify_braggvectors(bv)          # doctest: +SKIP
    >>> xmap = py4dstem_gnn.interop.to_crystal_map(maps)       # doctest: +SKIP
    >>> xmap.plot()                                            # doctest: +SKIP
    """
    crystal_map, Rotation = _import_orix()
    slices = _slices(maps)
    if "space_group" not in slices:
        raise KeyError("the maps have no 'space_group' slice (expected the output of classify_braggvectors)")
    sg = slices["space_group"]
    if sg.ndim != 2:
        raise ValueError(f"space_group must be a 2D (Rx, Ry) map; got shape {sg.shape}")
    if not np.all(np.isfinite(sg)) or not np.all(np.equal(np.mod(sg, 1), 0)):
        raise ValueError("space_group must hold integer codes (1..230, -1 invalid)")
    sg = sg.astype(np.int64)
    bad = (sg != INVALID) & ((sg < 1) | (sg > 230))
    if bad.any():
        raise ValueError(f"space_group holds codes outside 1..230 and -1: {np.unique(sg[bad])[:5].tolist()}")

    shape = sg.shape
    n = sg.size
    if "phase" in slices:
        return _phase_crystal_map(maps, slices, shape, crystal_map, Rotation, step, unit)
    present = sorted(int(s) for s in np.unique(sg) if s != INVALID)
    if present:
        phase_list = crystal_map.PhaseList(
            names=[hermann_mauguin(s) for s in present], space_groups=present, ids=present
        )
    else:
        phase_list = crystal_map.PhaseList()
    step_size, scan_unit = _scan_step(maps, step, unit)
    coords, _ = crystal_map.create_coordinate_arrays(shape=shape, step_sizes=(step_size, step_size))
    prop = {}
    for label in _PROPERTIES:
        if label in slices and slices[label].shape == shape:
            prop[label] = slices[label].reshape(n).astype(np.float64)
    xmap = crystal_map.CrystalMap(
        rotations=Rotation.identity(n),
        phase_id=sg.reshape(n),
        x=coords["x"],
        y=coords["y"],
        phase_list=phase_list,
        prop=prop,
        scan_unit=scan_unit,
    )
    logger.info(
        "CrystalMap %s: %d phases (%s), %d of %d positions not indexed; rotations are identity placeholders",
        shape, len(present), ", ".join(hermann_mauguin(s) for s in present[:8]), int((sg == INVALID).sum()), n,
    )
    return xmap


def _phase_crystal_map(maps: Any, slices: dict, shape: tuple, crystal_map: Any, Rotation: Any, step, unit):
    """CrystalMap of the identified phases with their orientations."""
    from scipy.spatial.transform import Rotation as SciRotation

    table, _, _ = _phase_lattices(maps)
    phase = slices["phase"].astype(np.int64).reshape(-1)
    n = phase.size
    R = orientation_matrices(maps).reshape(n, 3, 3)
    ok = np.all(np.isfinite(R.reshape(n, 9)), axis=1) & (phase >= 0)
    euler = np.zeros((n, 3))
    if ok.any():
        euler[ok] = SciRotation.from_matrix(np.transpose(R[ok], (0, 2, 1))).as_euler("zxz")
    rotations = Rotation.from_euler(euler, direction="crystal2lab")
    present = sorted(int(p) for p in np.unique(phase[ok]))
    names = [f"{table[p]['formula']} ({hermann_mauguin(table[p]['space_group'])})" for p in present]
    phase_list = (crystal_map.PhaseList(names=names, space_groups=[table[p]["space_group"] for p in present], ids=present)
                  if present else crystal_map.PhaseList())
    step_size, scan_unit = _scan_step(maps, step, unit)
    coords, _ = crystal_map.create_coordinate_arrays(shape=shape, step_sizes=(step_size, step_size))
    prop = {label: slices[label].reshape(n).astype(np.float64) for label in _PROPERTIES
            if label in slices and slices[label].shape == shape}
    xmap = crystal_map.CrystalMap(rotations=rotations, phase_id=np.where(ok, phase, -1), x=coords["x"], y=coords["y"],
                                  phase_list=phase_list, prop=prop, scan_unit=scan_unit)
    logger.info("CrystalMap %s: %d phases with orientations (%s), %d of %d positions not indexed", shape, len(present),
                ", ".join(names[:8]), int((~ok).sum()), n)
    return xmap
