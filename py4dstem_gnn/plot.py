"""Figures of crystal-system and space-group maps (the layout of Fig. 2 of the paper).

Every function returns a :class:`MapFigure`, a :class:`matplotlib.figure.Figure`
built without pyplot: it works with any backend (Agg in scripts and tests, nothing
is drawn on screen behind your back), shows inline in Jupyter when it is the last
expression of a cell or is passed to ``display(fig)`` (it renders itself as PNG),
and saves with ``fig.savefig(path)``.

Colours: one scheme per quantity, the same in every figure, safe for colour-blind
readers. Crystal systems take the seven colours of the Okabe-Ito palette
(:data:`CRYSTAL_SYSTEM_COLOURS`); a space group takes the hue of its crystal system,
lighter for the second and darker for the third most frequent group of that
system (:func:`space_group_colours`), so a hue means one crystal system in every
figure. Invalid positions are mid grey (:data:`INVALID_COLOUR`); space groups beyond
the named ones are dark grey (:data:`OTHER_COLOUR`). Under simulated protanopia,
deuteranopia and tritanopia (Machado et al. 2009) the colours of one figure stay at
least 10 CIELAB units apart (``tests/test_plot.py``), except space groups of
*different* systems, which the legend names.

The ``maps`` argument is the RealSlice returned by
:func:`py4dstem_gnn.classify_braggvectors` (or one read back with ``py4DSTEM.read``),
or a mapping of slice names to arrays.
"""

from __future__ import annotations

import io
import logging
from typing import Any, Sequence

import numpy as np
from matplotlib.colors import ListedColormap, to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .labels import CRYSTAL_SYSTEMS, INVALID, SG_TO_CS, hermann_mauguin

__all__ = [
    "CRYSTAL_SYSTEM_COLOURS",
    "CRYSTAL_SYSTEM_COLORS",
    "INVALID_COLOUR",
    "INVALID_COLOR",
    "OTHER_COLOUR",
    "SPACE_GROUP_SHADES",
    "MapFigure",
    "map_figure",
    "crystal_system_cmap",
    "space_group_colours",
    "crystal_system_figure",
    "space_group_figure",
    "prediction_set_figure",
    "SET_COLOURS",
    "virtual_image",
    "space_group_symbol",
]

logger = logging.getLogger(__name__)

#: Colour of every crystal system, codes 0..6 (Okabe-Ito palette, colour-blind safe).
CRYSTAL_SYSTEM_COLOURS: tuple[str, ...] = (
    "#CC79A7",  # triclinic: reddish purple
    "#E69F00",  # monoclinic: orange
    "#009E73",  # orthorhombic: bluish green
    "#F0E442",  # tetragonal: yellow
    "#56B4E9",  # trigonal: sky blue
    "#0072B2",  # hexagonal: blue
    "#D55E00",  # cubic: vermillion
)
#: Colour of invalid (filtered) positions in every map.
INVALID_COLOUR: str = "#777777"
#: Colour of valid positions whose space group is not among the named ones.
OTHER_COLOUR: str = "#333333"
#: Lightness steps of the space groups of one crystal system, in order of frequency:
#: 0 the system's colour, > 0 mixed with white by that share, < 0 mixed with black.
SPACE_GROUP_SHADES: tuple[float, ...] = (0.0, 0.6, -0.4)

#: American spellings of the same constants.
CRYSTAL_SYSTEM_COLORS = CRYSTAL_SYSTEM_COLOURS
INVALID_COLOR = INVALID_COLOUR


class MapFigure(Figure):
    """A matplotlib Figure that displays itself in Jupyter (as PNG) without pyplot."""

    #: Resolution of the inline PNG.
    repr_dpi: float = 80.0

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=self.repr_dpi)
        return buf.getvalue()


def map_figure(figsize: tuple[float, float], **kwargs: Any) -> MapFigure:
    """A new :class:`MapFigure` (constrained layout), for figures of the maps."""
    kwargs.setdefault("layout", "constrained")
    return MapFigure(figsize=figsize, **kwargs)


def crystal_system_cmap() -> ListedColormap:
    """Colour map of ``crystal_system + 1`` (0 invalid, 1..7 the systems), for ``vmin=0, vmax=7``."""
    return ListedColormap([INVALID_COLOUR, *CRYSTAL_SYSTEM_COLOURS])


def _shade(colour: str, amount: float) -> str:
    rgb = np.asarray(to_rgb(colour))
    target = np.ones(3) if amount > 0 else np.zeros(3)
    return to_hex((1 - abs(amount)) * rgb + abs(amount) * target)


def space_group_colours(numbers: Sequence[int]) -> list[str | None]:
    """Colours of space groups listed from the most to the least frequent.

    The ``i``-th listed group of a crystal system gets that system's colour with
    lightness step ``SPACE_GROUP_SHADES[i]``; groups past the last step get ``None``
    (shown as "other").

    Parameters
    ----------
    numbers : sequence of int
        Space-group numbers 1..230, most frequent first.

    Returns
    -------
    list of str or None
    """
    seen = [0] * len(CRYSTAL_SYSTEMS)
    out: list[str | None] = []
    for number in numbers:
        cs = int(SG_TO_CS[int(number) - 1])
        rank = seen[cs]
        seen[cs] += 1
        out.append(_shade(CRYSTAL_SYSTEM_COLOURS[cs], SPACE_GROUP_SHADES[rank]) if rank < len(SPACE_GROUP_SHADES) else None)
    return out


def _slice(maps: Any, label: str) -> np.ndarray:
    """A slice of the maps by label (RealSlice, or a mapping of arrays)."""
    if hasattr(maps, "get_slice") and label in list(getattr(maps, "slicelabels", []) or []):
        return np.asarray(maps.get_slice(label).data)
    if isinstance(maps, dict) and label in maps:
        return np.asarray(maps[label])
    raise KeyError(f"the maps have no slice {label!r}")


def space_group_symbol(number: int) -> str:
    """Number and short Hermann-Mauguin symbol of a space group, ``"225 Fm-3m"``.

    The symbols ship with the package (:data:`py4dstem_gnn.labels.SPACE_GROUP_SYMBOLS`).
    """
    return f"{int(number)} {hermann_mauguin(int(number))}"


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


def crystal_system_figure(
    maps: Any,
    datacube: Any = None,
    image: np.ndarray | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    sets: bool | None = None,
) -> MapFigure:
    """Fig. 2 layout: virtual image, crystal-system map, distribution of systems (and the sets).

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
    figsize : tuple of float, optional
        Default (13, 4.2), or (19, 4.2) with the set panel.
    sets : bool, optional
        Add the conformal crystal-system set of every position beside the map (what the model
        cannot tell apart there; :func:`prediction_set_figure`). Default: when ``maps`` has a
        ``cs_set`` slice with any set in it.

    Returns
    -------
    MapFigure
        Panels: image; crystal-system map (:data:`CRYSTAL_SYSTEM_COLOURS`, invalid
        :data:`INVALID_COLOUR`: too few spots or confidence below the threshold, legend);
        the set map (if ``sets``); bar chart of the fraction of each system over valid positions.
    """
    cs = _slice(maps, "crystal_system").astype(int)
    if sets is None:
        try:
            sets = bool(np.any(_slice(maps, "cs_set") > 0))
        except KeyError:
            sets = False
    if image is not None:
        img, img_title = np.asarray(image, float), "image"
    elif datacube is not None:
        img, img_title = virtual_image(datacube), "virtual dark field"
    else:
        img, img_title = _slice(maps, "intensity").astype(float), "Bragg intensity sum"

    fig = map_figure(figsize or ((19.0, 4.2) if sets else (13.0, 4.2)))
    axes = list(fig.subplots(1, 4 if sets else 3, gridspec_kw={"width_ratios": [1, 1, 1, 1.1] if sets else [1, 1, 1.1]}))
    if sets:
        _draw_set_map(axes.pop(2), maps)
    _show_image(axes[0], img, img_title)

    axes[1].imshow(np.clip(cs, INVALID, 6) + 1, cmap=crystal_system_cmap(), vmin=0, vmax=7, interpolation="nearest")
    axes[1].set_title("crystal system")
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    valid = cs >= 0
    present = [k for k in range(len(CRYSTAL_SYSTEMS)) if np.any(cs == k)]
    handles = [Patch(color=CRYSTAL_SYSTEM_COLOURS[k], label=CRYSTAL_SYSTEMS[k]) for k in present]
    handles.append(Patch(facecolor=INVALID_COLOUR, edgecolor="grey", label="invalid"))
    axes[1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)

    n_valid = int(valid.sum())
    frac = np.bincount(cs[valid], minlength=len(CRYSTAL_SYSTEMS)) / max(n_valid, 1)
    ax = axes[2]
    ax.bar(range(len(CRYSTAL_SYSTEMS)), 100 * frac, color=CRYSTAL_SYSTEM_COLOURS, edgecolor="#333333", linewidth=0.5)
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
) -> MapFigure:
    """Space-group map with the most frequent groups named, and their frequencies.

    Parameters
    ----------
    maps : py4DSTEM.RealSlice
        Output of :func:`py4dstem_gnn.classify_braggvectors`.
    n_named : int
        Number of most frequent space groups given their own colour and name. Each
        takes the hue of its crystal system (:func:`space_group_colours`); groups
        past the named ones, or past three of one crystal system, are
        :data:`OTHER_COLOUR` ("other"); invalid positions :data:`INVALID_COLOUR`.
    title : str, optional
    figsize : tuple of float

    Returns
    -------
    MapFigure
        Panels: the space-group map with a legend (``"225 Fm-3m"``), and the share
        of valid positions of each named group.
    """
    sg = _slice(maps, "space_group").astype(int)
    valid = sg > 0
    n_named = max(int(n_named), 1)
    nums, counts = np.unique(sg[valid], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    candidates = nums[order][:n_named]
    shades = space_group_colours(candidates)
    top = [int(s) for s, c in zip(candidates, shades) if c is not None]
    top_colours = [c for c in shades if c is not None]
    top_counts = [int(counts[nums == s][0]) for s in top]
    index = np.zeros(sg.shape, int)  # 0 invalid, 1 other, 2.. named
    index[valid] = 1
    for i, s in enumerate(top):
        index[sg == s] = i + 2
    colours = [INVALID_COLOUR, OTHER_COLOUR, *top_colours]

    fig = map_figure(figsize)
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1]})
    axes[0].imshow(index, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(colours) - 0.5, interpolation="nearest")
    axes[0].set_title("space group")
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    labels = [space_group_symbol(s) for s in top]
    handles = [Patch(color=c, label=lab) for c, lab in zip(top_colours, labels)]
    if np.any(index == 1):
        handles.append(Patch(color=OTHER_COLOUR, label="other"))
    handles.append(Patch(facecolor=INVALID_COLOUR, edgecolor="grey", label="invalid"))
    axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)

    n_valid = int(valid.sum())
    ax = axes[1]
    frac = np.asarray(top_counts, float) / max(n_valid, 1)
    ax.barh(range(len(top)), 100 * frac, color=top_colours, edgecolor="#333333", linewidth=0.5)
    ax.set_yticks(range(len(top)))
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xlabel("valid positions (%)")
    ax.set_xlim(0, 100)
    ax.set_title("most frequent space groups")
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------
# conformal prediction sets (issue 15)
# --------------------------------------------------------------------------------------

#: Colours of the most frequent crystal-system sets with two or more members, in order of
#: frequency (Paul Tol's "muted" scheme, colour-blind safe; singletons keep the colour of their
#: crystal system).
SET_COLOURS: tuple[str, ...] = ("#332288", "#882255", "#999933", "#CC6677", "#44AA99", "#DDCC77", "#AA4499", "#117733")
_SHORT_NAMES = ("tric", "mono", "ortho", "tetr", "trig", "hex", "cub")


def _set_name(mask: int) -> str:
    from .conformal import decode_mask, mask_label

    codes = decode_mask(mask)
    if len(codes) == len(CRYSTAL_SYSTEMS):
        return "any (all 7)"
    if len(codes) <= 3:
        return mask_label(mask)
    return " | ".join(_SHORT_NAMES[c] for c in codes)


def _draw_set_map(ax: Any, maps: Any, n_named: int = 8) -> None:
    """The conformal crystal-system set of every position, with a legend (see :func:`prediction_set_figure`)."""
    from .conformal import mask_size

    mask = _slice(maps, "cs_set").astype(int)
    ran = mask > 0
    masks, counts = np.unique(mask[ran], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    multi = [int(m) for m in masks[order] if mask_size(m) > 1][: max(0, min(int(n_named), len(SET_COLOURS)))]
    index = np.zeros(mask.shape, int)  # 0 not available, 1 other sets, 2..8 singletons, 9.. named sets
    index[ran] = 1
    for c in range(len(CRYSTAL_SYSTEMS)):
        index[mask == (1 << c)] = 2 + c
    for i, m in enumerate(multi):
        index[mask == m] = 2 + len(CRYSTAL_SYSTEMS) + i
    colours = [INVALID_COLOUR, OTHER_COLOUR, *CRYSTAL_SYSTEM_COLOURS, *SET_COLOURS[: len(multi)]]
    ax.imshow(index, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(colours) - 0.5, interpolation="nearest")
    try:
        coverage = maps.metadata["py4dstem_gnn"]["coverage"]
    except Exception:  # noqa: BLE001 - metadata optional (dicts, older maps)
        coverage = None
    ax.set_title("crystal-system set" + (f" ({100 * float(coverage):.0f} % coverage)" if coverage else ""))
    n_ran = int(ran.sum())
    handles = []
    for c in range(len(CRYSTAL_SYSTEMS)):
        k = int(np.sum(mask == (1 << c)))
        if k:
            handles.append(Patch(color=CRYSTAL_SYSTEM_COLOURS[c], label=f"{CRYSTAL_SYSTEMS[c]} ({100 * k / max(n_ran, 1):.0f} %)"))
    for i, m in enumerate(multi):
        k = int(np.sum(mask == m))
        handles.append(Patch(color=SET_COLOURS[i], label=f"{_set_name(m)} ({100 * k / max(n_ran, 1):.0f} %)"))
    if np.any(index == 1):
        handles.append(Patch(color=OTHER_COLOUR, label="other sets"))
    handles.append(Patch(facecolor=INVALID_COLOUR, edgecolor="grey", label="no set (model not run)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    if n_ran == 0:
        ax.text(0.5, 0.5, "no conformal sets\n(weights without calibration?)", ha="center", va="center",
                transform=ax.transAxes, fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])


def prediction_set_figure(
    maps: Any,
    n_named: int = 8,
    title: str | None = None,
    figsize: tuple[float, float] = (12.0, 4.4),
) -> MapFigure:
    """Map of the conformal crystal-system sets and of their size.

    Parameters
    ----------
    maps : py4DSTEM.RealSlice
        Output of :func:`py4dstem_gnn.classify_braggvectors` (slices ``cs_set``,
        ``cs_set_size`` and ``sg_set_size``), or a mapping of those arrays.
    n_named : int
        Most frequent sets with two or more members given their own colour
        (:data:`SET_COLOURS`, at most 8); the others are :data:`OTHER_COLOUR`.
        One-member sets take the colour of their crystal system.
    title : str, optional
    figsize : tuple of float

    Returns
    -------
    MapFigure
        Panels: the set map with a legend (``"tetragonal | cubic"``; grey where the model
        did not run or no calibration exists) and the number of crystal systems in each set
        (1 = the map is sure at the chosen coverage, 7 = it cannot tell).
    """
    from .conformal import mask_size

    mask = _slice(maps, "cs_set").astype(int)
    size = mask_size(mask)
    ran = mask > 0
    n_ran = int(ran.sum())
    fig = map_figure(figsize)
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1]})
    _draw_set_map(axes[0], maps, n_named)

    from matplotlib import colormaps

    size_colours = [to_hex(c) for c in colormaps["viridis"](np.linspace(0.0, 1.0, len(CRYSTAL_SYSTEMS)))]
    img = axes[1].imshow(np.where(ran, size, 0), cmap=ListedColormap([INVALID_COLOUR, *size_colours]),
                         vmin=-0.5, vmax=len(CRYSTAL_SYSTEMS) + 0.5, interpolation="nearest")
    cbar = fig.colorbar(img, ax=axes[1], ticks=range(1, len(CRYSTAL_SYSTEMS) + 1), shrink=0.85)
    cbar.ax.set_ylim(0.5, len(CRYSTAL_SYSTEMS) + 0.5)
    cbar.set_label("crystal systems in the set")
    sub = ""
    try:
        sg_size = _slice(maps, "sg_set_size")
        if n_ran:
            sub = f"; space-group set: median {np.median(sg_size[ran]):.0f} groups"
    except KeyError:
        pass
    axes[1].set_title(f"set size (mean {size[ran].mean():.2f}{sub})" if n_ran else "set size")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig
