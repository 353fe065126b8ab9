"""Split-conformal prediction sets: quantiles, masks, coverage, per-k views, card, maps and figure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from py4dstem_gnn.confidence.conformal import (
    ConformalCalibration,
    check_coverage,
    conformal_quantile,
    cs_set_mask,
    decode_mask,
    mask_contains,
    mask_label,
    mask_size,
    prediction_sets,
    sg_set_size,
    space_group_sets,
)
from py4dstem_gnn.confidence.fit import fit_conformal
from py4dstem_gnn.predict import Prediction, aggregate_views
from py4dstem_gnn.labels import SG_TO_CS


def _calibrated_probs(rng, n, sharp=1.5):
    """Probabilities with labels drawn from them: exchangeable, perfectly calibrated data."""
    cs = rng.dirichlet(np.full(7, 1.0 / sharp), n)
    y = np.array([rng.choice(7, p=p) for p in cs])
    sg = np.full((n, 230), 1e-6)
    first = np.array([np.flatnonzero(SG_TO_CS == c)[0] for c in range(7)])
    sg[:, first] = cs  # space group = first of each system, same probabilities
    sg /= sg.sum(1, keepdims=True)
    return cs, sg, first[y] + 1


def test_quantile_rank_and_full_set():
    scores = np.arange(1, 10) / 10  # 9 points
    assert conformal_quantile(scores, 0.8) == pytest.approx(0.8)  # rank ceil(10 * 0.8) = 8
    assert conformal_quantile(scores[::-1], 0.5) == pytest.approx(0.5)
    assert conformal_quantile(scores, 0.95) == 1.0  # rank 10 > 9: every class
    assert conformal_quantile(np.zeros(0), 0.9) == 1.0
    with pytest.raises(ValueError):
        check_coverage(1.0)
    with pytest.raises(TypeError):
        check_coverage("0.9")


def test_masks_decode_to_the_right_sets():
    p = np.array([
        [0.01, 0.01, 0.02, 0.40, 0.06, 0.05, 0.45],  # tetragonal and cubic above 0.3
        [0.90, 0.02, 0.02, 0.02, 0.02, 0.01, 0.01],
        [1 / 7] * 7,
    ])
    mask = cs_set_mask(p, 0.7)  # cut p >= 0.3
    assert mask.tolist() == [8 + 64, 1, 1]  # flat: only the most probable (first) class
    assert decode_mask(mask[0]) == (3, 6)
    assert mask_label(mask[0]) == "tetragonal | cubic"
    assert mask_label(-1) == "invalid" and decode_mask(-1) == ()
    assert mask_size(np.array([72, 1, 127, -1])).tolist() == [2, 1, 7, -1]
    assert mask_contains(np.array([72, 72, -1]), np.array([3, 2, 3])).tolist() == [True, False, False]
    # q = 1: every class; q = 0: the most probable alone (sets are never empty)
    assert cs_set_mask(p, 1.0).tolist() == [127] * 3
    assert cs_set_mask(p, 0.0).tolist() == [64, 1, 1]
    sg = np.full((1, 230), 0.5 / 227)
    sg[0, [224, 220, 193]] = [0.3, 0.15, 0.05]
    sg /= sg.sum()
    assert sg_set_size(sg, 0.9).tolist() == [2]  # p >= 0.1: 0.30 and 0.15
    assert sg_set_size(sg, 0.96).tolist() == [3]  # p >= 0.04: and 0.05
    assert space_group_sets(sg, 0.96)[0].tolist() == [225, 221, 194]
    assert space_group_sets(sg, 0.96, max_k=2)[0].tolist() == [225, 221]


@pytest.mark.parametrize("level", [0.8, 0.9, 0.95])
def test_coverage_on_exchangeable_data_is_nominal(level):
    rng = np.random.default_rng(int(level * 100))
    cs, sg, y_sg = _calibrated_probs(rng, 3000)
    cal = fit_conformal(cs[:1000], sg[:1000], y_sg[:1000], np.arange(1000), views=(1,), levels=(0.8, 0.9, 0.95))
    q_cs, q_sg = cal.quantiles(level)
    mask = cs_set_mask(cs[1000:], q_cs)
    covered = mask_contains(mask, SG_TO_CS[y_sg[1000:] - 1])
    assert abs(covered.mean() - level) < 0.03
    sets = space_group_sets(sg[1000:], q_sg)
    sg_cov = np.mean([t in s for t, s in zip(y_sg[1000:], sets)])
    assert abs(sg_cov - level) < 0.03
    assert 1 <= mask_size(mask).mean() < 7


def _views_data(rng, n_materials, per_material=5, noise=2.0):
    """Noisy views of materials: per-view logits = 1.5 * onehot(true) + noise."""
    y_cs = rng.integers(0, 7, n_materials)
    groups = np.repeat(np.arange(n_materials), per_material)
    logits = 1.5 * np.eye(7)[y_cs[groups]] + noise * rng.standard_normal((groups.size, 7))
    cs = np.exp(logits)
    cs /= cs.sum(1, keepdims=True)
    first = np.array([np.flatnonzero(SG_TO_CS == c)[0] for c in range(7)])
    sg = np.full((groups.size, 230), 1e-6)
    sg[:, first] = cs
    sg /= sg.sum(1, keepdims=True)
    return cs, sg, first[y_cs[groups]] + 1, groups


def test_aggregated_views_are_calibrated_per_k():
    rng = np.random.default_rng(3)
    cs, sg, y_sg, groups = _views_data(rng, 1200)
    cal_sel = groups < 600
    cal = fit_conformal(cs[cal_sel], sg[cal_sel], y_sg[cal_sel], groups[cal_sel], views=(1, 2, 3), n_draws=2,
                        levels=(0.8, 0.9))
    assert sorted(cal.by_views) == [1, 2, 3]
    assert cal.by_views[1][0] == 3000 and cal.by_views[2][0] == 2 * 600
    q1, q3 = cal.quantiles(0.9, 1)[0], cal.quantiles(0.9, 3)[0]
    assert q1 != q3  # aggregates have their own quantile
    # test: 3 views of each held-out material
    test_idx = np.flatnonzero(~cal_sel).reshape(-1, 5)[:, :3].ravel()
    pred = Prediction.from_probs(cs[test_idx], sg[test_idx], np.full(test_idx.size, 10))
    pred.meta["conformal"] = cal
    agg = aggregate_views(pred, groups[test_idx])
    assert agg.meta["n_views"].tolist() == [3] * 600
    st = agg.sets(0.9)
    truth = SG_TO_CS[y_sg[test_idx][::3] - 1]
    assert abs(mask_contains(st.cs_mask, truth).mean() - 0.9) < 0.04
    # the single-pattern quantile on aggregates would give other sets
    assert not np.array_equal(st.cs_mask, cs_set_mask(agg.crystal_system_probs, q1))
    # an uncalibrated number of views uses the largest calibrated one below it
    assert cal.views_key(7) == 3


def test_card_round_trip_and_levels():
    rng = np.random.default_rng(4)
    cs, sg, y_sg = _calibrated_probs(rng, 400)
    cal = fit_conformal(cs, sg, y_sg, np.arange(400), views=(1, 2))
    cal.info["fitted_on"] = "synthetic"
    text = json.dumps(cal.to_card(), allow_nan=False)
    back = ConformalCalibration.from_card(json.loads(text))
    np.testing.assert_array_equal(back.levels, cal.levels)
    for k in cal.by_views:
        np.testing.assert_array_equal(back.by_views[k][1], cal.by_views[k][1])
        np.testing.assert_array_equal(back.by_views[k][2], cal.by_views[k][2])
    assert back.default_coverage == 0.9 and back.info["fitted_on"] == "synthetic"
    # between grid levels: the next level up (conservative)
    i = back.level_index(0.905)
    assert back.levels[i] == pytest.approx(0.91)
    with pytest.raises(ValueError, match="above"):
        back.level_index(0.999)
    with pytest.raises(ValueError, match="malformed"):
        ConformalCalibration.from_card({"levels": [0.9], "by_views": {"1": {"cs": [0.5, 0.6], "sg": [0.5]}}})
    pred = Prediction.from_probs(cs[:5], sg[:5], np.ones(5))
    with pytest.raises(ValueError, match="no conformal calibration"):
        prediction_sets(pred)
    st = prediction_sets(pred, 0.8, calibration=back)
    assert st.coverage == pytest.approx(0.8) and len(st.labels()) == 5 and st.cs_size.min() >= 1


# ------------------------------------------------------------------ classify_braggvectors slices and figure


def _card_fields(q_cs: float = 0.6, q_sg: float = 0.99) -> dict:
    levels = [0.8, 0.9, 0.95]
    return {
        "confidence_calibration": {"score": "margin", "x": [0.0, 1.0], "y": [0.2, 0.9], "n": 100},
        "confidence_threshold": 0.3,
        "conformal": {"levels": levels, "default_coverage": 0.9,
                      "by_views": {"1": {"n": 100, "cs": [q_cs - 0.1, q_cs, 0.95], "sg": [q_sg] * 3}}},
    }


def test_classify_braggvectors_returns_set_slices():
    pytest.importorskip("py4DSTEM")
    from py4dstem_gnn.data.synthetic import random_braggvectors
    from py4dstem_gnn.plot import prediction_set_figure
    from py4dstem_gnn.classify import SLICE_LABELS, classify_braggvectors
    from py4dstem_gnn.toy import tiny_model

    bv = random_braggvectors((5, 6), spots=(0, 12), seed=3)
    net = tiny_model()
    net.card = _card_fields()
    maps = classify_braggvectors(bv, model=net, progress=False, median_filter=None, min_spots=5, phases=None)
    assert list(maps.slicelabels) == list(SLICE_LABELS) and maps.data.dtype == np.float32
    cs_set = maps["cs_set"].data
    size = maps["cs_set_size"].data
    sg_size = maps["sg_set_size"].data
    n_spots = maps["n_spots"].data
    ran = n_spots >= 5
    assert ran.any() and (~ran).any()
    assert cs_set.shape == size.shape == sg_size.shape == (5, 6)
    np.testing.assert_array_equal(cs_set[~ran], -1)
    np.testing.assert_array_equal(size[~ran], -1)
    np.testing.assert_array_equal(sg_size[~ran], -1)
    assert np.all((cs_set[ran] >= 1) & (cs_set[ran] <= 127))
    np.testing.assert_array_equal(size[ran], mask_size(cs_set[ran].astype(int)))
    assert np.all((sg_size[ran] >= 1) & (sg_size[ran] <= 230))
    # the sets follow the card's quantile for the default coverage (0.9 -> q = 0.6: p >= 0.4)
    probs = np.stack([maps[f"p_{n}"].data for n in ("triclinic", "monoclinic", "orthorhombic", "tetragonal",
                                                    "trigonal", "hexagonal", "cubic")], -1)
    np.testing.assert_array_equal(cs_set[ran], cs_set_mask(probs[ran], 0.6))
    # the calibrated confidence and the card's default threshold (0.3) are applied
    margin = np.sort(probs, -1)
    expected_conf = np.interp(margin[..., -1] - margin[..., -2], [0.0, 1.0], [0.2, 0.9])
    np.testing.assert_allclose(maps["confidence"].data[ran], expected_conf[ran], atol=1e-6)
    np.testing.assert_array_equal(maps["valid"].data.astype(bool), ran & (maps["confidence"].data >= 0.3))
    assert maps.metadata["py4dstem_gnn"]["coverage"] == pytest.approx(0.9)
    # a coverage that is asked for picks its level; 0 switches the threshold off
    wide = classify_braggvectors(bv, model=net, progress=False, median_filter=None, min_spots=5, phases=None, coverage=0.95,
                                 confidence_threshold=0)
    assert np.all(wide["cs_set_size"].data[ran] >= size[ran])
    np.testing.assert_array_equal(wide["valid"].data.astype(bool), ran)
    fig = prediction_set_figure(maps, title="sets")
    assert len(fig.axes) >= 2 and "90 % coverage" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="coverage"):
        classify_braggvectors(bv, model=net, progress=False, phases=None, coverage=1.2)


def test_classify_without_calibration_gives_minus_one_sets(caplog):
    pytest.importorskip("py4DSTEM")
    from py4dstem_gnn.data.synthetic import random_braggvectors
    from py4dstem_gnn.plot import prediction_set_figure
    from py4dstem_gnn.classify import classify_braggvectors
    from py4dstem_gnn.toy import tiny_model

    bv = random_braggvectors((3, 3), spots=(6, 10), seed=1)
    with caplog.at_level("WARNING"):
        maps = classify_braggvectors(bv, model=tiny_model(), progress=False, median_filter=None, phases=None)
    assert "0.005" in caplog.text  # legacy threshold on the raw margin, said so
    for label in ("cs_set", "cs_set_size", "sg_set_size"):
        np.testing.assert_array_equal(maps[label].data, -1)
    fig = prediction_set_figure({"cs_set": maps["cs_set"].data, "n_spots": maps["n_spots"].data})
    assert fig.axes
