"""Risk–coverage curves, AURC, score comparison and coverage tables (evaluation.selective)."""

from __future__ import annotations

import numpy as np
import pytest

from py4dstem_gnn.evaluation.selective import (
    aurc,
    compare_scores,
    coverage_by_condition,
    mean_selective_accuracy,
    oracle_aurc,
    risk_coverage_curve,
    risk_coverage_figure,
    selective_by_condition,
)


def test_curve_and_area_on_a_hand_example():
    score = np.array([0.6, 0.9, 0.7, 0.8])
    correct = np.array([1, 1, 0, 1], bool)  # sorted: 0.9 R, 0.8 R, 0.7 W, 0.6 R
    rc = risk_coverage_curve(score, correct)
    np.testing.assert_allclose(rc.coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(rc.accuracy, [1, 1, 2 / 3, 3 / 4])
    np.testing.assert_allclose(rc.threshold, [0.9, 0.8, 0.7, 0.6])
    msa = (1 + 1 + 2 / 3 + 3 / 4) / 4
    assert mean_selective_accuracy(score, correct) == pytest.approx(msa)
    assert aurc(score, correct) == pytest.approx(1 - msa)
    assert rc.accuracy_at(0.5) == 1.0 and rc.accuracy_at(0.6) == pytest.approx(2 / 3)
    # the oracle puts the wrong label last
    assert oracle_aurc(correct) == pytest.approx(1 - (1 + 1 + 1 + 3 / 4) / 4)


def test_ties_are_a_random_order_and_weights_are_duplicates():
    correct = np.array([1, 0, 0, 1, 1], bool)
    # one tie block: every prefix has the expected accuracy of the block
    assert mean_selective_accuracy(np.zeros(5), correct) == pytest.approx(0.6)
    score = np.array([0.5, 0.5, 0.2, 0.9, 0.1])
    w = np.array([2, 1, 3, 1, 2])
    dup = np.repeat(np.arange(5), w)
    assert mean_selective_accuracy(score, correct, w) == pytest.approx(mean_selective_accuracy(score[dup], correct[dup]))
    # NaN scores count as least certain
    assert aurc(np.array([np.nan, 1.0]), np.array([0, 1], bool)) == pytest.approx(0.25)


def test_compare_scores_ranks_an_informative_score_first():
    rng = np.random.default_rng(0)
    n = 600
    probs = rng.dirichlet(np.ones(7), n)
    groups = np.repeat(np.arange(n // 3), 3)
    cs_true = np.where(rng.random(n) < 0.5, probs.argmax(1), rng.integers(0, 7, n))
    correct = probs.argmax(1) == cs_true
    oracle_like = correct + 0.3 * rng.random(n)
    rows = compare_scores(probs, cs_true, groups, {"oracle_like": oracle_like}, n_boot=200, goal=0.9)
    assert rows[0].name == "oracle_like"
    assert rows[0].e_aurc == pytest.approx(0.0, abs=1e-12)
    assert rows[0].minus_reference.high < 0  # paired interval below the margin
    ref = next(r for r in rows if r.name == "margin")
    assert ref.minus_reference.mean == 0 and ref.minus_reference.low == 0
    # all right labels first, then as many wrong ones as the 90 % goal allows
    assert rows[0].coverage_at_goal == pytest.approx(np.floor(correct.sum() / 0.9) / n, abs=1.5 / n)
    for r in rows:
        assert r.aurc.low <= r.aurc.mean <= r.aurc.high
    with pytest.raises(ValueError, match="values"):
        compare_scores(probs, cs_true, groups, {"short": np.ones(3)})


def test_coverage_by_condition_per_protocol_and_regime():
    covered = np.array([1, 1, 0, 1, 1, 1, 0, 0], bool)
    size = np.array([1, 2, 3, 1, 1, 2, 7, 7])
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    protocol = np.array(["known"] * 4 + ["unseen-type"] * 4)
    regime = np.array(["zone_axis", "random"] * 4)
    rows = coverage_by_condition(covered, size, groups, protocol, regime, nominal=0.9, n_boot=200)
    assert [(r["protocol"], r["regime"]) for r in rows] == [
        ("known", "random"), ("known", "zone_axis"), ("unseen-type", "random"), ("unseen-type", "zone_axis")
    ]
    by = {(r["protocol"], r["regime"]): r for r in rows}
    assert by[("known", "zone_axis")]["coverage"]["mean"] == pytest.approx(0.5)  # patterns 0, 2
    assert by[("known", "random")]["mean_set_size"]["mean"] == pytest.approx(1.5)  # patterns 1, 3
    assert by[("unseen-type", "random")]["coverage"]["mean"] == pytest.approx(0.5)  # patterns 5, 7
    assert by[("known", "random")]["within_2_points"] is False
    one = coverage_by_condition(covered, size, groups, n_boot=100)
    assert len(one) == 1 and one[0]["protocol"] == "all" and one[0]["n_groups"] == 4


def test_selective_by_condition_counts_labelled_patterns():
    conf = np.array([0.9, 0.2, 0.95, 0.1, 0.8, 0.85])
    correct = np.array([1, 0, 1, 1, 0, 1], bool)
    groups = np.arange(6)
    rows = selective_by_condition(conf, correct, groups, threshold=0.5, n_boot=100)
    (row,) = rows
    assert row["labelled"]["mean"] == pytest.approx(4 / 6)
    assert row["selective_accuracy"]["mean"] == pytest.approx(3 / 4)
    assert row["accuracy"]["mean"] == pytest.approx(4 / 6)
    assert row["aurc"]["mean"] == pytest.approx(aurc(conf, correct))


def test_risk_coverage_figure():
    rng = np.random.default_rng(1)
    s = rng.random(50)
    fig = risk_coverage_figure({"a": risk_coverage_curve(s, s > 0.3)}, title="t")
    assert fig.axes and fig.axes[0].get_xlabel().startswith("coverage")
