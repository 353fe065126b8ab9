"""Figures of crystal-system and space-group maps (the layout of Fig. 2 of the paper).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so
it works with any backend (Agg in scripts and tests) and shows inline in Jupyter
when it is the last expression of a cell (or with ``display(fig)``); save it with
``fig.savefig(path)``.

The ``maps`` argument is the RealSlice returned by
:func:`py4dstem_gnn.classify_braggvectors` (or one read back with ``py4DSTEM.read``).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .labels import CRYSTAL_SYSTEMS, INVALID

__all__ = [
    "CRYSTAL_SYSTEM_COLORS",
    "INVALID_COLOR",
    "crystal_system_figure",
    "space_group_figure",
    "virtual_image",
    "space_group_symbol",
]

logger = logging.getLogger(__name__)

#: Fixed colour of every crystal system (same order as the codes 0..6).
CRYSTAL_SYSTEM_COLORS: tuple[str, ...] = (
    "#8c564b",  # triclinic: brown
    "#e377c2",  # monoclinic: pink
    "#2ca02c",  # orthorhombic: green
    "#ff7f0e",  # tetragonal: orange
    "#9467bd",  # trigonal: purple
    "#1f77b4",  # hexagonal: blue
    "#d62728",  # cubic: red
)
#: Colour of invalid (filtered) positions.
INVALID_COLOR: str = "black"

_SG_PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf",
    "#e377c2", "#bcbd22", "#8c564b", "#aec7e8",
)
_OTHER_COLOR = "#7f7f7f"


def _slice(maps: Any, label: str) -> np.ndarray:
    """A slice of the maps by label (RealSlice, or a mapping of arrays)."""
    if hasattr(maps, "get_slice") and label in list(getattr(maps, "slicelabels", []) or []):
        return np.asarray(maps.get_slice(label).data)
    if isinstance(maps, dict) and label in maps:
        return np.asarray(maps[label])
    raise KeyError(f"the maps have no slice {label!r}")


@lru_cache(maxsize=None)
def _symbols() -> dict[int, str]:
    try:
        import spglib
    except ImportError:  # optional dependency
        return {}
    out: dict[int, str] = {}
    for hall in range(1, 531):
        t = spglib.get_spacegroup_type(hall)
        if t is not None:
            num = int(t.number if hasattr(t, "number") else t["number"])
            sym = t.international_short if hasattr(t, "international_short") else t["international_short"]
            out.setdefault(num, str(sym))
    return out


def space_group_symbol(number: int) -> str:
    """Short Hermann-Mauguin symbol of a space group (``"225 Fm-3m"``), or ``"225"``.

    Symbols come from spglib when it is installed.
    """
    sym = _symbols().get(int(number))
    return f"{int(number)} {sym}" if sym else str(int(number))


def virtual_image(
    datacube: Any, inner: float | None = None, outer: float | None = None
) -> np.ndarray:
    """Annular dark-field virtual image of a DataCube (pure numpy, chunked).

    Parameters
    ----------
    datacube : py4DSTEM.DataCube or numpy.ndarray
        Shape ``(Rx, Ry, Qx, Qy)``.
    inner, outer : float, optional
        Annulus radii in detector pixels around the (mean) origin; defaults: 1/16
        and 1/2 of the detector size (excludes the direct beam of typical
        convergence angles).

    Returns
    -------
    numpy.ndarray, shape (Rx, Ry)
    """
    data = datacube if isinstance(datacube, np.ndarray) else datacube.data
    qx_n, qy_n = data.shape[-2:]
    origin = None
    cal = getattr(datacube, "calibration", None)
    if cal is not None:
        try:
            o = cal.get_origin_mean() if cal.get_origin() is not None else None
            if o is not None and o[0] is not None:
                origin = (float(o[0]), float(o[1]))
        except Exception:  # noqa: BLE001 - calibration optional
            origin = None
    if origin is None:
        origin = (qx_n / 2.0, qy_n / 2.0)
    inner = min(qx_n, qy_n) / 16.0 if inner is None else inner
    outer = min(qx_n, qy_n) / 2.0 if outer is None else outer
    xx, yy = np.mgrid[0:qx_n, 0:qy_n]
    r = np.hypot(xx - origin[0], yy - origin[1])
    mask = ((r >= inner) & (r < outer)).astype(np.float32)
    img = np.empty(data.shape[:2], np.float64)
    for i in range(data.shape[0]):
        img[i] = np.tensordot(np.asarray(data[i], np.float32), mask, axes=([1, 2], [0, 1]))
    return img


def _show_image(ax, img: np.ndarray, title: str, cmap: str = "gray") -> None:
    lo, hi = np.percentile(img, [1, 99.5]) if img.size else (0, 1)
    ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def _cs_rgb(cs: np.ndarray) -> ListedColormap:
    return ListedColormap([INVALID_COLOR, *CRYSTAL_SYSTEM_COLORS])


def crystal_system_figure(
    maps: Any,
    datacube: Any = None,
    image: np.ndarray | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (13.0, 4.2),
) -> Figure:
    """Fig. 2 layout: virtual image, crystal-system map, distribution of systems.

    Parameters
    ----------
    maps : py4DSTEM.RealSlice
        Output of :func:`py4dstem_gnn.classify_braggvectors`.
    datacube : py4DSTEM.DataCube, optional
        If given, the first panel is its annular dark-field virtual image.
    image : numpy.ndarray, optional
        A ready image for the first panel (takes precedence over ``datacube``).
        Without either, the per-position sum of Bragg-vector intensities is shown.
    title : str, optional
        Figure title.
    figsize : tuple of float

    Returns
    -------
    matplotlib.figure.Figure
        Panels: image; crystal-system map (fixed colours, invalid black, legend);
        bar chart of the fraction of each system over valid positions.
    """
    cs = _slice(maps, "crystal_system").astype(int)
    if image is not None:
        img, img_title = np.asarray(image, float), "image"
    elif datacube is not None:
        img, img_title = virtual_image(datacube), "virtual dark field"
    else:
        img, img_title = _slice(maps, "intensity").astype(float), "Bragg intensity sum"

    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.1]})
    _show_image(axes[0], img, img_title)

    cmap = _cs_rgb(cs)
    axes[1].imshow(np.clip(cs, INVALID, 6) + 1, cmap=cmap, vmin=0, vmax=7, interpolation="nearest")
    axes[1].set_title("crystal system")
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    valid = cs >= 0
    present = [k for k in range(len(CRYSTAL_SYSTEMS)) if np.any(cs == k)]
    handles = [Patch(color=CRYSTAL_SYSTEM_COLORS[k], label=CRYSTAL_SYSTEMS[k]) for k in present]
    handles.append(Patch(facecolor=INVALID_COLOR, edgecolor="grey", label="invalid"))
    axes[1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)

    n_valid = int(valid.sum())
    frac = np.bincount(cs[valid], minlength=len(CRYSTAL_SYSTEMS)) / max(n_valid, 1)
    ax = axes[2]
    ax.bar(range(len(CRYSTAL_SYSTEMS)), 100 * frac, color=CRYSTAL_SYSTEM_COLORS)
    ax.set_xticks(range(len(CRYSTAL_SYSTEMS)))
    ax.set_xticklabels(CRYSTAL_SYSTEMS, rotation=45, ha="right")
    ax.set_ylabel("valid positions (%)")
    ax.set_ylim(0, 112)
    ax.set_title(f"distribution ({n_valid} of {cs.size} positions valid)")
    for k, f in enumerate(frac):
        if f > 0:
            ax.text(k, 100 * f + 1, f"{100 * f:.1f}", ha="center", va="bottom", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def space_group_figure(
    maps: Any,
    n_named: int = 8,
    title: str | None = None,
    figsize: tuple[float, float] = (10.0, 4.2),
) -> Figure:
    """Space-group map with the most frequent groups named, and their frequencies.

    Parameters
    ----------
    maps : py4DSTEM.RealSlice
        Output of :func:`py4dstem_gnn.classify_braggvectors`.
    n_named : int
        Number of most frequent space groups given their own colour and name (at
        most 10); the others are grey ("other"), invalid positions black.
    title : str, optional
    figsize : tuple of float

    Returns
    -------
    matplotlib.figure.Figure
    """
    sg = _slice(maps, "space_group").astype(int)
    valid = sg > 0
    n_named = int(min(max(n_named, 1), len(_SG_PALETTE)))
    nums, counts = np.unique(sg[valid], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    top = nums[order][:n_named]
    index = np.zeros(sg.shape, int)  # 0 invalid, 1 other, 2.. named
    index[valid] = 1
    for i, s in enumerate(top):
        index[sg == s] = i + 2
    colours = [INVALID_COLOR, _OTHER_COLOR, *_SG_PALETTE[: len(top)]]

    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1]})
    axes[0].imshow(index, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(colours) - 0.5, interpolation="nearest")
    axes[0].set_title("space group")
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    labels = [space_group_symbol(s) for s in top]
    handles = [Patch(color=c, label=lab) for c, lab in zip(_SG_PALETTE, labels)]
    if np.any(index == 1):
        handles.append(Patch(color=_OTHER_COLOR, label="other"))
    handles.append(Patch(facecolor=INVALID_COLOR, edgecolor="grey", label="invalid"))
    axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)

    n_valid = int(valid.sum())
    ax = axes[1]
    frac = counts[order][: len(top)] / max(n_valid, 1)
    ax.barh(range(len(top)), 100 * frac, color=_SG_PALETTE[: len(top)])
    ax.set_yticks(range(len(top)))
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xlabel("valid positions (%)")
    ax.set_xlim(0, 100)
    ax.set_title("most frequent space groups")
    if title:
        fig.suptitle(title)
    return fig
