"""The stage after the match (network where needed -> decide -> match fields) is one function for every caller.

``predict_pointlists``, ``classify_braggvectors`` (through ``scan.network_scan``) and
``network_stage.network_and_decide`` called directly must give the same labels, confidences,
probabilities and match fields on the same patterns: bit for bit, since they run the same code on the
same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

spglib = pytest.importorskip("spglib")
ase = pytest.importorskip("ase")
pytest.importorskip("py4DSTEM")

from ase.build import bulk  # noqa: E402
from ase.spacegroup import crystal  # noqa: E402

import py4dstem_gnn as pg  # noqa: E402
from py4dstem_gnn.braggvectors import calibrated_vectors  # noqa: E402
from _crystals import kinematic_simulator  # noqa: E402
from py4dstem_gnn.data.orientations import zone_axis_rotation  # noqa: E402
from py4dstem_gnn.data.synthetic import braggvectors_from_pointlists  # noqa: E402
from py4dstem_gnn.decide import load_decision_params  # noqa: E402
from py4dstem_gnn.features import split_direct_beam  # noqa: E402
from py4dstem_gnn.matching import match_patterns, structure_bank  # noqa: E402
from py4dstem_gnn.network_stage import network_and_decide, network_probabilities  # noqa: E402
from py4dstem_gnn.predict import _load  # noqa: E402

#: 2**-6 1/Å per pixel and an integer origin: pixel <-> 1/Å conversions are exact.
QPIX = 2.0 ** -6
ORIGIN = (128.0, 128.0)
SHAPE = (2, 4)


def _simulator(atoms):
    """``pattern(uvw, in_plane, scale=1.0)``: the kinematic pattern of ``atoms`` along a conventional zone axis."""
    entry, conv, at_rotation = kinematic_simulator(atoms)

    def pattern(uvw, in_plane, scale=1.0):
        return at_rotation(zone_axis_rotation(uvw, entry.lat_inv, conv, in_plane=in_plane), scale)

    return pattern


@pytest.fixture(scope="module")
def case():
    """A bank of three phases; a 2 x 4 scan: bank phases at zone axes (one 2 % off in scale), and
    phases the bank lacks (the network decides there)."""
    au = bulk("Au", "fcc", a=4.078)
    tio2 = crystal(["Ti", "O"], basis=[(0, 0, 0), (0.3048, 0.3048, 0)], spacegroup=136,
                   cellpar=[4.594, 4.594, 2.959, 90, 90, 90])
    zno = crystal(["Zn", "O"], basis=[(1 / 3, 2 / 3, 0), (1 / 3, 2 / 3, 0.382)], spacegroup=186,
                  cellpar=[3.25, 3.25, 5.207, 90, 90, 120])
    bank = structure_bank([au, tio2, zno], names=["Au", "TiO2", "ZnO"])
    s_au, s_tio2, s_zno = _simulator(au), _simulator(tio2), _simulator(zno)
    s_w, s_si = _simulator(bulk("W", "bcc", a=3.165)), _simulator(bulk("Si", "diamond", a=5.431))
    patterns = [s_au([0, 0, 1], 0.3), s_tio2([0, 0, 1], 1.1), s_zno([0, 0, 1], 0.7), s_w([0, 1, 1], 0.1),
                s_au([0, 1, 1], 2.0, scale=1.02), s_tio2([1, 0, 0], 0.4), s_si([0, 1, 1], 0.9), s_zno([1, 0, 0], 2.5)]
    # on a 2**-30 1/Å grid, so that the detector pixels hold them exactly
    px = [np.column_stack([np.round(p[:, :2] * 2.0 ** 30) / 2.0 ** 30 / QPIX + ORIGIN[0], p[:, 2]]) for p in patterns]
    bv = braggvectors_from_pointlists(px, SHAPE, (256, 256))
    # what classify_braggvectors reads, so that all three paths see the same numbers
    vectors = calibrated_vectors(bv, raw_vectors=True, q_pixel_size=QPIX, origin=ORIGIN)
    pointlists = [vectors.at(rx, ry) for rx in range(SHAPE[0]) for ry in range(SHAPE[1])]
    return bank, bv, pointlists


@pytest.fixture
def skipping(monkeypatch, tmp_path):
    """The shipped decision with ``skip_network_score`` lowered to 0.9, so that the match alone decides some
    positions (the shipped value, above 1, runs the network everywhere); every caller reads it."""
    from dataclasses import replace

    from py4dstem_gnn import decide

    params = replace(load_decision_params(), skip_network_score=0.9)
    monkeypatch.setattr(decide, "DECISION_PATH", params.save(tmp_path / "decision.json"))
    return params


def _maps(bv, bank):
    return pg.classify_braggvectors(bv, phases=bank, progress=False, median_filter=None, confidence_threshold=0,
                                    min_spots=3, raw_vectors=True, q_pixel_size=QPIX, origin=ORIGIN)


def _direct(pointlists, bank, **kwargs):
    spots = [np.asarray(split_direct_beam(p)[0], np.float32).reshape(-1, 3) for p in pointlists]
    dev = torch.device("cpu")
    net = _load("default", dev)
    match = match_patterns(spots, bank)
    return spots, match, net, network_and_decide(spots, match, bank, load_decision_params(), net, dev, **kwargs)


def test_predict_classify_and_the_stage_agree(case, skipping):
    bank, bv, pointlists = case
    pred = pg.predict_pointlists(pointlists, phases=bank)
    maps = _maps(bv, bank)
    _, _, _, stage = _direct(pointlists, bank)
    dec, fields = stage.decision, stage.fields
    ran = stage.network_ran
    assert ran.any() and (~ran).any(), "the case must have positions decided by the match alone and by the network"
    assert (fields["phase"] >= 0).sum() >= 4 and (fields["phase"] < 0).any()

    def grid(label):
        return maps.get_slice(label).data.reshape(-1)

    assert np.all(grid("valid") == 1)
    eq = np.testing.assert_array_equal
    # labels, confidence, probabilities
    eq(pred.crystal_system, dec.crystal_system)
    eq(grid("crystal_system_raw"), dec.crystal_system)
    eq(pred.space_group, dec.space_group)
    eq(grid("space_group_raw"), dec.space_group)
    eq(pred.confidence, dec.confidence)
    eq(grid("confidence"), dec.confidence)
    eq(pred.crystal_system_probs, dec.crystal_system_probs)
    eq(pred.space_group_probs, dec.space_group_probs)
    probs = np.stack([grid(f"p_{c}") for c in pg.CRYSTAL_SYSTEMS], axis=1)
    eq(probs, dec.crystal_system_probs)
    # where the network ran, and the match fields
    eq(pred.meta["network_ran"], ran)
    assert maps.metadata["py4dstem_gnn"]["network_ran_share"] == pytest.approx(ran.mean())
    eq(pred.phase, fields["phase"])
    eq(grid("phase"), fields["phase"])
    assert pred.phases == fields["phases"] == pg.phase_table(maps)
    eq(pred.zone_axis, fields["zone_axis"])
    eq(np.stack([grid(f"zone_axis_{c}") for c in "uvw"], axis=1), fields["zone_axis"])
    for name in ("match_score", "in_plane_angle", "q_scale"):
        eq(getattr(pred, name), fields[name])
        eq(grid(name), fields[name])


def test_precomputed_network_probabilities_and_the_match_alone(case, skipping):
    """What a comparison of network / match / both does: the network run once on every pattern."""
    bank, _, pointlists = case
    spots, match, net, stage = _direct(pointlists, bank)
    dev = torch.device("cpu")
    params = load_decision_params()
    probs = network_probabilities(spots, net, dev)
    again = network_and_decide(spots, match, bank, params, None, None, probabilities=probs)
    np.testing.assert_array_equal(again.network_ran, stage.network_ran)
    np.testing.assert_array_equal(again.decision.crystal_system, stage.decision.crystal_system)
    np.testing.assert_array_equal(again.decision.phase, stage.decision.phase)
    # the network on all patterns vs on those that need it: other batches, the same numbers to float precision
    np.testing.assert_allclose(again.decision.crystal_system_probs, stage.decision.crystal_system_probs, atol=1e-6)
    alone = network_and_decide(spots, match, bank, params, None, None, network="never")
    assert not alone.network_ran.any()
    assert alone.decision.crystal_system.shape == (len(spots),)
    with pytest.raises(ValueError, match="network must be"):
        network_and_decide(spots, match, bank, params, net, dev, network="sometimes")


def test_without_a_match_the_network_runs_everywhere(case):
    bank, _, pointlists = case
    spots = [np.asarray(split_direct_beam(p)[0], np.float32).reshape(-1, 3) for p in pointlists]
    dev = torch.device("cpu")
    net = _load("default", dev)
    stage = network_and_decide(spots, None, None, None, net, dev)
    assert stage.decision is None and stage.fields is None and stage.network_ran.all()
    pred = pg.predict_pointlists(pointlists, phases=None)
    np.testing.assert_array_equal(pred.crystal_system_probs, stage.network.crystal_system_probs)
    np.testing.assert_array_equal(pred.space_group, stage.network.space_group)


def test_a_scan_with_nothing_to_classify_has_empty_match_slices(case):
    bank, _, _ = case
    px = [np.array([[128.0, 128.0, 9.0], [150.0, 140.0, 1.0]]) for _ in range(4)]
    bv = braggvectors_from_pointlists(px, (2, 2), (256, 256))
    with pytest.warns(Warning):
        maps = pg.classify_braggvectors(bv, phases=bank, progress=False, raw_vectors=True, q_pixel_size=QPIX,
                                        origin=ORIGIN)
    assert np.all(maps.get_slice("phase").data == -1) and np.all(maps.get_slice("crystal_system").data == -1)
    assert pg.phase_table(maps) == []
