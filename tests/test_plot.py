"""Figures return matplotlib Figures; tiny synthetic scan end to end."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

py4DSTEM = pytest.importorskip("py4DSTEM")

from py4dstem_gnn.model import ModelConfig, PEAGGMoE  # noqa: E402
from py4dstem_gnn.plot import (  # noqa: E402
    CRYSTAL_SYSTEM_COLORS,
    crystal_system_figure,
    space_group_figure,
    space_group_symbol,
    virtual_image,
)
from py4dstem_gnn.py4dstem import SLICE_LABELS, classify_braggvectors  # noqa: E402
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
    np.testing.assert_allclose(bars[6].get_facecolor()[:3], matplotlib.colors.to_rgb(CRYSTAL_SYSTEM_COLORS[6]))
    fig.savefig(__import__("io").BytesIO(), format="png")


def test_space_group_figure_and_symbols():
    fig = space_group_figure(_maps_dict(), n_named=3)
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert len(labels) == 3
    assert space_group_symbol(225) in ("225 Fm-3m", "225")
    all_invalid = {"crystal_system": -np.ones((4, 4), int), "space_group": -np.ones((4, 4), int), "intensity": np.zeros((4, 4))}
    assert isinstance(space_group_figure(all_invalid), Figure)
    assert isinstance(crystal_system_figure(all_invalid), Figure)


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
    maps = classify_braggvectors(bv, model=net, progress=False, median_filter=3)
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
