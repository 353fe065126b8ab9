"""Tests of py4dstem_gnn.evaluation.metrics on hand-made confusion matrices and examples."""

from __future__ import annotations

import numpy as np
import pytest

from py4dstem_gnn.evaluation import metrics as M
from py4dstem_gnn.evaluation import protocols as P
from py4dstem_gnn.labels import SG_TO_CS


def test_confusion_matrix_and_prf_hand_made():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    cm = M.confusion_matrix(y_true, y_pred, 4)
    expected = np.array([[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    r = M.precision_recall_f1(cm)
    np.testing.assert_allclose(r["precision"], [1.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(r["recall"][:3], [2 / 3, 0.5, 1.0])
    assert np.isnan(r["recall"][3]) and np.isnan(r["f1"][3])
    f1 = [0.8, 0.5, 2 / 3]
    np.testing.assert_allclose(r["f1"][:3], f1)
    np.testing.assert_array_equal(r["support"], [3, 2, 1, 0])
    assert r["macro_f1"] == pytest.approx(np.mean(f1))
    assert r["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)
    assert r["accuracy"] == pytest.approx(4 / 6) == M.accuracy(y_true, y_pred)


def test_confusion_matrix_rejects_out_of_range():
    with pytest.raises(ValueError):
        M.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_grouped_accuracy_space_group_by_crystal_system():
    sg_true = np.array([1, 2, 225, 225, 194])
    sg_pred = np.array([1, 1, 225, 221, 194])
    acc, count = M.grouped_accuracy(sg_true, sg_pred, SG_TO_CS[sg_true - 1], 7)
    np.testing.assert_array_equal(count, [2, 0, 0, 0, 0, 1, 2])
    np.testing.assert_allclose(acc[[0, 5, 6]], [0.5, 1.0, 0.5])
    assert np.isnan(acc[1])


def test_ece_hand_made():
    conf = np.array([0.95, 0.95, 0.55, 0.55, 0.55, 0.55])
    correct = np.array([1, 1, 1, 0, 0, 0], bool)
    # bins of width 0.1: (0.9,1] has acc 1, conf .95; (0.5,0.6] acc .25, conf .55
    expected = (2 * 0.05 + 4 * 0.30) / 6
    assert M.expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(expected)
    b = M.reliability_bins(conf, correct, n_bins=10)
    assert b["count"].sum() == 6 and b["count"][9] == 2 and b["count"][5] == 4
    # perfectly calibrated
    assert M.expected_calibration_error(np.ones(4), np.ones(4, bool)) == pytest.approx(0.0)


def test_temperature_scaling_recovers_temperature():
    rng = np.random.default_rng(0)
    n, c = 4000, 5
    logits = rng.normal(scale=3.0, size=(n, c))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(c, p=row) for row in p])
    # the model reports over-confident logits (x 2.5): the fit should find T close to 2.5
    t = M.fit_temperature(2.5 * logits, y)
    assert t == pytest.approx(2.5, rel=0.1)
    q = M.apply_temperature(2.5 * logits, t)
    np.testing.assert_allclose(q.sum(1), 1.0)
    assert M.negative_log_likelihood(2.5 * logits, y, t) < M.negative_log_likelihood(2.5 * logits, y, 1.0)


def test_draw_views_k_per_group_seeded():
    groups = np.array([5, 5, 5, 7, 7, 9, 9, 9, 9, 9])
    idx = M.draw_views(groups, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(np.bincount(groups[idx], minlength=10)[[5, 7, 9]], [2, 2, 2])
    idx_again = M.draw_views(groups, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(idx, idx_again)
    # fewer views than k: all kept
    np.testing.assert_array_equal(M.draw_views(groups, 10, np.random.default_rng(1)), np.arange(10))


def test_aggregate_probs_hand_made():
    probs = np.array([[0.6, 0.4], [0.2, 0.8], [0.9, 0.1]])
    groups = np.array(["b", "b", "a"])
    keys, mean = M.aggregate_probs(probs, groups, "mean")
    assert list(keys) == ["a", "b"]
    np.testing.assert_allclose(mean, [[0.9, 0.1], [0.4, 0.6]])
    _, geo = M.aggregate_probs(probs, groups, "log")
    g = np.sqrt([0.6 * 0.2, 0.4 * 0.8])
    np.testing.assert_allclose(geo[1], g / g.sum())
    np.testing.assert_allclose(geo[0], [0.9, 0.1])


def test_multiview_correct_hand_made():
    # material 0: cubic 225, views vote 2:1 for cubic -> right after aggregation
    # material 1: hexagonal 194, every view says hexagonal 194
    cs = np.zeros((6, 7))
    sg = np.full((6, 230), 1e-6)
    rows = [(6, 225), (6, 225), (5, 194), (5, 194), (5, 194), (5, 194)]
    for i, (c, s) in enumerate(rows):
        cs[i, c] = 0.9
        cs[i, (c + 1) % 7] = 0.1
        sg[i, s - 1] = 1.0
    cs[2] = 0
    cs[2, 5] = 0.6
    cs[2, 6] = 0.4  # one view of material 0 leans hexagonal
    sg[2] = 1e-6
    sg[2, 193] = 0.6
    sg[2, 224] = 0.4
    groups = np.array([0, 0, 0, 1, 1, 1])
    cs_true_m, sg_true_m = np.array([6, 5]), np.array([225, 194])  # per material
    rng = np.random.default_rng(0)
    draws = [M.draw_views(groups, 3, rng) for _ in range(3)]
    # both rules (normalised geometric mean, as the report combines views) get both materials right
    mc, ms = P.multiview_correct(groups, cs, sg, cs_true_m, sg_true_m, draws)
    np.testing.assert_allclose(mc, 1.0)
    np.testing.assert_allclose(ms, 1.0)
    _, mean_cs = M.aggregate_probs(cs, groups, "mean")
    np.testing.assert_array_equal(mean_cs.argmax(axis=1), cs_true_m)
    # one view each: the leaning view is drawn sometimes, so material 0 is right in only some draws
    draws1 = [M.draw_views(groups, 1, rng) for _ in range(40)]
    mc1, _ = P.multiview_correct(groups, cs, sg, cs_true_m, sg_true_m, draws1)
    assert 0.5 <= mc1[0] < 1.0 and mc1[1] == 1.0


def test_consistent_argmax():
    cs = np.zeros((1, 7))
    cs[0, 6] = 1.0
    sg = np.zeros((1, 230))
    sg[0, 0] = 0.9  # triclinic P1 is most probable overall but not within cubic
    sg[0, 224] = 0.1
    c, s = M.consistent_argmax(cs, sg)
    assert c[0] == 6 and s[0] == 225


def test_group_replicates_over_materials():
    # two materials: one always right (3 patterns), one always wrong (1 pattern)
    correct = np.array([1, 1, 1, 0], bool)
    groups = np.array([0, 0, 0, 1])
    _, boot, n, ng = M.ratio_replicates(correct, groups, M.group_resampling_weights(2, 2000, 0))
    # resamples: {0,0} -> 1, {1,1} -> 0, {0,1} -> 3/4 with probabilities 1/4, 1/4, 1/2
    assert set(np.round(np.unique(boot), 6)) <= {0.0, 0.75, 1.0} and (n, ng) == (4, 2)
    assert boot.mean() == pytest.approx(0.25 * 1 + 0.5 * 0.75, abs=0.03)
    iv = M.group_bootstrap(np.ones(5, bool), np.arange(5), 50)
    assert iv.mean == iv.low == iv.high == 1.0


def test_group_bootstrap_wider_than_pattern_bootstrap_for_correlated_groups():
    # 10 groups of 10 patterns, perfectly correlated within a group: 5 groups right, 5 wrong
    groups = np.repeat(np.arange(10), 10)
    correct = np.repeat(np.arange(10) < 5, 10)
    by_group = M.group_bootstrap(correct, groups, n_boot=4000, seed=1)
    by_pattern = M.group_bootstrap(correct, np.arange(100), n_boot=4000, seed=1)
    assert by_group.mean == by_pattern.mean == 0.5
    assert (by_group.n, by_group.n_groups, by_pattern.n_groups) == (100, 10, 100)
    # binomial widths: 1.96 * sqrt(0.25 / 10) = 0.31 vs 1.96 * sqrt(0.25 / 100) = 0.098
    assert 0.25 < by_group.half_width < 0.37
    assert 0.07 < by_pattern.half_width < 0.12
    assert by_group.half_width > 2.5 * by_pattern.half_width
    assert by_group.low <= 0.5 <= by_group.high
    # a replicate of whole groups is a multiple of 1/10
    assert np.allclose(np.array([by_group.low, by_group.high]) * 10 % 1, 0, atol=1e-9)
    d = by_group.as_dict()
    assert set(d) == {"mean", "low", "high", "n", "n_groups", "ci"} and d["ci"] == 0.95


def test_group_bootstrap_unequal_group_sizes_is_a_ratio():
    # group 0: 3 patterns right; group 1: 1 pattern wrong -> replicates 1, 3/4 or 0
    correct = np.array([1, 1, 1, 0], bool)
    groups = np.array([7, 7, 7, 3])
    w = M.group_resampling_weights(2, 500, 0)
    mean, reps, n, ng = M.ratio_replicates(correct, np.array([1, 1, 1, 0]), w)
    assert mean == 0.75 and (n, ng) == (4, 2)
    assert set(np.round(np.unique(reps), 6)) <= {0.0, 0.75, 1.0}
    r = M.group_bootstrap(correct, groups, n_boot=500, seed=0, ci=0.5)
    assert r.mean == 0.75 and r.ci == 0.5
    # a subset keeps the whole-set resampling: replicates with no unit of the subset are nan
    _, sub, n_sub, _ = M.ratio_replicates(correct, np.array([1, 1, 1, 0]), w, mask=np.array([0, 0, 0, 1], bool))
    assert n_sub == 1 and np.all(np.isnan(sub) | (sub == 0.0)) and np.isnan(sub).any()


def test_group_bootstrap_difference_is_paired():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 5)
    p_group = rng.uniform(0.2, 0.9, 30)
    a = rng.random(150) < np.repeat(p_group, 5)
    b = a.copy()
    flip = rng.choice(150, 15, replace=False)
    b[flip] = False  # b is a minus a few hits: the difference is small and tightly known
    diff = M.group_bootstrap_difference(a, groups, b, n_boot=2000, seed=0)
    assert diff.mean == pytest.approx(a.mean() - b.mean())
    ia = M.group_bootstrap(a, groups, n_boot=2000, seed=0)
    assert diff.half_width < 0.5 * ia.half_width
    assert diff.low >= 0.0
    same = M.group_bootstrap_difference(a, groups, a.astype(float), groups, n_boot=200)
    assert same.mean == same.low == same.high == 0.0


def test_group_bootstrap_empty_and_mismatch():
    r = M.group_bootstrap(np.zeros(0), np.zeros(0), n_boot=10)
    assert np.isnan(r.mean) and np.isnan(r.low) and r.n == 0
    with pytest.raises(ValueError):
        M.group_bootstrap(np.zeros(3), np.zeros(2))


def test_aggregate_log_probs_matches_the_log_rule():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(230) * 0.3, 60)
    p[::5, 7] = 0.0  # zeros are floored at the float32 tiny
    groups = rng.integers(0, 9, 60)
    k1, a1 = M.aggregate_probs(p, groups, "log")
    k2, a2 = M.aggregate_log_probs(np.log(np.maximum(p, np.finfo(np.float32).tiny)), groups)
    assert np.array_equal(k1, k2) and np.allclose(a1, a2, atol=1e-12)
    # the geometric mean by hand for one group
    g0 = p[groups == k1[0]]
    manual = np.exp(np.log(np.maximum(g0, np.finfo(np.float32).tiny)).mean(0))
    assert np.allclose(a1[0], manual / manual.sum())
    k, a = M.aggregate_probs(np.zeros((0, 7)), np.zeros(0), "mean")
    assert len(k) == 0 and a.shape == (0, 7)
