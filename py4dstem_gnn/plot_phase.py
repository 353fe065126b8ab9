"""The phase map figure: which known material each position matched, how well, along which zone axis.

Reads the slices of the match stage (``phase``: index into the phase table, -1 no match;
optional ``match_score`` and ``zone_axis_u/v/w``) and the phase table in
``maps.metadata["py4dstem_gnn"]["phases"]`` (rows with ``formula``, ``space_group``,
``crystal_system``, ``source``). Same rules as every figure of :mod:`py4dstem_gnn.plot`
(page width, lettered panels, stated denominators, scale bar); a phase takes the hue of
its crystal system, so a phase and its space group share a colour family across figures.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from .labels import CRYSTAL_SYSTEMS, SG_TO_CS
from .plot_tools import (
    CRYSTAL_SYSTEM_COLOURS,
    INVALID_COLOUR,
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
    shade,
    share_bars,
    side_colorbar,
    space_group_symbol,
    two_rows,
)

__all__ = ["phase_map_figure", "phase_table", "phase_label", "ZONE_AXIS_COLOURS"]

logger = logging.getLogger(__name__)

#: Colours of the most frequent zone axes (Paul Tol's "muted" scheme, colour-blind safe).
ZONE_AXIS_COLOURS: tuple[str, ...] = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255")
_KEYS = ("formula", "space_group", "crystal_system", "source")
_NO_MATCH = "no match"


def _plain(value: Any) -> Any:
    """A table cell as a plain Python value (bytes decoded, numpy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _row(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return {str(k): _plain(v) for k, v in raw.items()}
    if isinstance(raw, (list, tuple, np.ndarray)):
        return {k: _plain(v) for k, v in zip(_KEYS, list(raw))}
    return {"formula": _plain(raw)}


def _rows(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if isinstance(raw, (str, bytes)):
        try:
            return _rows(json.loads(raw))
        except ValueError:
            return []
    if hasattr(raw, "to_dict") and hasattr(raw, "columns"):  # a pandas DataFrame
        return [_row(r) for r in raw.to_dict("records")]
    if isinstance(raw, np.ndarray) and raw.dtype.names:
        return [{n: _plain(r[n]) for n in raw.dtype.names} for r in raw]
    if isinstance(raw, Mapping):
        if raw and all(isinstance(v, Mapping) for v in raw.values()):  # rows keyed by their index
            keys = sorted(raw, key=lambda k: (0, int(k)) if str(k).lstrip("-").isdigit() else (1, str(k)))
            return [_row(raw[k]) for k in keys]
        cols = {str(k): list(np.atleast_1d(np.asarray(v, dtype=object))) for k, v in raw.items()}
        n = max((len(c) for c in cols.values()), default=0)
        return [{k: _plain(c[i]) if i < len(c) else None for k, c in cols.items()} for i in range(n)]
    if isinstance(raw, (list, tuple, np.ndarray)):
        return [_row(r) for r in raw]
    return []


def phase_table(maps: Any) -> list[dict[str, Any]]:
    """The phase table of the maps as a list of rows, whatever shape it was stored in.

    Parameters
    ----------
    maps : py4DSTEM.RealSlice or dict
        Maps whose ``metadata["py4dstem_gnn"]`` holds the table, under ``"phases"`` or as
        parallel lists ``phase_formula``, ``phase_space_group``, ``phase_crystal_system``,
        ``phase_source`` (how :func:`~py4dstem_gnn.classify_braggvectors` stores it, as
        py4DSTEM saves lists but not lists of dicts); a dict of arrays may hold it the same ways.

    Returns
    -------
    list of dict
        One row per phase (``formula``, ``space_group``, ``crystal_system``, ``source``
        where stored); empty when the maps carry no table. Accepts a list of rows, a dict of
        columns (lists or arrays, as py4DSTEM's Metadata may return them), a dict of rows
        keyed by index, a structured array, a DataFrame or a JSON string.
    """
    raw = None
    try:
        meta = maps.metadata["py4dstem_gnn"]
    except Exception:  # noqa: BLE001 - no metadata (a dict of arrays, older maps)
        meta = maps if isinstance(maps, Mapping) else None
    if meta is not None:
        try:
            raw = meta["phases"]
        except Exception:  # noqa: BLE001 - the table as parallel lists phase_formula, phase_space_group, ...
            columns = {}
            for key in _KEYS:
                try:
                    columns[key] = list(meta[f"phase_{key}"])
                except Exception:  # noqa: BLE001
                    continue
            raw = columns if "formula" in columns else None
    try:
        return _rows(raw)
    except Exception as err:  # noqa: BLE001 - a figure never fails on a malformed table
        logger.warning("cannot read the phase table (%s); phases are shown by index", err)
        return []


def _int(value: Any) -> int | None:
    try:
        v = int(value)
    except (TypeError, ValueError):
        return None
    return v


def _crystal_system(row: dict[str, Any]) -> int | None:
    """Crystal-system code of a row (from ``crystal_system`` as code or name, else from ``space_group``)."""
    cs = row.get("crystal_system")
    if isinstance(cs, str) and cs in CRYSTAL_SYSTEMS:
        return CRYSTAL_SYSTEMS.index(cs)
    code = _int(cs)
    if code is not None and 0 <= code < len(CRYSTAL_SYSTEMS):
        return code
    sg = _int(row.get("space_group"))
    if sg is not None and 1 <= sg <= 230:
        return int(SG_TO_CS[sg - 1])
    return None


def phase_label(row: dict[str, Any] | None, index: int, math: bool = False) -> str:
    """Legend text of a phase, ``"Au (225 Fm-3m)"``; ``"phase 3"`` without a table row.

    ``math=True`` typesets the symbol as in print (:func:`~py4dstem_gnn.plot.space_group_symbol`).
    """
    if not row:
        return f"phase {index}"
    formula = row.get("formula") or f"phase {index}"
    sg = _int(row.get("space_group"))
    return f"{formula} ({space_group_symbol(sg, math)})" if sg is not None and 1 <= sg <= 230 else str(formula)


def _phase_colours(ordered: list[int], table: list[dict[str, Any]]) -> list[str | None]:
    """Colours of phases listed most frequent first: their crystal system's hue, one shade per rank."""
    seen = [0] * len(CRYSTAL_SYSTEMS)
    out: list[str | None] = []
    for p in ordered:
        cs = _crystal_system(table[p]) if 0 <= p < len(table) else None
        if cs is None or seen[cs] >= len(SPACE_GROUP_SHADES):
            out.append(None)
            continue
        out.append(shade(CRYSTAL_SYSTEM_COLOURS[cs], SPACE_GROUP_SHADES[seen[cs]]))
        seen[cs] += 1
    return out


def _axis_label(uvw: tuple[int, int, int]) -> str:
    if all(abs(i) < 10 for i in uvw):
        return "[" + "".join(str(i) for i in uvw) + "]"
    return "[" + " ".join(str(i) for i in uvw) + "]"


def _draw_phase_map(
    ax: Any, phase: np.ndarray, table: list[dict[str, Any]], n_named: int, math: bool
) -> tuple[list, list]:
    matched = phase >= 0
    nums, counts = np.unique(phase[matched], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    ordered = [int(p) for p in nums[order]]
    colours = _phase_colours(ordered, table)
    named = [(p, c) for p, c in zip(ordered, colours) if c is not None][: max(int(n_named), 1)]
    index = np.zeros(phase.shape, int)  # 0 no match, 1 other phases, 2.. named
    index[matched] = 1
    for i, (p, _c) in enumerate(named):
        index[phase == p] = i + 2
    cmap = ListedColormap([INVALID_COLOUR, OTHER_COLOUR, *[c for _p, c in named]])
    ax.imshow(index, cmap=cmap, vmin=-0.5, vmax=len(named) + 1.5, interpolation="nearest")
    ax.set_title("Phase")
    hide_ticks(ax)
    labels = [phase_label(table[p] if 0 <= p < len(table) else None, p, math) for p, _c in named]
    handles = [Patch(color=c, label=lab) for (_p, c), lab in zip(named, labels)]
    if np.any(index == 1):
        handles.append(Patch(color=OTHER_COLOUR, label="other phases"))
    handles.append(Patch(facecolor=INVALID_COLOUR, edgecolor="#444444", linewidth=0.4, label=_NO_MATCH))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    counts_named = [int(np.sum(phase == p)) for p, _c in named]
    return list(zip(labels, [c for _p, c in named], counts_named)), ordered


def _draw_phase_bars(ax: Any, bars: list, n_matched: int, n_total: int) -> None:
    frac = np.asarray([k for _l, _c, k in bars], float) / max(n_matched, 1)
    share_bars(ax, [b[0] for b in bars], [b[1] for b in bars], frac, 4)
    ax.set_xlabel(f"Share (%)\nn = {n_matched:,} matched of {n_total:,} positions", loc="right")
    ax.set_title("Phase shares")
    if n_matched == 0:
        ax.text(0.5, 0.5, "no matched positions", ha="center", va="center", transform=ax.transAxes)


def _draw_scores(fig: Any, ax: Any, score: np.ndarray, matched: np.ndarray) -> None:
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad=INVALID_COLOUR)
    values = np.ma.masked_where(~matched | ~np.isfinite(score), score)
    finite = values.compressed()
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    img = ax.imshow(values, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1e-6, interpolation="nearest")
    side_colorbar(fig, ax, img, "Match score")
    ax.set_title(f"Match score\n(grey: {_NO_MATCH})")
    hide_ticks(ax)


def zone_axis_families(uvw: np.ndarray, cubic: np.ndarray) -> np.ndarray:
    """Zone axes as families: ``[uvw]`` and ``[-u-v-w]`` give the same zero-order pattern (one
    representative, first non-zero index positive); cubic phases' axes as ``<uvw>`` (sorted |indices|).

    Parameters
    ----------
    uvw : numpy.ndarray
        (n, 3) int axes.
    cubic : numpy.ndarray
        (n,) bool: the phase is cubic (permutations and sign changes of the indices are equivalent).
    """
    uvw = np.asarray(uvw, int)
    first = np.take_along_axis(uvw, np.argmax(uvw != 0, axis=1)[:, None], axis=1)
    out = uvw * np.where(first < 0, -1, 1)
    srt = -np.sort(-np.abs(uvw), axis=1)
    return np.where(np.asarray(cubic, bool)[:, None], srt, out)


def _draw_zone_axes(ax: Any, uvw: np.ndarray, matched: np.ndarray, n_named: int = 8,
                    cubic: np.ndarray | None = None) -> None:
    ok = matched & np.all(np.isfinite(uvw), axis=0)
    keys = np.round(uvw[:, ok]).astype(int).T
    if cubic is not None:
        keys = zone_axis_families(keys, cubic[ok])
    n_ok = int(ok.sum())
    index = np.zeros(matched.shape, int)
    named: list[tuple[tuple[int, int, int], int]] = []
    if n_ok:
        axes_, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        order = np.argsort(-counts, kind="stable")[: min(int(n_named), len(ZONE_AXIS_COLOURS))]
        flat = np.ones(n_ok, int)  # 1 other axes
        for i, j in enumerate(order):
            flat[inverse.reshape(-1) == j] = i + 2
            named.append((tuple(int(v) for v in axes_[j]), int(counts[j])))
        index[ok] = flat
    colours = [INVALID_COLOUR, OTHER_COLOUR, *ZONE_AXIS_COLOURS[: len(named)]]
    ax.imshow(index, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(colours) - 0.5, interpolation="nearest")
    ax.set_title("Zone axis of the matched phase\n(cubic: <uvw> families)")
    hide_ticks(ax)
    handles = [Patch(color=ZONE_AXIS_COLOURS[i], label=f"{_axis_label(a)}  {percent(k / n_ok, 0)}")
               for i, (a, k) in enumerate(named)]
    if np.any(index == 1):
        handles.append(Patch(color=OTHER_COLOUR, label=f"other  {percent(np.sum(index == 1) / n_ok, 0)}"))
    handles.append(Patch(facecolor=INVALID_COLOUR, edgecolor="#444444", linewidth=0.4, label=_NO_MATCH))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
              title=f"n = {n_ok:,} matched" if n_ok else None, alignment="left")


def phase_map_figure(
    maps: Any,
    n_named: int = 8,
    scores: bool | None = None,
    zone_axes: bool | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    scale_bar: bool = True,
    datacube: Any = None,
    math_symbols: bool = False,
) -> MapFigure:
    """Map of the identified phases with a legend of formulas, and (optionally) match scores and zone axes.

    Parameters
    ----------
    maps : py4DSTEM.RealSlice
        The maps returned by :func:`py4dstem_gnn.classify_braggvectors` with the match
        stage on: slice ``phase`` (index into the phase table, -1 no match) and the table
        in ``maps.metadata["py4dstem_gnn"]["phases"]`` (:func:`phase_table`); or a dict of
        arrays (with the table under ``"phases"``).
    n_named : int
        Most frequent phases given their own colour and legend entry (at most three per
        crystal system, whose hue they take); the others are "other phases".
    scores : bool, optional
        Add the map of ``match_score``. Default: when the maps have that slice.
    zone_axes : bool, optional
        Add the map of the zone axis ``[uvw]`` (slices ``zone_axis_u``, ``_v``, ``_w``).
        Default: when the maps have those slices.
    title : str, optional
    figsize : tuple of float, optional
        Default (7.2, 2.8) for two panels, (7.2, 5.0) for three or four (two rows).
    scale_bar : bool
        Draw a scale bar on the maps.
    datacube : py4DSTEM.DataCube, optional
        Only for its real-space calibration (scale bar), when the maps carry none.
    math_symbols : bool
        Typeset space-group symbols as in print rather than as plain text.

    Returns
    -------
    MapFigure
        Panels (axes in this order): phase map with the formulas (``"Au (225 Fm-3m)"``);
        share of each named phase among the matched positions (with their number); the
        match score (if ``scores``; grey where nothing matched); the zone axis (if
        ``zone_axes``).

    Raises
    ------
    TypeError
        If ``maps`` is not the maps returned by ``classify_braggvectors``, or has no
        ``phase`` slice (classified with the match stage off).
    """
    check_maps(maps, "phase_map_figure", ["phase"])
    phase = np.asarray(get_slice(maps, "phase"), float)
    phase = np.where(np.isfinite(phase), phase, -1).astype(int)
    matched = phase >= 0
    table = phase_table(maps)

    def has(label: str) -> bool:
        try:
            get_slice(maps, label)
            return True
        except KeyError:
            return False

    scores = has("match_score") if scores is None else bool(scores)
    zone_axes = all(has(f"zone_axis_{c}") for c in "uvw") if zone_axes is None else bool(zone_axes)
    n_panels = 2 + int(scores) + int(zone_axes)
    scale = real_space_scale(maps, datacube) if scale_bar else None

    with paper_style():
        fig = map_figure(figsize or ((PAGE_WIDTH_IN, 2.8) if n_panels == 2 else (PAGE_WIDTH_IN, 5.0)))
        if n_panels == 2:
            ax_phase, ax_bars = fig.subplots(1, 2)
            slots: list[Any] = []
        else:
            ax_phase, ax_bars, *slots = two_rows(fig, bottom=n_panels - 2)
        bars, _ordered = _draw_phase_map(ax_phase, phase, table, n_named, math_symbols)
        _draw_phase_bars(ax_bars, bars, int(matched.sum()), phase.size)
        axes = [ax_phase, ax_bars]
        maps_axes = [ax_phase]
        if scores:
            ax = slots.pop(0)
            _draw_scores(fig, ax, np.asarray(get_slice(maps, "match_score"), float), matched)
            axes.append(ax)
            maps_axes.append(ax)
        if zone_axes:
            ax = slots.pop(0)
            uvw = np.stack([np.asarray(get_slice(maps, f"zone_axis_{c}"), float) for c in "uvw"])
            cs_of = np.array([_crystal_system(r) if _crystal_system(r) is not None else -1 for r in table] or [-1])
            cubic = np.where(matched, cs_of[np.clip(phase, 0, len(cs_of) - 1)] == 6, False)
            _draw_zone_axes(ax, uvw, matched, cubic=cubic)
            axes.append(ax)
            maps_axes.append(ax)
        for ax, letter in zip(axes, "abcd"):
            panel_label(ax, letter)
        if scale is not None:
            for ax in maps_axes:
                add_scale_bar(ax, phase.shape[1], scale)
        if title:
            fig.suptitle(title)
    return fig
