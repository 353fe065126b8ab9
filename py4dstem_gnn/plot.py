"""Figures of crystal-system and space-group maps (the layout of Fig. 2 of the paper), sized for a journal.

Every function takes the RealSlice returned by :func:`py4dstem_gnn.classify_braggvectors`
(or one read back with ``py4DSTEM.read``, or a mapping of slice names to arrays) and
returns a :class:`MapFigure`, a :class:`matplotlib.figure.Figure` built without pyplot: it
works with any backend, shows inline in Jupyter when it is the last expression of a cell
or is passed to ``display(fig)``, and saves as PNG and PDF with :func:`save_figure`.
Anything else (a BraggVectors, a DataCube) is refused with a ``TypeError`` saying to
pass the maps returned by ``classify_braggvectors``.

Layout: at most 7.2 in wide (a two-column journal page; two rows where four panels would
not fit one), text of 7-9 pt, lettered and titled panels, every share in % with its
denominator stated ("n = 3,912 labelled positions of 4,096"). Maps carry a scale bar in
the scan's calibrated units (R pixel size of the maps, else of the ``datacube`` passed),
in scan pixels where neither is calibrated.

Colours: one scheme per quantity, the same in every figure, safe for colour-blind
readers. Crystal systems take the seven colours of the Okabe-Ito palette
(:data:`CRYSTAL_SYSTEM_COLOURS`); a space group (or a phase) takes the hue of its crystal
system, lighter for the second and darker for the third most frequent group of that
system (:func:`space_group_colours`), so a hue means one crystal system in every figure.
Positions without a label are mid grey (:data:`INVALID_COLOUR`); classes beyond the named
ones dark grey (:data:`OTHER_COLOUR`). Under simulated protanopia, deuteranopia and
tritanopia (Machado et al. 2009) the colours of one figure stay at least 10 CIELAB units
apart (``tests/test_plot.py``), except space groups of *different* systems, which the
legend names.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
from matplotlib.colors import ListedColormap, to_hex
from matplotlib.patches import Patch

from .labels import CRYSTAL_SYSTEMS, INVALID, SG_TO_CS
from .plot_phase import phase_map_figure
from .plot_tools import (
    CRYSTAL_SYSTEM_COLOURS,
    INVALID_COLOUR,
    NOT_LABELLED,
    OTHER_COLOUR,
    PAGE_WIDTH_IN,
    SPACE_GROUP_SHADES,
    MapFigure,
    add_scale_bar,
    check_maps,
    get_slice,
    hide_ticks,
    map_figure,
    panel_label,
    paper_style,
    percent,
    real_space_scale,
    save_figure,
    shade,
    share_bars,
    side_colorbar,
    space_group_symbol,
    two_rows,
)

__all__ = [
    "CRYSTAL_SYSTEM_COLOURS",
    "CRYSTAL_SYSTEM_COLORS",
    "CRYSTAL_SYSTEM_ABBREVIATIONS",
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
    "phase_map_figure",
    "save_figure",
    "SET_COLOURS",
    "virtual_image",
    "space_group_symbol",
]

logger = logging.getLogger(__name__)

#: American spellings of the same constants.
CRYSTAL_SYSTEM_COLORS = CRYSTAL_SYSTEM_COLOURS
INVALID_COLOR = INVALID_COLOUR

#: Short names of the crystal systems, used wherever several are listed together (sets).
CRYSTAL_SYSTEM_ABBREVIATIONS: tuple[str, ...] = ("tric", "mono", "orth", "tetr", "trig", "hex", "cub")

#: Colours of the most frequent crystal-system sets with two or more members, in order of
#: frequency (Paul Tol's "muted" scheme, colour-blind safe; singletons keep the colour of their
#: crystal system).
SET_COLOURS: tuple[str, ...] = ("#332288", "#882255", "#999933", "#CC6677", "#44AA99", "#DDCC77", "#AA4499", "#117733")

_slice = get_slice  # older private name


def crystal_system_cmap() -> ListedColormap:
    """Colour map of ``crystal_system + 1`` (0 not labelled, 1..7 the systems), for ``vmin=0, vmax=7``."""
    return ListedColormap([INVALID_COLOUR, *CRYSTAL_SYSTEM_COLOURS])


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
        out.append(shade(CRYSTAL_SYSTEM_COLOURS[cs], SPACE_GROUP_SHADES[rank]) if rank < len(SPACE_GROUP_SHADES) else None)
    return out


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


def _show_image(ax: Any, img: np.ndarray, title: str, scale: tuple[float, str] | None) -> None:
    lo, hi = np.percentile(img, [1, 99.5]) if img.size else (0, 1)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    ax.set_title(title)
    hide_ticks(ax)
    if scale is not None:
        add_scale_bar(ax, img.shape[1], scale)


def _legend(ax: Any, handles: list, title: str | None = None) -> None:
    """Legend to the right of a map, 7 pt, no frame."""
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title=title,
              alignment="left")


def _not_labelled_patch(label: str = NOT_LABELLED) -> Patch:
    return Patch(facecolor=INVALID_COLOUR, edgecolor="#444444", linewidth=0.4, label=label)


def _denominator(n_valid: int, n_total: int, what: str = "labelled") -> str:
    return f"n = {n_valid:,} {what} of {n_total:,}"


def _draw_crystal_system_map(ax: Any, cs: np.ndarray, scale: tuple[float, str] | None) -> None:
    ax.imshow(np.clip(cs, INVALID, 6) + 1, cmap=crystal_system_cmap(), vmin=0, vmax=7, interpolation="nearest")
    ax.set_title("Crystal system")
    hide_ticks(ax)
    present = [k for k in range(len(CRYSTAL_SYSTEMS)) if np.any(cs == k)]
    handles = [Patch(color=CRYSTAL_SYSTEM_COLOURS[k], label=CRYSTAL_SYSTEMS[k]) for k in present]
    handles.append(_not_labelled_patch())
    _legend(ax, handles)
    if scale is not None:
        add_scale_bar(ax, cs.shape[1], scale)


def _draw_crystal_system_bars(ax: Any, cs: np.ndarray) -> None:
    valid = cs >= 0
    n_valid = int(valid.sum())
    frac = np.bincount(cs[valid], minlength=len(CRYSTAL_SYSTEMS)) / max(n_valid, 1)
    share_bars(ax, list(CRYSTAL_SYSTEMS), list(CRYSTAL_SYSTEM_COLOURS), frac, len(CRYSTAL_SYSTEMS))
    ax.set_xlabel(f"Share (%)\n{_denominator(n_valid, cs.size)} positions", loc="right")
    ax.set_title("Crystal-system shares")
    if n_valid == 0:
        ax.text(0.5, 0.5, "no labelled positions", ha="center", va="center", transform=ax.transAxes)


def crystal_system_figure(
    maps: Any,
    datacube: Any = None,
    image: np.ndarray | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    sets: bool | None = None,
    scale_bar: bool = True,
) -> MapFigure:
    """Fig. 2 layout: virtual image, crystal-system map, shares of the systems (and the conformal sets).

    Parameters
    ----------
    maps : py4DSTEM.RealSlice
        The maps returned by :func:`py4dstem_gnn.classify_braggvectors` (or a dict of arrays).
    datacube : py4DSTEM.DataCube, optional
        If given, the first panel is its annular dark-field virtual image
        (:func:`virtual_image`), and its real-space calibration sizes the scale bar when
        the maps carry none.
    image : numpy.ndarray, optional
        A ready image for the first panel (takes precedence over ``datacube``).
        Without either, the per-position sum of Bragg-disk intensities is shown.
    title : str, optional
        Figure title.
    figsize : tuple of float, optional
        Default (7.2, 2.7), or (7.2, 5.0) in two rows with the set panel.
    sets : bool, optional
        Add the conformal crystal-system set of every position (what the model cannot
        tell apart there; :func:`prediction_set_figure`). Default: when ``maps`` has a
        ``cs_set`` slice with any set in it.
    scale_bar : bool
        Draw a scale bar on the image and on the maps.

    Returns
    -------
    MapFigure
        Panels (axes in this order): image; crystal-system map (:data:`CRYSTAL_SYSTEM_COLOURS`,
        :data:`INVALID_COLOUR` where not labelled: too few spots or confidence below the
        threshold); the set map (if ``sets``); the share of each system among the labelled
        positions, with their number.

    Raises
    ------
    TypeError
        If ``maps`` is not the maps returned by ``classify_braggvectors``.
    """
    check_maps(maps, "crystal_system_figure", ["crystal_system"])
    cs = get_slice(maps, "crystal_system").astype(int)
    if sets is None:
        try:
            sets = bool(np.any(get_slice(maps, "cs_set") > 0))
        except KeyError:
            sets = False
    if image is not None:
        img, img_title = np.asarray(image, float), "Image"
    elif datacube is not None:
        img, img_title = virtual_image(datacube), "Virtual dark field"
    else:
        try:
            img, img_title = get_slice(maps, "intensity").astype(float), "Bragg-disk intensity (sum)"
        except KeyError:
            img, img_title = (cs >= 0).astype(float), "Labelled positions"
    scale = real_space_scale(maps, datacube) if scale_bar else None

    with paper_style():
        if sets:
            fig = map_figure(figsize or (PAGE_WIDTH_IN, 5.0))
            ax_img, ax_cs, ax_set, ax_bar = two_rows(fig, top_ratios=(1.0, 1.45), bottom_ratios=(1.7, 1.0))
            _draw_set_map(ax_set, maps, scale=scale)
            axes = [ax_img, ax_cs, ax_set, ax_bar]
        else:
            fig = map_figure(figsize or (PAGE_WIDTH_IN, 2.7))
            ax_img, ax_cs, ax_bar = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 0.95]})
            axes = [ax_img, ax_cs, ax_bar]
        _show_image(ax_img, img, img_title, scale)
        _draw_crystal_system_map(ax_cs, cs, scale)
        _draw_crystal_system_bars(ax_bar, cs)
        for ax, letter in zip(axes, "abcd"):
            panel_label(ax, letter)
        if title:
            fig.suptitle(title)
    return fig


def space_group_figure(
    maps: Any,
    n_named: int = 8,
    title: str | None = None,
    figsize: tuple[float, float] = (PAGE_WIDTH_IN, 2.8),
    scale_bar: bool = True,
    datacube: Any = None,
    math_symbols: bool = False,
) -> MapFigure:
    """Space-group map with the most frequent groups named, and their shares.

    Parameters
    ----------
    maps : py4DSTEM.RealSlice
        The maps returned by :func:`py4dstem_gnn.classify_braggvectors` (or a dict of arrays).
    n_named : int
        Number of most frequent space groups given their own colour and name. Each
        takes the hue of its crystal system (:func:`space_group_colours`); groups
        past the named ones, or past three of one crystal system, are
        :data:`OTHER_COLOUR` ("other"); positions without a label :data:`INVALID_COLOUR`.
    title : str, optional
    figsize : tuple of float
    scale_bar : bool
        Draw a scale bar on the map.
    datacube : py4DSTEM.DataCube, optional
        Only for its real-space calibration (scale bar), when the maps carry none.
    math_symbols : bool
        Typeset the symbols as in print (:func:`space_group_symbol` with ``math=True``)
        rather than as plain text (``"Fm-3m"``).

    Returns
    -------
    MapFigure
        Panels: the space-group map with a legend (``"225 Fm-3m"``), and the share of the
        labelled positions of each named group, with their number.

    Raises
    ------
    TypeError
        If ``maps`` is not the maps returned by ``classify_braggvectors``.
    """
    check_maps(maps, "space_group_figure", ["space_group"])
    sg = get_slice(maps, "space_group").astype(int)
    valid = sg > 0
    n_named = max(int(n_named), 1)
    nums, counts = np.unique(sg[valid], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    candidates = nums[order][:n_named]
    shades = space_group_colours(candidates)
    top = [int(s) for s, c in zip(candidates, shades) if c is not None]
    top_colours = [c for c in shades if c is not None]
    top_counts = [int(counts[nums == s][0]) for s in top]
    index = np.zeros(sg.shape, int)  # 0 not labelled, 1 other, 2.. named
    index[valid] = 1
    for i, s in enumerate(top):
        index[sg == s] = i + 2
    colours = [INVALID_COLOUR, OTHER_COLOUR, *top_colours]
    scale = real_space_scale(maps, datacube) if scale_bar else None
    n_valid = int(valid.sum())

    with paper_style():
        fig = map_figure(figsize)
        ax_map, ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1]})
        ax_map.imshow(index, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(colours) - 0.5, interpolation="nearest")
        ax_map.set_title("Space group")
        hide_ticks(ax_map)
        labels = [space_group_symbol(s, math_symbols) for s in top]
        handles = [Patch(color=c, label=lab) for c, lab in zip(top_colours, labels)]
        if np.any(index == 1):
            handles.append(Patch(color=OTHER_COLOUR, label="other"))
        handles.append(_not_labelled_patch())
        _legend(ax_map, handles)
        if scale is not None:
            add_scale_bar(ax_map, sg.shape[1], scale)

        frac = np.asarray(top_counts, float) / max(n_valid, 1)
        share_bars(ax, labels, top_colours, frac, 4)
        ax.set_xlabel(f"Share (%)\n{_denominator(n_valid, sg.size)} positions", loc="right")
        ax.set_title("Most frequent space groups")
        if n_valid == 0:
            ax.text(0.5, 0.5, "no labelled positions", ha="center", va="center", transform=ax.transAxes)
        panel_label(ax_map, "a")
        panel_label(ax, "b")
        if title:
            fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------
# conformal prediction sets (issue 15)
# --------------------------------------------------------------------------------------


def _set_name(mask: int) -> str:
    """Members of a set, abbreviated alike in every entry (``"tetr | cub"``; ``"all 7"``)."""
    from .confidence.conformal import decode_mask

    codes = decode_mask(mask)
    if len(codes) == len(CRYSTAL_SYSTEMS):
        return "all 7"
    return " | ".join(CRYSTAL_SYSTEM_ABBREVIATIONS[c] for c in codes)


def _coverage(maps: Any) -> float | None:
    try:
        value = maps.metadata["py4dstem_gnn"]["coverage"]
        return None if value is None else float(value)
    except Exception:  # noqa: BLE001 - metadata optional (dicts, older maps)
        return None


def _draw_set_map(ax: Any, maps: Any, n_named: int = 8, scale: tuple[float, str] | None = None) -> None:
    """The conformal crystal-system set of every position, with a legend (see :func:`prediction_set_figure`)."""
    from .confidence.conformal import mask_size

    mask = get_slice(maps, "cs_set").astype(int)
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
    coverage = _coverage(maps)
    ax.set_title("Crystal-system set" + (f"\n({100 * coverage:.0f} % coverage)" if coverage else ""))
    n_ran = int(ran.sum())
    handles = []
    for c in range(len(CRYSTAL_SYSTEMS)):
        k = int(np.sum(mask == (1 << c)))
        if k:
            handles.append(Patch(color=CRYSTAL_SYSTEM_COLOURS[c], label=f"{_set_name(1 << c)}  {percent(k / n_ran, 0)}"))
    for i, m in enumerate(multi):
        k = int(np.sum(mask == m))
        handles.append(Patch(color=SET_COLOURS[i], label=f"{_set_name(m)}  {percent(k / n_ran, 0)}"))
    if np.any(index == 1):
        k = int(np.sum(index == 1))
        handles.append(Patch(color=OTHER_COLOUR, label=f"other sets  {percent(k / n_ran, 0)}"))
    handles.append(_not_labelled_patch("no set (model not run)"))
    _legend(ax, handles, title=f"n = {n_ran:,} positions with a set" if n_ran else None)
    if n_ran == 0:
        ax.text(0.5, 0.5, "no conformal sets\n(weights without calibration?)", ha="center", va="center",
                transform=ax.transAxes, fontsize=7)
    hide_ticks(ax)
    if scale is not None:
        add_scale_bar(ax, mask.shape[1], scale)


def prediction_set_figure(
    maps: Any,
    n_named: int = 8,
    title: str | None = None,
    figsize: tuple[float, float] = (PAGE_WIDTH_IN, 3.0),
    scale_bar: bool = True,
    datacube: Any = None,
) -> MapFigure:
    """Map of the conformal crystal-system sets and of their size.

    Parameters
    ----------
    maps : py4DSTEM.RealSlice
        The maps returned by :func:`py4dstem_gnn.classify_braggvectors` (slices ``cs_set``,
        ``cs_set_size`` and ``sg_set_size``), or a mapping of those arrays.
    n_named : int
        Most frequent sets with two or more members given their own colour
        (:data:`SET_COLOURS`, at most 8); the others are :data:`OTHER_COLOUR`.
        One-member sets take the colour of their crystal system. Members are abbreviated
        alike (:data:`CRYSTAL_SYSTEM_ABBREVIATIONS`).
    title : str, optional
    figsize : tuple of float
    scale_bar : bool
        Draw a scale bar on the maps.
    datacube : py4DSTEM.DataCube, optional
        Only for its real-space calibration (scale bar), when the maps carry none.

    Returns
    -------
    MapFigure
        Panels: the set map with a legend (share of the positions with a set; grey where
        the model did not run or no calibration exists) and the number of crystal systems
        in each set (1 = the map is sure at the chosen coverage, 7 = it cannot tell).

    Raises
    ------
    TypeError
        If ``maps`` is not the maps returned by ``classify_braggvectors``.
    """
    from matplotlib import colormaps

    from .confidence.conformal import mask_size

    check_maps(maps, "prediction_set_figure", ["cs_set"])
    mask = get_slice(maps, "cs_set").astype(int)
    size = mask_size(mask)
    ran = mask > 0
    n_ran = int(ran.sum())
    scale = real_space_scale(maps, datacube) if scale_bar else None
    with paper_style():
        fig = map_figure(figsize)
        ax_set, ax_size = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1]})
        _draw_set_map(ax_set, maps, n_named, scale=scale)
        size_colours = [to_hex(c) for c in colormaps["viridis"](np.linspace(0.0, 1.0, len(CRYSTAL_SYSTEMS)))]
        img = ax_size.imshow(np.where(ran, size, 0), cmap=ListedColormap([INVALID_COLOUR, *size_colours]),
                             vmin=-0.5, vmax=len(CRYSTAL_SYSTEMS) + 0.5, interpolation="nearest")
        cbar = side_colorbar(fig, ax_size, img, "Crystal systems in the set", ticks=range(1, len(CRYSTAL_SYSTEMS) + 1))
        cbar.ax.set_ylim(0.5, len(CRYSTAL_SYSTEMS) + 0.5)
        sub = ""
        try:
            sg_size = get_slice(maps, "sg_set_size")
            if n_ran:
                sub = f"; space groups: median {np.median(sg_size[ran]):.0f}"
        except KeyError:
            pass
        ax_size.set_title(f"Set size (grey: no set)\nmean {size[ran].mean():.1f} crystal systems{sub}" if n_ran else "Set size")
        hide_ticks(ax_size)
        if scale is not None:
            add_scale_bar(ax_size, mask.shape[1], scale)
        panel_label(ax_set, "a")
        panel_label(ax_size, "b")
        if title:
            fig.suptitle(title)
    return fig
