"""classify_braggvectors: calibration, direct beam, filters, slices, py4DSTEM round trip."""

from __future__ import annotations

import functools

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch

py4DSTEM = pytest.importorskip("py4DSTEM")

from py4dstem_gnn.features import split_direct_beam  # noqa: E402
from py4dstem_gnn.labels import SG_TO_CS  # noqa: E402
from py4dstem_gnn.model import ModelOutput  # noqa: E402
from py4dstem_gnn.classify import (  # noqa: E402
    SLICE_LABELS,
    calibrated_vectors,
    classify_braggvectors,
    majority_filter,
    remove_direct_beam,
)
from py4dstem_gnn.data.synthetic import braggvectors_from_pointlists, random_braggvectors  # noqa: E402
from py4dstem_gnn.toy import tiny_model

# these tests exercise the network stage: the match stage (phases='pool' by default) is tested in test_matching.py
classify_braggvectors = functools.partial(classify_braggvectors, phases=None)

QPIX = 0.02
ORIGIN = (64.4, 63.2)


class CountingModel(torch.nn.Module):
    """Deterministic stand-in: crystal system = (number of spots) mod 7.

    The space-group head always prefers space group 1 overall (so consistency with
    the crystal system must be enforced by the caller), and within each system the
    last space group of its range.
    """

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(max_spots=32)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, spots: torch.Tensor, mask: torch.Tensor) -> ModelOutput:
        n = mask.sum(dim=1)
        cs = torch.nn.functional.one_hot(n % 7, 7).float() * 6.0
        sg = torch.zeros(spots.shape[0], 230)
        ends = torch.tensor([2, 15, 74, 142, 167, 194, 230]) - 1
        sg[:, ends] = 2.0
        sg[:, 0] = 5.0
        return ModelOutput(cs, sg, torch.zeros(()))




def _pattern(n_diffracted: int, rng: np.random.Generator, beam_offset=(0.0, 0.0)) -> np.ndarray:
    """Pixel pointlist: direct beam near ORIGIN (+offset) and n diffracted spots."""
    ang = rng.uniform(0, 2 * np.pi, n_diffracted)
    r = rng.uniform(15, 55, n_diffracted)
    spots = np.stack([ORIGIN[0] + r * np.cos(ang), ORIGIN[1] + r * np.sin(ang), rng.uniform(1, 5, n_diffracted)], 1)
    # the direct beam is NOT the brightest spot here: removal must be by position
    beam = np.array([[ORIGIN[0] + beam_offset[0], ORIGIN[1] + beam_offset[1], 3.0]])
    both = np.concatenate([spots, beam]) if n_diffracted % 2 else np.concatenate([beam, spots])
    return both


@pytest.fixture(scope="module")
def counts_map() -> np.ndarray:
    # 6 x 7 scan: counts of diffracted spots; 0 = empty position
    return np.array(
        [
            [6, 6, 6, 6, 0, 2, 9],
            [6, 6, 6, 13, 13, 13, 9],
            [6, 6, 6, 13, 13, 13, 9],
            [0, 0, 4, 13, 13, 13, 9],
            [10, 10, 10, 10, 6, 6, 9],
            [10, 10, 10, 10, 6, 6, 9],
        ]
    )


@pytest.fixture(scope="module")
def hand_bv(counts_map):
    rng = np.random.default_rng(1)
    pls = []
    for p, n in enumerate(counts_map.ravel()):
        if n == 0 and p % 2:
            pls.append(np.zeros((0, 3)))  # truly empty position (no beam)
        elif n == 0:
            pls.append(_pattern(0, rng))  # beam only
        else:
            pls.append(_pattern(int(n), rng, beam_offset=(1.0, -0.8)))  # beam off-centre by ~1.3 px
    bv = braggvectors_from_pointlists(pls, counts_map.shape, (128, 128))
    bv.calibration.set_origin(ORIGIN)
    bv.calibration.set_Q_pixel_size(QPIX)
    bv.calibration.set_Q_pixel_units("A^-1")
    bv.setcal()
    return bv


def _cal_equal(bv) -> None:
    rv = calibrated_vectors(bv)
    rx_n, ry_n = bv.Rshape
    for rx in range(rx_n):
        for ry in range(ry_n):
            ref = bv.cal[rx, ry]
            got = rv.at(rx, ry)
            np.testing.assert_allclose(got[:, 0], ref.qx, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(got[:, 1], ref.qy, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(got[:, 2], ref.I, rtol=0, atol=0)


def test_fast_calibration_equals_bv_cal_origin_pixel(hand_bv):
    _cal_equal(hand_bv)


@pytest.mark.parametrize("flip", [False, True])
def test_fast_calibration_equals_bv_cal_all_calibrations(flip):
    bv = random_braggvectors((5, 4), spots=(0, 8), qshape=(128, 128), q_pixel_size=0.015, origin=(64, 64), seed=3)
    shape = bv.Rshape
    rng = np.random.default_rng(0)
    cal = bv.calibration
    # per-position origin and ellipse, scalar rotation
    cal.set_origin((64 + rng.normal(0, 1, shape), 64 + rng.normal(0, 1, shape)))
    cal.set_ellipse((1.0 + 0.05 * rng.random(shape), 0.95 + 0.05 * rng.random(shape), rng.uniform(0, np.pi, shape)))
    cal.set_QR_rotation_degrees(17.0)
    cal.set_QR_flip(flip)
    bv.setcal()
    assert all(bv.calstate.values())
    _cal_equal(bv)


def test_uncalibrated_raises_with_missing_names():
    bv = random_braggvectors((3, 3), spots=(5, 8), calibrate=False)
    with pytest.raises(ValueError, match="origin") as err:
        classify_braggvectors(bv, model=CountingModel(), progress=False)
    assert "Q pixel size" in str(err.value)
    bv.calibration.set_origin((128.3, 127.6))
    with pytest.raises(ValueError, match="Q pixel size"):
        classify_braggvectors(bv, model=CountingModel(), progress=False)


def test_raw_vectors_opt_in_matches_calibrated():
    bv_raw = random_braggvectors((4, 4), spots=(6, 12), calibrate=False, seed=5)
    bv_cal = random_braggvectors((4, 4), spots=(6, 12), calibrate=True, seed=5)
    kw = dict(model=CountingModel(), progress=False, median_filter=None, confidence_threshold=0)
    with pytest.raises(ValueError, match="q_pixel_size"):
        classify_braggvectors(bv_raw, raw_vectors=True, **kw)
    a = classify_braggvectors(bv_raw, raw_vectors=True, q_pixel_size=0.01, origin=(128.3, 127.6), **kw)
    b = classify_braggvectors(bv_cal, **kw)
    np.testing.assert_array_equal(a.data, b.data)


def test_direct_beam_removed_by_position(hand_bv, counts_map):
    rv = calibrated_vectors(hand_bv)
    diff, removed = remove_direct_beam(rv, tolerance=0.05)
    has_any = rv.counts.reshape(counts_map.shape) > 0
    np.testing.assert_array_equal(removed, has_any)
    np.testing.assert_array_equal(diff.counts.reshape(counts_map.shape), counts_map)
    # same rule as features.split_direct_beam at every position
    for rx in range(counts_map.shape[0]):
        for ry in range(counts_map.shape[1]):
            ref, _ = split_direct_beam(rv.at(rx, ry).astype(np.float32), tolerance=0.05)
            np.testing.assert_allclose(diff.at(rx, ry), ref, rtol=1e-6)
    # a tolerance smaller than the beam offset (1.3 px * 0.02 = 0.026 1/A) keeps the beam
    _, removed_tight = remove_direct_beam(rv, tolerance=0.01)
    assert not removed_tight[counts_map > 0].any()


def test_slices_labels_and_filters(hand_bv, counts_map):
    maps = classify_braggvectors(
        hand_bv, model=CountingModel(), progress=False, min_spots=5, median_filter=None, confidence_threshold=0.0
    )
    assert isinstance(maps, py4DSTEM.RealSlice)
    assert list(maps.slicelabels) == list(SLICE_LABELS)
    assert maps.data.dtype == np.float32
    assert maps.data.shape == (len(SLICE_LABELS),) + counts_map.shape
    n_spots = maps.get_slice("n_spots").data
    np.testing.assert_array_equal(n_spots, counts_map)
    cs = maps.get_slice("crystal_system").data
    sg = maps.get_slice("space_group").data
    valid = counts_map >= 5
    np.testing.assert_array_equal(maps.get_slice("valid").data, valid)
    np.testing.assert_array_equal(cs[~valid], -1)
    np.testing.assert_array_equal(sg[~valid], -1)
    # CountingModel: model sees min(n, max_spots=32) spots -> cs = n % 7
    np.testing.assert_array_equal(cs[valid], counts_map[valid] % 7)
    # space group is the last of its crystal system's range, never the overall argmax 1
    ends = np.array([2, 15, 74, 142, 167, 194, 230])
    np.testing.assert_array_equal(sg[valid], ends[(counts_map[valid] % 7)])
    np.testing.assert_array_equal(SG_TO_CS[sg[valid].astype(int) - 1], cs[valid])
    conf = maps.get_slice("confidence").data
    assert np.all((conf[valid] > 0.9) & (conf[valid] <= 1))
    np.testing.assert_array_equal(conf[~valid], 0)
    probs = np.stack([maps.get_slice(f"p_{n}").data for n in ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")])
    np.testing.assert_allclose(probs[:, valid].sum(axis=0), 1, rtol=1e-5)
    np.testing.assert_array_equal(np.argmax(probs, 0)[valid], cs[valid])
    inten = maps.get_slice("intensity").data
    rv = calibrated_vectors(hand_bv)
    for rx, ry in [(0, 0), (3, 0), (2, 5)]:
        assert inten[rx, ry] == pytest.approx(rv.at(rx, ry)[:, 2].sum(), rel=1e-5)


def test_majority_filter_end_to_end(hand_bv, counts_map):
    maps = classify_braggvectors(
        hand_bv, model=CountingModel(), progress=False, min_spots=5, median_filter=3, confidence_threshold=0.0
    )
    cs = maps.get_slice("crystal_system").data
    raw = maps.get_slice("crystal_system_raw").data
    np.testing.assert_array_equal(raw[counts_map >= 5], counts_map[counts_map >= 5] % 7)
    # the lone 4-spot (invalid) position stays invalid; invalid positions are not filled
    assert cs[3, 2] == -1 and cs[0, 4] == -1
    # (1,3) is a 13-spot position at the corner of the 13 block next to 6s and a 9 -> its
    # 3x3 window: valid neighbours 6,6 (2x), 13 (4 with itself), 9... check against the reference filter
    ref = majority_filter(raw.astype(int), raw >= 0, 3)
    np.testing.assert_array_equal(cs, ref)
    sg = maps.get_slice("space_group").data
    valid = cs >= 0
    np.testing.assert_array_equal(SG_TO_CS[sg[valid].astype(int) - 1], cs[valid])


def test_confidence_threshold():
    bv = random_braggvectors((4, 4), spots=(6, 10), seed=2)
    net = tiny_model()
    a = classify_braggvectors(bv, model=net, progress=False, median_filter=None, confidence_threshold=0)
    conf = a.get_slice("confidence").data
    thr = float(np.median(conf))
    b = classify_braggvectors(bv, model=net, progress=False, median_filter=None, confidence_threshold=thr)
    cs = b.get_slice("crystal_system").data
    np.testing.assert_array_equal(cs >= 0, conf >= thr)
    np.testing.assert_array_equal(b.get_slice("valid").data, conf >= thr)


def test_majority_filter_reference():
    labels = np.array(
        [
            [1, 1, 2, 2],
            [1, 3, 2, 2],
            [1, 1, 2, 5],
            [4, 4, 4, 4],
        ]
    )
    valid = np.ones_like(labels, bool)
    valid[0, 0] = False
    out = majority_filter(labels, valid, 3)
    assert out[0, 0] == -1
    assert out[1, 1] == 1  # window holds 1 x4 valid, 2 x2, 3, 4 ... -> 1
    assert out[2, 3] == 2
    assert out[3, 0] == 4  # window: 1,1 / 4,4 -> tie, own label wins
    # brute-force reference
    ref = np.full_like(labels, -1)
    for i in range(4):
        for j in range(4):
            if not valid[i, j]:
                continue
            win = [(labels[a, b]) for a in range(max(i - 1, 0), min(i + 2, 4)) for b in range(max(j - 1, 0), min(j + 2, 4)) if valid[a, b]]
            vals, cnt = np.unique(win, return_counts=True)
            best = vals[cnt == cnt.max()]
            ref[i, j] = labels[i, j] if labels[i, j] in best else best.min()
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(majority_filter(labels, valid, 1), np.where(valid, labels, -1))


def test_batch_size_independence():
    bv = random_braggvectors((6, 6), spots=(3, 40), seed=4)
    net = tiny_model(1)
    kw = dict(model=net, progress=False, median_filter=None, confidence_threshold=0)
    a = classify_braggvectors(bv, batch_size=1, **kw)
    b = classify_braggvectors(bv, batch_size=7, **kw)
    c = classify_braggvectors(bv, batch_size=None, **kw)
    np.testing.assert_allclose(a.data, b.data, atol=2e-5)
    np.testing.assert_allclose(a.data, c.data, atol=2e-5)


def test_all_empty_scan():
    bv = braggvectors_from_pointlists([np.zeros((0, 3))] * 4, (2, 2))
    bv.calibration.set_origin((64, 64))
    bv.calibration.set_Q_pixel_size(0.02)
    maps = classify_braggvectors(bv, model=CountingModel(), progress=False)
    np.testing.assert_array_equal(maps.get_slice("crystal_system").data, -1)
    np.testing.assert_array_equal(maps.get_slice("n_spots").data, 0)


def test_bad_arguments(hand_bv):
    with pytest.raises(ValueError):
        classify_braggvectors(hand_bv, model=CountingModel(), median_filter=0, progress=False)
    with pytest.raises(TypeError):
        classify_braggvectors(np.zeros((3, 3)), model=CountingModel(), progress=False)


def test_attach_save_read_fresh_interpreter(hand_bv, tmp_path):
    maps = classify_braggvectors(hand_bv.copy(name="bv"), model=tiny_model(), progress=False, median_filter=3)
    bv = hand_bv.copy(name="braggvectors")
    bv.attach(maps)
    path = tmp_path / "maps.h5"
    py4DSTEM.save(str(path), bv, mode="o")
    np.save(tmp_path / "expected.npy", maps.data)
    code = textwrap.dedent(
        f"""
        import sys, numpy as np, py4DSTEM
        root = py4DSTEM.read({str(path)!r})
        m = root.tree("crystal_maps")
        assert type(m).__name__ == "RealSlice", type(m)
        np.testing.assert_array_equal(m.data, np.load({str(tmp_path / 'expected.npy')!r}))
        assert list(m.slicelabels) == {list(SLICE_LABELS)!r}
        md = m.metadata["py4dstem_gnn"]
        assert md["min_spots"] == 5 and md["median_filter"] == 3
        assert "py4dstem_gnn" not in sys.modules
        print("OK")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "OK" in res.stdout


def test_cli_classify(hand_bv, tmp_path, monkeypatch):
    import argparse

    from py4dstem_gnn import classify_cli as mod

    src = tmp_path / "bv.h5"
    py4DSTEM.save(str(src), hand_bv.copy(name="braggvectors"), mode="o")
    parser = argparse.ArgumentParser()
    mod.configure_parser(parser)
    args = parser.parse_args([str(src), "--figure", str(tmp_path / "fig.png"), "--no-progress", "--median-filter", "3", "--phases", "none"])
    monkeypatch.setattr(args, "model", CountingModel(), raising=False)
    assert mod.run_cli(args) == 0
    back = py4DSTEM.read(str(tmp_path / "bv_maps.h5"))
    maps = back.tree("crystal_maps")
    assert list(maps.slicelabels) == list(SLICE_LABELS)
    assert (tmp_path / "fig.png").stat().st_size > 1000


# --- input type and command line (issue 15) --------------------------------------------


@pytest.mark.parametrize(
    "make, got, hint",
    [
        (lambda: py4DSTEM.DataCube(data=np.zeros((2, 2, 8, 8), np.float32)), "DataCube", "find_Bragg_disks"),
        (lambda: np.zeros((3, 3)), "ndarray", "predict_pointlists"),
        (lambda: [np.zeros((4, 3))], "list", "predict_pointlists"),
        (lambda: "scan.h5", "str", "py4DSTEM.read"),
        (lambda: py4DSTEM.RealSlice(data=np.zeros((1, 2, 2), np.float32), slicelabels=["a"]), "RealSlice", "BraggVectors itself"),
    ],
)
def test_non_braggvectors_refused_with_one_line(make, got, hint):
    """A DataCube (it has .calibration, and Rshape) used to pass a duck-type check and fail deep inside."""
    with pytest.raises(TypeError) as err:
        classify_braggvectors(make(), model=CountingModel(), progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"classify_braggvectors needs a py4DSTEM BraggVectors (got {got})")
    assert hint in msg


def _classify_cli(hand_bv, tmp_path, extra: list[str]):
    import argparse

    from py4dstem_gnn import classify_cli as mod

    from py4dstem_gnn.progress import quiet_py4dstem

    src = tmp_path / "bv.h5"
    with quiet_py4dstem():  # only the command's own output counts
        py4DSTEM.save(str(src), hand_bv.copy(name="braggvectors"), mode="o")
    parser = argparse.ArgumentParser()
    mod.configure_parser(parser)
    args = parser.parse_args([str(src), "--median-filter", "3", *extra])
    args.model = CountingModel()
    return mod.run_cli(args)


def test_cli_classify_logs_success_at_info(hand_bv, tmp_path, caplog, capfd):
    import logging

    with caplog.at_level(logging.INFO, logger="py4dstem_gnn"):
        assert _classify_cli(hand_bv, tmp_path, []) == 0
    wrote = [r for r in caplog.records if r.getMessage().startswith("wrote ")]
    assert wrote and all(r.levelno == logging.INFO for r in wrote)
    # without --no-progress, py4DSTEM's own bars (reading/saving the PointListArray) are drawn
    assert "PointList" in capfd.readouterr().err


@pytest.mark.parametrize("flag", ["--no-progress", "--quiet"])
def test_cli_no_progress_silences_py4dstem_bars(hand_bv, tmp_path, capfd, flag):
    capfd.readouterr()
    assert _classify_cli(hand_bv, tmp_path, [flag]) == 0
    err = capfd.readouterr().err
    assert "%|" not in err and "PointList" not in err, err[-500:]
    assert (tmp_path / "bv_maps.h5").is_file()


def test_readme_quick_start_recipe_runs(tmp_path):
    """The README's probe-kernel recipe, on py4DSTEM's real API, from a DataCube to maps."""
    from py4dstem_gnn.data.synthetic import Particle, au_nanoparticle_scan
    from py4dstem_gnn.progress import quiet_py4dstem

    particles = [Particle((4.0, 4.0), 4.0, (1, 1, 0), 10.0), Particle((11.0, 11.0), 4.0, (1, 1, 1), 0.0)]
    scan = au_nanoparticle_scan(scan_shape=(16, 16), qshape=(96, 96), q_pixel_size=0.028, particles=particles, seed=1)
    datacube = scan.datacube
    assert (scan.particle_map[12:16, 0:4] < 0).all()  # a vacuum corner
    with quiet_py4dstem():
        probe = datacube.get_vacuum_probe(ROI=(12, 16, 0, 4))
        alpha, qx0, qy0 = probe.measure_disk(plot=False)
        kernel = probe.get_kernel(mode="sigmoid", origin=(qx0, qy0), radii=(1.2 * alpha, 3 * alpha))
        assert abs(alpha - scan.disk_radius) < 0.5
        bv = datacube.find_Bragg_disks(template=kernel, minPeakSpacing=3 * alpha, edgeBoundary=4)
        bv.measure_origin()
        bv.fit_origin(plot=False)
        bv.calibration.set_Q_pixel_size(0.028)
        bv.calibration.set_Q_pixel_units("A^-1")
        bv.setcal()
        # the alternative without vacuum: a synthetic probe
        synthetic = py4DSTEM.Probe.generate_synthetic_probe(radius=alpha, width=1.0, Qshape=datacube.Qshape)
        k2 = synthetic.get_kernel(mode="sigmoid", origin=(48.0, 48.0), radii=(1.2 * alpha, 3 * alpha))
    assert kernel.shape == k2.shape == tuple(datacube.Qshape)
    maps = classify_braggvectors(bv, model=tiny_model(), progress=False, median_filter=3)
    n_spots = maps.get_slice("n_spots").data
    assert n_spots[4, 4] >= 6 and n_spots[11, 11] >= 4  # disks found on both particles
