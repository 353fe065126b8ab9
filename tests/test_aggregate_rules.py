"""aggregate_views rules: product (geometric mean), mean (linear pool), vote."""

from __future__ import annotations

import numpy as np
import pytest

from py4dstem_gnn.predict import Prediction, aggregate_views


def _pred(cs):
    cs = np.asarray(cs, float)
    cs = cs / cs.sum(1, keepdims=True)
    sg = np.full((len(cs), 230), 1e-4)
    sg[:, 61] = 0.5  # Pnma (orthorhombic)
    sg[:, 224] = 0.4  # Fm-3m (cubic)
    sg /= sg.sum(1, keepdims=True)
    return Prediction.from_probs(cs, sg, np.full(len(cs), 10))


def _views():
    # one material, four views: three lean cubic, one is confidently orthorhombic
    cs = np.full((4, 7), 0.02)
    cs[0, 6], cs[0, 2] = 0.75, 0.15
    cs[1, 6], cs[1, 2] = 0.70, 0.20
    cs[2, 6], cs[2, 2] = 0.65, 0.25
    cs[3, 2], cs[3, 6] = 0.97, 1e-6
    return _pred(cs)


def test_rules_differ_where_one_view_vetoes():
    pred = _views()
    g = np.zeros(4, int)
    assert aggregate_views(pred, g).crystal_system.tolist() == [2]  # the product: one view vetoes cubic
    assert aggregate_views(pred, g, rule="product").crystal_system.tolist() == [2]
    mean = aggregate_views(pred, g, rule="mean")
    assert mean.crystal_system.tolist() == [6]
    np.testing.assert_allclose(mean.crystal_system_probs[0], pred.crystal_system_probs.mean(0), rtol=1e-5)
    vote = aggregate_views(pred, g, rule="vote")
    assert vote.crystal_system.tolist() == [6]
    assert vote.space_group.tolist() == [225]  # space group within the voted crystal system
    np.testing.assert_allclose(vote.meta["vote_share"], [0.75])


def test_vote_ties_break_by_the_mean_probability():
    cs = np.full((2, 7), 0.01)
    cs[0, 6], cs[0, 2] = 0.55, 0.40
    cs[1, 2], cs[1, 6] = 0.51, 0.45
    vote = aggregate_views(_pred(cs), [0, 0], rule="vote")
    assert vote.crystal_system.tolist() == [6]
    np.testing.assert_allclose(vote.meta["vote_share"], [0.5])


def test_single_views_pass_through_every_rule_and_bad_rule_raises():
    pred = _views()
    for rule in ("product", "mean", "vote"):
        agg = aggregate_views(pred, [3, 2, 1, 0], rule=rule)
        assert agg.crystal_system.tolist() == pred.crystal_system[::-1].tolist()
    with pytest.raises(ValueError, match="unknown aggregation rule"):
        aggregate_views(pred, [0, 0, 0, 0], rule="max")
