"""Figures return matplotlib Figures; tiny synthetic scan end to end."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import re  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

py4DSTEM = pytest.importorskip("py4DSTEM")

from py4dstem_gnn.model import ModelConfig, PEAGGMoE  # noqa: E402
from py4dstem_gnn.plot import (  # noqa: E402
    CRYSTAL_SYSTEM_COLOURS,
    INVALID_COLOUR,
    OTHER_COLOUR,
    SPACE_GROUP_SHADES,
    MapFigure,
    crystal_system_figure,
    space_group_colours,
    space_group_figure,
    space_group_symbol,
    virtual_image,
)
from py4dstem_gnn.classify import SLICE_LABELS, classify_braggvectors  # noqa: E402
from py4dstem_gnn.data.synthetic import Particle, au_nanoparticle_scan, detect_braggvectors  # noqa: E402


def _maps_dict(shape=(12, 10), seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cs = rng.integers(-1, 7, shape)
    sg_of = np.array([1, 14, 62, 139, 166, 194, 225])
    sg = np.where(cs >= 0, sg_of[np.clip(cs, 0, 6)], -1)
    return {"crystal_system": cs, "space_group": sg, "intensity": rng.random(shape)}


def test_crystal_system_figure_from_dict():
    fig = crystal_system_figure(_maps_dict(), title="t")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    # the bars use the fixed colours
    bars = fig.axes[2].patches
    assert len(bars) == 7
    np.testing.assert_allclose(bars[6].get_facecolor()[:3], matplotlib.colors.to_rgb(CRYSTAL_SYSTEM_COLOURS[6]))
    fig.savefig(__import__("io").BytesIO(), format="png")


def test_crystal_system_figure_shows_the_sets_beside_the_map():
    maps = _maps_dict()
    cs = maps["crystal_system"]
    maps["cs_set"] = np.where(cs >= 0, 1 << np.clip(cs, 0, 6), 0) | np.where(cs == 3, 1 << 6, 0)  # tetragonal | cubic
    fig = crystal_system_figure(maps)
    assert len(fig.axes) == 4
    assert fig.axes[2].get_title().startswith("Crystal-system set")
    legend = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert any("tetr | cub" in t for t in legend)
    assert len(fig.axes[3].patches) == 7  # the distribution moves right
    assert len(crystal_system_figure(maps, sets=False).axes) == 3
    fig.savefig(__import__("io").BytesIO(), format="png")


def test_space_group_figure_and_symbols():
    fig = space_group_figure(_maps_dict(), n_named=3)
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert len(labels) == 3
    assert space_group_symbol(225) == "225 Fm-3m"
    assert space_group_symbol(225, math=True) == r"225 $Fm\bar{3}m$"
    assert space_group_symbol(194, math=True) == "194 $P6_3/mmc$"
    all_invalid = {"crystal_system": -np.ones((4, 4), int), "space_group": -np.ones((4, 4), int), "intensity": np.zeros((4, 4))}
    assert isinstance(space_group_figure(all_invalid), Figure)
    assert isinstance(crystal_system_figure(all_invalid), Figure)


# --- display in Jupyter ---------------------------------------------------------------


def test_figures_render_themselves_as_png():
    fig = crystal_system_figure(_maps_dict())
    assert isinstance(fig, MapFigure)
    png = fig._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert space_group_figure(_maps_dict())._repr_png_()[:4] == b"\x89PNG"


def test_ipython_displays_the_figure_not_its_repr():
    """What Jupyter shows for a figure that is the last expression of a cell."""
    formatters = pytest.importorskip("IPython.core.formatters")
    data, _ = formatters.DisplayFormatter().format(crystal_system_figure(_maps_dict()))
    assert "image/png" in data


# --- colours -----------------------------------------------------------------------------

# Machado, Oliveira & Fernandes (2009), severity 1.0, on linear RGB
_CVD = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
    "normal": np.eye(3).tolist(),
}


def _lab(colour: str, matrix) -> np.ndarray:
    c = np.asarray(matplotlib.colors.to_rgb(colour))
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    lin = np.clip(np.asarray(matrix) @ lin, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _min_distance(colours) -> float:
    out = np.inf
    for matrix in _CVD.values():
        labs = [_lab(c, matrix) for c in colours]
        for i in range(len(labs)):
            for j in range(i + 1, len(labs)):
                out = min(out, float(np.linalg.norm(labs[i] - labs[j])))
    return out


def test_crystal_system_colours_are_colour_blind_safe():
    assert len(set(CRYSTAL_SYSTEM_COLOURS)) == 7 and INVALID_COLOUR not in CRYSTAL_SYSTEM_COLOURS
    assert _min_distance([*CRYSTAL_SYSTEM_COLOURS, INVALID_COLOUR]) >= 10.0
    # matplotlib's tab10 (the scheme before) fails the same check
    tab = ["#8c564b", "#e377c2", "#2ca02c", "#ff7f0e", "#9467bd", "#1f77b4", "#d62728"]
    assert _min_distance(tab) < 10.0


def test_space_group_colours_keep_the_crystal_system_hue():
    from py4dstem_gnn.labels import SPACE_GROUP_RANGES

    for cs, (lo, hi) in enumerate(SPACE_GROUP_RANGES):
        numbers = list(range(lo, hi + 1))[: len(SPACE_GROUP_SHADES) + 1]
        colours = space_group_colours(numbers)
        named = [c for c in colours if c is not None]
        assert colours[0].lower() == CRYSTAL_SYSTEM_COLOURS[cs].lower()
        assert len(named) == min(len(numbers), len(SPACE_GROUP_SHADES))
        if len(numbers) > len(SPACE_GROUP_SHADES):
            assert colours[-1] is None  # past the last shade: "other"
        hue = matplotlib.colors.rgb_to_hsv(matplotlib.colors.to_rgb(CRYSTAL_SYSTEM_COLOURS[cs]))[0]
        for c in named:
            assert abs(matplotlib.colors.rgb_to_hsv(matplotlib.colors.to_rgb(c))[0] - hue) < 0.01
        # one system's shades, invalid and "other" stay apart for colour-blind readers
        assert _min_distance([*named, INVALID_COLOUR, OTHER_COLOUR]) >= 10.0


def test_space_group_figure_uses_the_crystal_system_scheme():
    sg = np.array([[225] * 5 + [221] * 4 + [229] * 3 + [223] * 2 + [194] + [-1]])
    fig = space_group_figure({"space_group": sg}, n_named=8)
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    # the fourth cubic group (223) is "other": three shades per system
    assert labels == ["225 Fm-3m", "221 Pm-3m", "229 Im-3m", "194 P6_3/mmc"]
    bars = fig.axes[1].patches
    np.testing.assert_allclose(bars[0].get_facecolor()[:3], matplotlib.colors.to_rgb(CRYSTAL_SYSTEM_COLOURS[6]))
    np.testing.assert_allclose(bars[3].get_facecolor()[:3], matplotlib.colors.to_rgb(CRYSTAL_SYSTEM_COLOURS[5]))
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[-2:] == ["other", "not labelled"]


def test_virtual_image_shape():
    data = np.zeros((3, 4, 16, 16), np.float32)
    data[..., 0, 0] = 1.0  # far from the centre: inside the default annulus
    data[..., 8, 8] = 100.0  # direct beam: excluded
    img = virtual_image(data)
    assert img.shape == (3, 4)
    np.testing.assert_allclose(img, 0.0)  # (0,0) lies at radius 11.3 > outer 8
    img = virtual_image(data, inner=2, outer=12)
    np.testing.assert_allclose(img, 1.0)


@pytest.fixture(scope="module")
def tiny_scan():
    particles = [Particle((4.0, 4.0), 4.0, (1, 1, 0), 10.0), Particle((11.0, 11.0), 4.0, (1, 1, 1), 0.0)]
    return au_nanoparticle_scan(scan_shape=(16, 16), qshape=(96, 96), q_pixel_size=0.028, particles=particles, seed=1)


def test_tiny_synthetic_scan_end_to_end(tiny_scan, tmp_path):
    scan = tiny_scan
    assert scan.datacube.data.shape == (16, 16, 96, 96)
    bv = detect_braggvectors(scan.datacube, scan.disk_radius, scan.q_pixel_size)
    # the origin fit lands near the true (drifting) beam position
    qx0, qy0 = bv.calibration.get_origin()
    assert np.abs(np.asarray(qx0) - scan.origin[0]).max() < 0.5
    assert np.abs(np.asarray(qy0) - scan.origin[1]).max() < 0.5
    torch.manual_seed(0)
    net = PEAGGMoE(ModelConfig(feature_dim=16, encoder_layers=1, hidden_dim=16, n_layers=1, n_heads=2, ffn_dim=16, n_experts=2, top_k=1))
    maps = classify_braggvectors(bv, model=net, progress=False, median_filter=3, phases=None)
    assert list(maps.slicelabels) == list(SLICE_LABELS)
    n_spots = maps.get_slice("n_spots").data
    on = scan.particle_map >= 0
    # the particles' centres show many diffracted spots, the support none
    assert n_spots[4, 4] >= 10 and n_spots[11, 11] >= 6
    assert np.all(n_spots[~on] <= 2)
    valid = maps.get_slice("valid").data > 0
    assert not valid[~on].any()
    fig = crystal_system_figure(maps, datacube=scan.datacube)
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 1000
    assert isinstance(space_group_figure(maps), Figure)


# --- journal layout, scale bar, output ---------------------------------------------------------


def _calibrated_maps(shape=(40, 50), pixel=2.0, units="A"):
    m = _maps_dict(shape)
    maps = py4DSTEM.RealSlice(data=np.stack([m["crystal_system"], m["space_group"], m["intensity"]]).astype(np.float32),
                              slicelabels=["crystal_system", "space_group", "intensity"])
    maps.calibration.set_R_pixel_size(pixel)
    maps.calibration.set_R_pixel_units(units)
    return maps


def _texts(fig) -> list:
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip() and t.get_visible()]


@pytest.mark.parametrize("kind", ["crystal_system", "crystal_system_sets", "space_group"])
def test_figures_fit_a_journal_page_with_legible_text(kind):
    maps = _maps_dict((40, 50))
    if kind == "crystal_system_sets":
        maps["cs_set"] = np.where(maps["crystal_system"] >= 0, 1 << np.clip(maps["crystal_system"], 0, 6), 0)
    fig = space_group_figure(maps) if kind == "space_group" else crystal_system_figure(maps)
    assert len(fig.axes) == {"crystal_system": 3, "crystal_system_sets": 4, "space_group": 2}[kind]
    width, height = fig.get_size_inches()
    assert width <= 7.2 and height <= 9.0
    sizes = [t.get_fontsize() for t in _texts(fig)]
    assert min(sizes) >= 6.5  # value labels 7 pt, all else 7-9 pt
    for legend in [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        assert min(t.get_fontsize() for t in legend.get_texts()) >= 7
    texts = " ".join(t.get_text() for t in _texts(fig))
    assert "n = " in texts and " of 2,000" in texts  # the denominator is stated
    assert all(ax.get_title() for ax in fig.axes)  # every panel titled
    # every share is given in %
    assert not re.search(r"\b\d+\.\d\b(?! %)", texts), texts


def test_scale_bar_in_the_calibrated_units():
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    fig = crystal_system_figure(_calibrated_maps(shape=(40, 50), pixel=2.0, units="A"))
    bars = [a for ax in fig.axes for a in ax.artists if isinstance(a, AnchoredSizeBar)]
    assert len(bars) == 2  # image and map
    label = bars[0].txt_label.get_text()
    assert label == "2 nm"  # 50 positions x 2 A = 10 nm wide: a quarter, rounded down to 1-2-5
    fig = crystal_system_figure(_maps_dict((40, 50)))  # no calibration: scan pixels
    bars = [a for ax in fig.axes for a in ax.artists if isinstance(a, AnchoredSizeBar)]
    assert bars[0].txt_label.get_text() == "10 px"


def test_scale_bar_from_the_datacube_when_the_maps_have_none():
    from py4dstem_gnn.plot_tools import real_space_scale

    cube = py4DSTEM.DataCube(data=np.zeros((4, 5, 8, 8), np.float32))
    cube.calibration.set_R_pixel_size(1.5)
    cube.calibration.set_R_pixel_units("nm")
    assert real_space_scale(_maps_dict(), cube) == (1.5, "nm")
    assert real_space_scale(_calibrated_maps(pixel=3.0, units="A"), cube) == (3.0, "Å")
    assert real_space_scale(None, _maps_dict()) == (1.0, "px")


def test_save_figure_writes_png_and_pdf(tmp_path):
    from py4dstem_gnn.plot import save_figure

    paths = save_figure(crystal_system_figure(_maps_dict()), tmp_path / "sub" / "fig2.png")
    assert [p.name for p in paths] == ["fig2.png", "fig2.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:4] == b"%PDF"
    (svg,) = save_figure(space_group_figure(_maps_dict()), tmp_path / "sg", formats=("svg",))
    assert "<svg" in svg.read_text()[:500]


def test_percent_labels():
    from py4dstem_gnn.plot_tools import percent

    assert [percent(x) for x in (1.0, 0.0, 0.5, 0.8263, 0.03)] == ["100 %", "0 %", "50.0 %", "82.6 %", "3.0 %"]


# --- wrong input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["crystal_system_figure", "space_group_figure", "prediction_set_figure", "phase_map_figure"])
def test_figures_refuse_braggvectors_with_what_to_pass(name):
    from py4dstem_gnn import plot
    from py4dstem_gnn.data.synthetic import random_braggvectors

    bv = random_braggvectors((2, 3), spots=(4, 6), seed=0)
    with pytest.raises(TypeError, match="pass the maps returned by classify_braggvectors"):
        getattr(plot, name)(bv)
    with pytest.raises(TypeError, match="pass the maps returned by classify_braggvectors"):
        getattr(plot, name)(np.zeros((3, 3)))


# --- phase map -----------------------------------------------------------------------------------


def _phase_maps(table, shape=(30, 40), with_extras=True):
    rng = np.random.default_rng(0)
    phase = np.full(shape, -1)
    phase[:, :15] = 0
    phase[:, 15:30] = 1
    phase[5:10, 20:25] = 2
    labels, slices = ["phase"], [phase]
    if with_extras:
        score = np.where(phase >= 0, rng.random(shape), np.nan)
        uvw = np.zeros((3,) + shape)
        uvw[:, phase >= 0] = np.array([1, 1, 0])[:, None]
        uvw[:, :, :8] = np.array([0, 0, 1])[:, None, None]
        labels += ["match_score", "zone_axis_u", "zone_axis_v", "zone_axis_w"]
        slices += [score, *uvw]
    maps = py4DSTEM.RealSlice(data=np.stack(slices).astype(np.float32), slicelabels=labels)
    from emdfile import Metadata

    maps.metadata = Metadata(name="py4dstem_gnn", data={"phases": table})
    return maps


ROWS = [
    {"formula": "Au", "space_group": 225, "crystal_system": 6, "source": "oqmd-1"},
    {"formula": "TiO2", "space_group": 136, "crystal_system": 3, "source": "rutile.cif"},
    {"formula": "ZnO", "space_group": 186, "crystal_system": 5, "source": "oqmd-3"},
]


def test_phase_table_as_the_parallel_lists_of_classify_braggvectors():
    from emdfile import Metadata
    from py4dstem_gnn.plot_phase import phase_table

    maps = _phase_maps(None, with_extras=False)
    maps.metadata = Metadata(name="py4dstem_gnn", data={f"phase_{k}": [r[k] for r in ROWS] for k in ROWS[0]})
    assert phase_table(maps) == ROWS
    assert phase_table({"phase": np.zeros((2, 2)), "phase_formula": ["Au"], "phase_space_group": [225]}) == [
        {"formula": "Au", "space_group": 225}]


@pytest.mark.parametrize("table", [
    ROWS,
    {k: np.array([r[k] for r in ROWS]) for k in ROWS[0]},  # columns, as Metadata may give them back
    {k: [r[k] for r in ROWS] for k in ROWS[0]},
    {str(i): r for i, r in enumerate(ROWS)},
])
def test_phase_table_is_read_whatever_its_shape(table):
    from py4dstem_gnn.plot_phase import phase_table

    rows = phase_table(_phase_maps(table, with_extras=False))
    assert [r["formula"] for r in rows] == ["Au", "TiO2", "ZnO"]
    assert [int(r["space_group"]) for r in rows] == [225, 136, 186]


def test_phase_map_figure_with_scores_and_zone_axes():
    from py4dstem_gnn.plot import phase_map_figure

    fig = phase_map_figure(_phase_maps(ROWS))
    assert len([ax for ax in fig.axes if ax.get_title()]) == 4
    assert fig.get_size_inches()[0] <= 7.2
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["Au (225 Fm-3m)", "TiO2 (136 P4_2/mnm)", "ZnO (186 P6_3mc)", "no match"]
    bar_labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert bar_labels == legend[:3]
    assert "n = 900 matched of 1,200 positions" in fig.axes[1].get_xlabel()
    zone_legend = " ".join(t.get_text() for t in fig.axes[3].get_legend().get_texts())
    assert "[100]" in zone_legend and "[110]" in zone_legend  # cubic axes grouped into families (<001> -> [100])
    assert fig._repr_png_()[:4] == b"\x89PNG"


def test_phase_map_figure_without_a_table_or_extras():
    from py4dstem_gnn.plot import phase_map_figure

    maps = {"phase": np.array([[0, 0, -1], [1, -1, -1]])}
    fig = phase_map_figure(maps)
    assert len(fig.axes) == 2
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[:2] == ["phase 0", "phase 1"] or "other phases" in legend
    empty = phase_map_figure({"phase": -np.ones((4, 4), int)})
    assert isinstance(empty, Figure)


def test_phase_map_after_a_round_trip_through_py4dstem_save(tmp_path):
    """The table as columns of lists survives py4DSTEM.save / read (a list of dicts would not save)."""
    from py4dstem_gnn.plot import phase_map_figure
    from py4dstem_gnn.plot_phase import phase_table
    from py4dstem_gnn.progress import quiet_py4dstem

    columns = {k: [r[k] for r in ROWS] for k in ROWS[0]}
    maps = _phase_maps(columns)
    with quiet_py4dstem():
        py4DSTEM.save(str(tmp_path / "m.h5"), maps, mode="o")
        back = py4DSTEM.read(str(tmp_path / "m.h5"))
    assert [r["formula"] for r in phase_table(back)] == ["Au", "TiO2", "ZnO"]
    legend = [t.get_text() for t in phase_map_figure(back).axes[0].get_legend().get_texts()]
    assert legend[0] == "Au (225 Fm-3m)"
