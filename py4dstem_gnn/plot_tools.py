"""What every figure of :mod:`py4dstem_gnn.plot` shares: the figure class, the journal style,
the colour scheme, the input check, the scale bar, panel letters and :func:`save_figure`.

The style is sized for a journal page: at most 7.2 in (183 mm, a two-column page width)
wide, text of 7-9 pt, fonts embedded as TrueType in PDF (``pdf.fonttype 42``) and kept as
text in SVG, 300 dpi PNG.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from matplotlib import rc_context
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure

from .labels import hermann_mauguin

__all__ = [
    "CRYSTAL_SYSTEM_COLOURS",
    "INVALID_COLOUR",
    "OTHER_COLOUR",
    "SPACE_GROUP_SHADES",
    "PAGE_WIDTH_IN",
    "PAPER_STYLE",
    "MapFigure",
    "map_figure",
    "paper_style",
    "check_maps",
    "get_slice",
    "real_space_scale",
    "add_scale_bar",
    "panel_label",
    "hide_ticks",
    "side_colorbar",
    "two_rows",
    "percent",
    "save_figure",
    "shade",
    "space_group_symbol",
    "share_bars",
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
#: Colour of positions without a label (filtered: too few spots, or confidence below the threshold).
INVALID_COLOUR: str = "#777777"
#: Colour of labelled positions whose class is not among the named ones.
OTHER_COLOUR: str = "#333333"
#: Lightness steps of the classes of one crystal system, in order of frequency:
#: 0 the system's colour, > 0 mixed with white by that share, < 0 mixed with black.
SPACE_GROUP_SHADES: tuple[float, ...] = (0.0, 0.6, -0.4)

#: Widest figure (inches): a two-column journal page (183 mm).
PAGE_WIDTH_IN: float = 7.2

#: Matplotlib settings of every figure (sizes in points).
PAPER_STYLE: dict[str, Any] = {
    "font.size": 8.0,
    "axes.titlesize": 8.0,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 7.0,
    "ytick.labelsize": 7.0,
    "legend.fontsize": 7.0,
    "legend.title_fontsize": 7.0,
    "figure.titlesize": 9.0,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "legend.handlelength": 1.2,
    "legend.handleheight": 1.0,
    "legend.borderaxespad": 0.3,
    "legend.labelspacing": 0.3,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "savefig.dpi": 300,
}

#: Words used for "not labelled" in every legend.
NOT_LABELLED = "not labelled"


class MapFigure(Figure):
    """A matplotlib Figure that displays itself in Jupyter (as PNG) without pyplot."""

    #: Resolution of the inline PNG.
    repr_dpi: float = 110.0

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        with rc_context(PAPER_STYLE):
            self.savefig(buf, format="png", dpi=self.repr_dpi)
        return buf.getvalue()


def map_figure(figsize: tuple[float, float], **kwargs: Any) -> MapFigure:
    """A new :class:`MapFigure` (constrained layout, white background)."""
    kwargs.setdefault("layout", "constrained")
    kwargs.setdefault("facecolor", "white")
    return MapFigure(figsize=figsize, **kwargs)


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Context in which figures are built with :data:`PAPER_STYLE`."""
    with rc_context(PAPER_STYLE):
        yield


def shade(colour: str, amount: float) -> str:
    """``colour`` mixed with white (``amount > 0``) or black (``amount < 0``) by ``|amount|``."""
    rgb = np.asarray(to_rgb(colour))
    target = np.ones(3) if amount > 0 else np.zeros(3)
    return to_hex((1 - abs(amount)) * rgb + abs(amount) * target)


def space_group_symbol(number: int, math: bool = False) -> str:
    """Number and short Hermann-Mauguin symbol of a space group, ``"225 Fm-3m"``.

    The symbols ship with the package (:data:`py4dstem_gnn.labels.SPACE_GROUP_SYMBOLS`).
    With ``math=True`` the symbol is typeset as in print (matplotlib mathtext: italic
    letters, bars over rotoinversions, subscript screw axes): ``"225 $Fm\\bar{3}m$"``.
    """
    symbol = hermann_mauguin(int(number))
    if math:
        symbol = "$" + re.sub(r"-(\d)", r"\\bar{\1}", symbol) + "$"
    return f"{int(number)} {symbol}"


# --------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------


def check_maps(maps: Any, figure: str, needs: Sequence[str]) -> None:
    """Refuse anything but the maps of :func:`~py4dstem_gnn.classify_braggvectors` (or a dict of arrays).

    Parameters
    ----------
    maps : object
        What was passed to a figure function.
    figure : str
        The function's name, for the message.
    needs : sequence of str
        Slices the figure reads.

    Raises
    ------
    TypeError
        If ``maps`` is neither a RealSlice-like object with ``get_slice`` and
        ``slicelabels`` nor a mapping, or lacks every one of ``needs``:
        ``"... pass the maps returned by classify_braggvectors ..."``.
    """
    kind = type(maps).__name__
    hint = (
        f"{figure} needs the maps returned by classify_braggvectors (got {kind}): pass the maps returned by "
        f"classify_braggvectors, e.g. maps = py4dstem_gnn.classify_braggvectors(bv); {figure}(maps)"
    )
    if hasattr(maps, "get_slice") and hasattr(maps, "slicelabels"):
        labels = [str(s) for s in (maps.slicelabels or [])]
    elif isinstance(maps, dict):
        labels = [str(k) for k in maps]
    else:
        raise TypeError(hint)
    missing = [n for n in needs if n not in labels]
    if missing and len(missing) == len(needs):
        raise TypeError(f"{hint} (this one has no slice {', '.join(repr(m) for m in missing)}; slices: {labels})")


def get_slice(maps: Any, label: str) -> np.ndarray:
    """A slice of the maps by label (RealSlice, or a mapping of arrays).

    Raises
    ------
    KeyError
        If the maps hold no such slice.
    """
    if hasattr(maps, "get_slice") and label in [str(s) for s in (getattr(maps, "slicelabels", None) or [])]:
        return np.asarray(maps.get_slice(label).data)
    if isinstance(maps, dict) and label in maps:
        return np.asarray(maps[label])
    raise KeyError(f"the maps have no slice {label!r} (pass the maps returned by classify_braggvectors)")


def percent(value: float, digits: int = 1) -> str:
    """A share as ``"12.5 %"``, always with ``digits`` decimals, except ``"0 %"`` and ``"100 %"``."""
    v = 100.0 * float(value)
    if v <= 0.0 or v >= 100.0:
        return f"{v:.0f} %"
    return f"{v:.{digits}f} %"


# --------------------------------------------------------------------------------------
# real space: scale bar
# --------------------------------------------------------------------------------------

_UNITS = {"a": "Å", "å": "Å", "angstrom": "Å", "angstroms": "Å", "nm": "nm", "um": "µm", "µm": "µm", "μm": "µm"}
_TO_NM = {"Å": 0.1, "nm": 1.0, "µm": 1000.0}


def real_space_scale(*sources: Any) -> tuple[float, str]:
    """Size of one scan position and its units, from the first source calibrated in real space.

    Parameters
    ----------
    *sources : object
        Objects with a py4DSTEM ``calibration`` (RealSlice, BraggVectors, DataCube),
        looked at in order; ``None`` and objects without one are skipped.

    Returns
    -------
    tuple of (float, str)
        ``(size, units)`` with units ``"Å"``, ``"nm"`` or ``"µm"``; ``(1.0, "px")``
        when no source carries a real-space calibration (R pixel size 1 in pixels).
    """
    for src in sources:
        cal = getattr(src, "calibration", None)
        try:
            size, units = cal.get_R_pixel_size(), cal.get_R_pixel_units()
        except Exception:  # noqa: BLE001 - any calibration-less object
            size = units = None
        if units is None or str(units).strip().lower() in ("pixels", "px") or size in (None, 1):
            # maps made by classify_braggvectors carry the scan's calibration in their metadata
            try:
                md = src.metadata["py4dstem_gnn"]
                size, units = md["R_pixel_size"], md["R_pixel_units"]
            except Exception:  # noqa: BLE001 - not such maps
                pass
        name = _UNITS.get(str(units).strip().lower()) if units is not None else None
        if name and size is not None and np.isfinite(float(size)) and float(size) > 0:
            return float(size), name
    return 1.0, "px"


def _nice(length: float) -> float:
    """Largest 1, 2 or 5 times a power of ten not above ``length``."""
    exp = np.floor(np.log10(length))
    for m in (5.0, 2.0, 1.0):
        if m * 10.0**exp <= length:
            return m * 10.0**exp
    return 10.0**exp


def add_scale_bar(ax: Any, width_px: int, scale: tuple[float, str], fraction: float = 0.25) -> None:
    """A scale bar in the lower right of an image axis.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Axis showing a map with one data unit per scan position.
    width_px : int
        Scan positions across the image.
    scale : tuple of (float, str)
        Output of :func:`real_space_scale`.
    fraction : float
        Longest bar, as a share of the image width.
    """
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    size, units = scale
    if units in _TO_NM:
        # metric units: Å below 10 nm, nm below 10 µm, else µm
        width_nm = width_px * size * _TO_NM[units]
        units_out = "Å" if width_nm < 10 else ("nm" if width_nm < 10_000 else "µm")
        size = size * _TO_NM[units] / _TO_NM[units_out]
        units = units_out
    length = _nice(max(width_px * size * fraction, 1e-12))
    if units == "px":
        length = max(length, 1.0)
    label = f"{length:g} {units}"
    bar = AnchoredSizeBar(
        ax.transData, length / size, label, "lower right", pad=0.25, sep=2, borderpad=0.3,
        frameon=True, size_vertical=max(width_px / 80.0, 0.4), color="black",
        fontproperties=FontProperties(size=7),
    )
    bar.patch.set_facecolor("white")
    bar.patch.set_alpha(0.8)
    bar.patch.set_edgecolor("none")
    ax.add_artist(bar)


def panel_label(ax: Any, letter: str) -> None:
    """Bold panel letter (a, b, ...) as the axis' left title, level with the first line of its title.

    Call it after the panel's (centred) title is set; keep that title within the panel's
    width (break it into lines) so the two do not meet.
    """
    lines = ax.get_title().count("\n")
    ax.set_title(letter + "\n" * lines, loc="left", fontsize=9, fontweight="bold")


def hide_ticks(ax: Any) -> None:
    """A map axis: no ticks (maps carry a scale bar instead), anchored left so that its legend or
    colour bar sits right beside it whatever room the layout leaves."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_anchor("W")


def two_rows(
    fig: Any, bottom: int = 2, top_ratios: tuple[float, float] = (1.0, 1.0), bottom_ratios: tuple[float, float] = (1.0, 1.0)
) -> list[Any]:
    """Four panels (or three: ``bottom=1``) in two rows of two, each row laid out on its own.

    Each row is a subfigure, so that the wide tick labels of a bar chart in one row do not push
    the maps of the other row aside. Returns the axes top left, top right, bottom left(, bottom right).
    """
    top_fig, bottom_fig = fig.subfigures(2, 1, height_ratios=[1.0, 1.12])
    axes = list(top_fig.subplots(1, 2, gridspec_kw={"width_ratios": list(top_ratios)}))
    low = list(bottom_fig.subplots(1, 2, gridspec_kw={"width_ratios": list(bottom_ratios)}))
    if bottom == 1:
        low[1].remove()
        low = low[:1]
    return axes + low


def side_colorbar(fig: Any, ax: Any, image: Any, label: str, **kwargs: Any) -> Any:
    """A colour bar right beside a map (an inset of the map's axis, so that it follows the map)."""
    cax = ax.inset_axes([1.04, 0.08, 0.05, 0.84])
    cbar = fig.colorbar(image, cax=cax, **kwargs)
    cbar.set_label(label)
    cbar.outline.set_linewidth(0.4)
    return cbar


def share_bars(ax: Any, labels: list[str], colours: list[str], frac: np.ndarray, slots: int) -> None:
    """Horizontal bars of shares (0..1), most frequent on top, value at the end of each bar."""
    y = np.arange(len(labels))
    ax.barh(y, 100 * np.asarray(frac), color=colours, edgecolor="#333333", linewidth=0.4, height=0.7)
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    # bars of one thickness whatever their number, centred in the panel, most frequent on top
    half = max(slots, len(labels)) / 2.0
    centre = (len(labels) - 1) / 2.0
    ax.set_ylim(centre + half, centre - half)
    ax.set_xlim(0, 122)
    ax.set_xticks([0, 25, 50, 75, 100])
    for i, f in enumerate(frac):
        if f > 0:
            ax.text(100 * f + 2, i, percent(f), ha="left", va="center", fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------


def save_figure(
    fig: Figure,
    path_stem: str | os.PathLike,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: float = 300,
) -> list[Path]:
    """Save a figure as raster and vector files: ``<path_stem>.png``, ``<path_stem>.pdf``, ...

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path_stem : str or path-like
        Path without extension (an extension given is dropped: ``fig2.png`` -> ``fig2``).
        Missing folders are made.
    formats : sequence of str
        File formats (``"png"``, ``"pdf"``, ``"svg"``, ``"eps"``, ...).
    dpi : float
        Resolution of raster formats.

    Returns
    -------
    list of pathlib.Path
        The files written, in the order of ``formats``.
    """
    stem = Path(path_stem)
    if stem.suffix.lower().lstrip(".") in {"png", "pdf", "svg", "eps", "jpg", "jpeg", "tif", "tiff"}:
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with rc_context(PAPER_STYLE):
        for fmt in formats:
            path = stem.with_name(f"{stem.name}.{fmt.lower().lstrip('.')}")
            fig.savefig(path, dpi=dpi, facecolor="white")
            paths.append(path)
    logger.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths
