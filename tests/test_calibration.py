"""Calibrated confidence: isotonic map, threshold rule, card round trip, calibrate_weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from py4dstem_gnn.confidence.calibration import (
    ConfidenceCalibration,
    fit_isotonic,
    model_calibrations,
    raw_score,
    threshold_for_goal,
)
from py4dstem_gnn.confidence.fit import calibrate_weights


def test_raw_scores():
    p = np.array([[0.5, 0.3, 0.2, 0, 0, 0, 0], [1 / 7] * 7])
    np.testing.assert_allclose(raw_score(p, "margin"), [0.2, 0.0], atol=1e-12)
    np.testing.assert_allclose(raw_score(p, "max_prob"), [0.5, 1 / 7])
    ent = raw_score(p, "entropy")
    assert ent[1] == pytest.approx(0.0, abs=1e-9) and 0 < ent[0] < 1
    assert raw_score(np.eye(7)[:1], "entropy")[0] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown"):
        raw_score(p, "nope")


def test_isotonic_map_is_monotone_and_recovers_a_known_calibration():
    rng = np.random.default_rng(0)
    s = rng.random(20000)
    truth = lambda v: 0.1 + 0.8 * v  # noqa: E731
    correct = rng.random(s.size) < truth(s)
    x, y, count = fit_isotonic(s, correct, min_block=200)
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0) and count.min() >= 200
    assert count.sum() == s.size
    cal = ConfidenceCalibration("margin", x, y, s.size)
    grid = np.linspace(0, 1, 501)
    probs = np.zeros((grid.size, 7))
    probs[:, 0] = 0.5 + grid / 2
    probs[:, 1] = 0.5 - grid / 2  # margin = grid
    c = cal(probs)
    assert c.dtype == np.float32 and np.all(np.diff(c) >= 0)
    inner = (grid > 0.05) & (grid < 0.95)
    assert np.max(np.abs(c[inner] - truth(grid[inner]))) < 0.05


def test_isotonic_pools_ties_and_violators():
    # scores 1..4 with accuracies 1, 0, 1, 1 (one pattern each): PAV pools the first two
    x, y, count = fit_isotonic([1, 2, 3, 4], [1, 0, 1, 1], min_block=1)
    np.testing.assert_allclose(y, [0.5, 1.0, 1.0])
    np.testing.assert_allclose(x, [1.5, 3, 4])
    assert count.tolist() == [2, 1, 1]
    # tied scores form one block first
    x, y, count = fit_isotonic([2, 1, 2, 2], [1, 0, 0, 1], min_block=1)
    np.testing.assert_allclose(x, [1, 2]) and np.testing.assert_allclose(y, [0, 2 / 3])
    # min_block merges small blocks into a neighbour
    x, y, count = fit_isotonic([1, 2, 3, 4], [0, 0, 1, 1], min_block=3)
    assert count.tolist() == [4] and y.tolist() == [0.5]
    with pytest.raises(ValueError):
        fit_isotonic([np.nan], [1])


def test_threshold_rule_on_a_hand_made_case():
    conf = np.array([0.95, 0.9, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    right = np.array([1, 1, 1, 1, 0, 1, 0, 0], bool)
    # prefixes: 0.95: 1/1, 0.9: 3/3, 0.8: 4/4, 0.7: 4/5, 0.6: 5/6, 0.5: 5/7, 0.4: 5/8
    r = threshold_for_goal(conf, right, goal=0.8, min_labelled=1)
    assert r["threshold"] == 0.6 and r["n_labelled"] == 6 and r["goal_reached"]
    assert r["coverage"] == pytest.approx(6 / 8) and r["accuracy"] == pytest.approx(5 / 6)
    r = threshold_for_goal(conf, right, goal=0.9, min_labelled=1)
    assert r["threshold"] == 0.8 and r["accuracy"] == 1.0
    # a goal that needs more labelled patterns than any threshold reaching it offers
    r = threshold_for_goal(conf, right, goal=0.9, min_labelled=5)
    assert r["threshold"] == 1.0 and not r["goal_reached"] and r["n_labelled"] == 0 and r["accuracy"] is None
    json.dumps(r, allow_nan=False)


def test_card_round_trip_with_views():
    cal = ConfidenceCalibration("max_prob", np.array([0.2, 0.5, 0.9]), np.array([0.1, 0.4, 0.8]), 300,
                                {2: (np.array([0.3, 0.9]), np.array([0.2, 0.95]), 100)}, 0.7, {"fitted_on": "x"})
    back = ConfidenceCalibration.from_card(json.loads(json.dumps(cal.to_card())), threshold=0.7)
    np.testing.assert_array_equal(back.x, cal.x)
    np.testing.assert_array_equal(back.by_views[2][1], cal.by_views[2][1])
    assert back.score == "max_prob" and back.threshold == 0.7 and back.info["fitted_on"] == "x"
    p = np.zeros((3, 7))
    p[:, 0] = 0.9
    p[:, 1] = 0.1
    single, two, many = back(p, np.array([1, 2, 5]))  # 5 views: the largest calibrated k (2)
    assert single == pytest.approx(np.interp(0.9, cal.x, cal.y))
    assert two == pytest.approx(0.95) and many == pytest.approx(0.95)
    for bad in ({"score": "margin", "x": [0.5, 0.2], "y": [0.1, 0.2]},
                {"score": "margin", "x": [0.1], "y": [1.5]},
                {"score": "odd", "x": [0.1], "y": [0.5]},
                {"x": [0.1]}):
        with pytest.raises(ValueError):
            ConfidenceCalibration.from_card(bad)


def test_model_calibrations_ignore_other_weights(caplog):
    class Net:
        pass

    net = Net()
    assert model_calibrations(net) == (None, None)
    net.card = {"sha256": "a" * 64, "confidence_threshold": 0.4,
                "confidence_calibration": {"score": "margin", "x": [0.0], "y": [0.5], "weights_sha256": "a" * 64}}
    cal, conf = model_calibrations(net)
    assert cal.threshold == 0.4 and conf is None
    net.card["confidence_calibration"]["weights_sha256"] = "b" * 64
    with caplog.at_level("WARNING"):
        assert model_calibrations(net) == (None, None)
    assert "other weights" in caplog.text


def test_calibrate_weights_writes_the_card_only(tmp_path):
    from py4dstem_gnn import load_model, predict_pointlists
    from py4dstem_gnn.data.dataset import PatternSet
    from py4dstem_gnn.toy import ToyLatticeSource, tiny_model
    from py4dstem_gnn.weights import save_weights, sha256_of, update_card

    path = save_weights(tiny_model(), tmp_path, "tiny")
    sha = sha256_of(path)
    rng = np.random.default_rng(0)
    pls, _cs, sg = ToyLatticeSource().sample(rng, 120)
    material = np.repeat(np.arange(40), 3)
    PatternSet.from_pointlists(pls, material, sg).to_hdf5(tmp_path / "val.h5")
    fields = calibrate_weights(str(path), str(tmp_path / "val.h5"), goal=0.5, device="cpu", min_block=20,
                               min_labelled=10, views=(1, 2, 3), n_draws=2)
    card = json.loads(path.with_suffix(".json").read_text())
    assert sha256_of(path) == sha == card["sha256"]
    assert card["confidence_calibration"]["weights_sha256"] == sha
    assert card["confidence_calibration"] == json.loads(json.dumps(fields["confidence_calibration"]))
    assert card["confidence_threshold"] == fields["confidence_threshold"]
    assert sorted(card["conformal"]["by_views"]) == ["1", "2", "3"]
    assert card["conformal"]["by_views"]["1"]["n"] == 120
    net = load_model(path)
    assert net.card["confidence_threshold"] == fields["confidence_threshold"]
    pred = predict_pointlists(pls[:10], model=net, device="cpu", phases=None)
    cal, _ = model_calibrations(net)
    np.testing.assert_array_equal(pred.confidence, cal(pred.crystal_system_probs))
    assert pred.meta["confidence_calibrated"] and pred.sets().cs_mask.shape == (10,)
    with pytest.raises(ValueError, match="cannot change"):
        update_card(path, {"sha256": "0" * 64})
