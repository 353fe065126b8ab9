"""predict_pointlists, Prediction, aggregate_views, batching."""

from __future__ import annotations

import functools

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from py4dstem_gnn.predict import (
    Prediction,
    _plan_batches,
    aggregate_views,
    consistent_labels,
    predict_pointlists,
    resolve_device,
)
from py4dstem_gnn.labels import SG_TO_CS
from py4dstem_gnn.model import ModelOutput
from py4dstem_gnn.toy import tiny_model

# these tests exercise the network stage: the match stage (phases='pool' by default) is tested in test_matching.py
predict_pointlists = functools.partial(predict_pointlists, phases=None)




class SpotCountModel(torch.nn.Module):
    """cs = (number of spots) mod 7; sg head prefers space group 1 overall."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(max_spots=32)
        self.seen: list[tuple[int, int]] = []

    def forward(self, spots, mask):
        self.seen.append(tuple(mask.shape))
        n = mask.sum(dim=1)
        cs = torch.nn.functional.one_hot(n % 7, 7).float() * 4.0
        sg = torch.zeros(spots.shape[0], 230)
        sg[:, 0] = 9.0
        sg[:, 224] = 3.0  # Fm-3m, cubic
        sg[:, 193] = 2.0  # P6_3/mmc, hexagonal
        return ModelOutput(cs, sg, torch.zeros(()))


def _pointlists(n: int, seed: int = 0, lo: int = 0, hi: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = int(rng.integers(lo, hi + 1))
        spots = np.stack([rng.uniform(-1, 1, m), rng.uniform(-1, 1, m), rng.uniform(0.1, 1, m)], 1)
        beam = np.array([[0.004, -0.003, 5.0]])
        pl = np.concatenate([spots, beam]) if m % 2 else np.concatenate([beam, spots])
        out.append(pl.astype(np.float32))
    return out


def test_prediction_fields_and_consistency():
    pls = _pointlists(50, seed=1)
    pred = predict_pointlists(pls, model=tiny_model(), device="cpu")
    assert isinstance(pred, Prediction) and len(pred) == 50
    assert pred.crystal_system.shape == (50,) and pred.crystal_system.dtype == np.int64
    assert pred.space_group.shape == (50,)
    assert pred.confidence.shape == (50,)
    assert pred.crystal_system_probs.shape == (50, 7)
    assert pred.space_group_probs.shape == (50, 230)
    np.testing.assert_allclose(pred.crystal_system_probs.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(pred.space_group_probs.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(pred.crystal_system, pred.crystal_system_probs.argmax(1))
    assert np.all((pred.space_group >= 1) & (pred.space_group <= 230))
    np.testing.assert_array_equal(SG_TO_CS[pred.space_group - 1], pred.crystal_system)
    top = np.sort(pred.crystal_system_probs, 1)
    np.testing.assert_allclose(pred.confidence, top[:, -1] - top[:, -2], atol=1e-6)
    # direct beam removed: n_spots counts diffracted spots only
    np.testing.assert_array_equal(pred.n_spots, [len(p) - 1 for p in pls])


def test_label_codes_with_deterministic_model():
    pls = _pointlists(30, seed=2, lo=0, hi=20)
    pred = predict_pointlists(pls, model=SpotCountModel(), device="cpu")
    n = np.array([len(p) - 1 for p in pls])
    np.testing.assert_array_equal(pred.crystal_system, n % 7)
    # favourites within the system; ties (all equal) resolve to the first of the range
    expected_sg = np.array([1, 3, 16, 75, 143, 194, 225])[n % 7]
    np.testing.assert_array_equal(pred.space_group, expected_sg)


def test_batch_size_independence_and_padding():
    pls = _pointlists(37, seed=3, lo=0, hi=60)
    net = tiny_model(2)
    ref = predict_pointlists(pls, model=net, device="cpu", batch_size=1)
    for bs in (5, 64, None):
        got = predict_pointlists(pls, model=net, device="cpu", batch_size=bs)
        np.testing.assert_allclose(got.crystal_system_probs, ref.crystal_system_probs, atol=2e-5)
        np.testing.assert_allclose(got.space_group_probs, ref.space_group_probs, atol=2e-5)
        np.testing.assert_array_equal(got.n_spots, ref.n_spots)


def test_batches_sorted_by_spot_count():
    model = SpotCountModel()
    pls = _pointlists(40, seed=4, lo=1, hi=30)
    predict_pointlists(pls, model=model, device="cpu", batch_size=10)
    widths = [s[1] for s in model.seen]
    assert widths == sorted(widths)  # sorted batches: padding grows monotonically
    n = sorted(len(p) - 1 for p in pls)
    assert widths == [max(n[i : i + 10]) for i in range(0, 40, 10)]


def test_plan_batches_token_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 64, 1000)
    batches = _plan_batches(lengths, None, token_budget=512)
    got = np.sort(np.concatenate(batches))
    np.testing.assert_array_equal(got, np.arange(1000))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[b].max(), 1) <= 512


def test_empty_input_and_empty_patterns():
    pred = predict_pointlists([], model=tiny_model(), device="cpu")
    assert len(pred) == 0 and pred.space_group_probs.shape == (0, 230)
    pls = [np.zeros((0, 3)), np.array([[0.0, 0.0, 1.0]]), _pointlists(1, seed=5, lo=8, hi=8)[0]]
    pred = predict_pointlists(pls, model=tiny_model(), device="cpu")
    assert np.all(np.isfinite(pred.crystal_system_probs))
    np.testing.assert_array_equal(pred.n_spots, [0, 0, 8])


def test_bad_pointlist_shape():
    with pytest.raises(ValueError):
        predict_pointlists([np.zeros((4, 2))], model=tiny_model(), device="cpu")


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")


def test_missing_default_weights_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PY4DSTEM_GNN_WEIGHTS", str(tmp_path))
    from py4dstem_gnn import weights

    if "default" in weights.available_models():
        pytest.skip("shipped default weights exist")
    with pytest.raises(Exception, match="default"):
        predict_pointlists(_pointlists(2), model="default", device="cpu")


def _pred(cs_p: np.ndarray, sg_p: np.ndarray, n_spots) -> Prediction:
    return Prediction.from_probs(np.asarray(cs_p, float), np.asarray(sg_p, float), np.asarray(n_spots))


def test_aggregate_views_hand_example():
    # three patterns of material "b", one of material "a"
    cs = np.full((4, 7), 0.01)
    cs[0, 5], cs[0, 6] = 0.55, 0.39  # b: hexagonal-looking view ([111] of fcc)
    cs[1, 6], cs[1, 5] = 0.80, 0.14  # b: cubic
    cs[2, 6], cs[2, 5] = 0.70, 0.24  # b: cubic
    cs[3, 2], cs[3, 3] = 0.90, 0.04  # a: orthorhombic
    cs /= cs.sum(1, keepdims=True)
    sg = np.full((4, 230), 1e-4)
    sg[:, 224] = 0.5  # Fm-3m
    sg[:, 193] = 0.4  # P6_3/mmc
    sg[3, 61] = 0.9  # Pnma
    sg /= sg.sum(1, keepdims=True)
    pred = _pred(cs, sg, [10, 12, 14, 7])
    assert pred.crystal_system.tolist() == [5, 6, 6, 2]
    assert pred.space_group.tolist() == [194, 225, 225, 62]
    agg = aggregate_views(pred, np.array(["b", "b", "b", "a"]))
    assert len(agg) == 2
    assert agg.meta["groups"].tolist() == ["a", "b"]
    assert agg.crystal_system.tolist() == [2, 6]
    assert agg.space_group.tolist() == [62, 225]
    assert agg.n_spots.tolist() == [7, 36]
    # geometric mean of the three "b" views, renormalised
    g = np.exp(np.log(cs[:3]).mean(0))
    np.testing.assert_allclose(agg.crystal_system_probs[1], g / g.sum(), rtol=1e-5)
    np.testing.assert_allclose(agg.crystal_system_probs[0], cs[3], rtol=1e-5)
    top = np.sort(agg.crystal_system_probs, 1)
    np.testing.assert_allclose(agg.confidence, top[:, -1] - top[:, -2], atol=1e-6)


def test_aggregate_views_identity_and_errors():
    rng = np.random.default_rng(0)
    cs = rng.dirichlet(np.ones(7), 5)
    sg = rng.dirichlet(np.ones(230), 5)
    pred = _pred(cs, sg, [1, 2, 3, 4, 5])
    same = aggregate_views(pred, [4, 3, 2, 1, 0])
    np.testing.assert_allclose(same.crystal_system_probs, cs[::-1], rtol=1e-5)
    np.testing.assert_array_equal(same.space_group, pred.space_group[::-1])
    with pytest.raises(ValueError):
        aggregate_views(pred, [0, 1])


def test_consistent_labels_empty():
    cs, sg, conf = consistent_labels(np.zeros((0, 7)), np.zeros((0, 230)))
    assert cs.shape == sg.shape == conf.shape == (0,)


def test_cuda_oom_halves_the_batch(monkeypatch):
    """A CUDA out-of-memory error splits the batch and retries (simulated on the CPU)."""
    from py4dstem_gnn import network_stage
    from py4dstem_gnn import predict as predict_mod

    assert predict_mod._predict_spot_lists is network_stage.network_probabilities  # the old name stays importable

    calls: list[int] = []

    def fake_run_batch(net, ragged, idx, device, autocast):
        calls.append(len(idx))
        if len(idx) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        n = len(idx)
        cs = np.zeros((n, 7), np.float32)
        cs[np.arange(n), ragged.lengths[idx] % 7] = 1.0
        return cs, np.full((n, 230), 1 / 230, np.float32)

    monkeypatch.setattr(network_stage, "_run_batch", fake_run_batch)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    lists = [np.zeros((k, 3), np.float32) for k in range(19)]
    cs_p, sg_p = predict_mod._predict_spot_lists(lists, SpotCountModel(), torch.device("cuda"), batch_size=16)
    assert calls[0] == 16 and max(calls[1:]) <= 8
    np.testing.assert_array_equal(cs_p.argmax(1), np.arange(19) % 7)
    # on the CPU the error is not swallowed
    with pytest.raises(torch.OutOfMemoryError):
        predict_mod._predict_spot_lists(lists, SpotCountModel(), torch.device("cpu"), batch_size=16)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ragged_padding_equals_collate(seed):
    from py4dstem_gnn.features import collate
    from py4dstem_gnn.predict import RaggedSpots

    rng = np.random.default_rng(seed)
    lists = []
    for _ in range(25):
        m = int(rng.integers(0, 30))
        sp = np.stack([rng.uniform(-1, 1, m), rng.uniform(-1, 1, m), rng.integers(1, 4, m).astype(float)], 1)
        if m > 4:
            sp[1] = sp[0]  # an exact duplicate and many intensity ties
            sp[3, :2] = -sp[2, :2]
            sp[3, 2] = sp[2, 2]  # same intensity and radius, different angle
        lists.append(sp.astype(np.float32))
    max_spots = 12
    ragged = RaggedSpots.from_lists(lists).cap(max_spots)
    assert ragged.lengths.max() <= max_spots
    for idx in (np.arange(25), np.array([3]), np.array([7, 0, 19, 4]), np.array([i for i in range(25) if len(lists[i]) == 0][:1] or [0])):
        x, m = ragged.pad(idx)
        xr, mr = collate([lists[i] for i in idx], max_spots)
        torch.testing.assert_close(x, xr, rtol=0, atol=0)
        torch.testing.assert_close(m, mr)


def _card(threshold: float = 0.5) -> dict:
    return {
        "confidence_calibration": {
            "score": "margin", "x": [0.0, 0.5, 1.0], "y": [0.1, 0.3, 0.6], "n": 500,
            "by_views": {"2": {"x": [0.0, 1.0], "y": [0.2, 0.9], "n": 200}},
        },
        "confidence_threshold": threshold,
        "conformal": {"levels": [0.8, 0.9], "default_coverage": 0.9,
                      "by_views": {"1": {"n": 500, "cs": [0.5, 0.7], "sg": [0.9, 0.99]},
                                   "2": {"n": 200, "cs": [0.4, 0.6], "sg": [0.8, 0.95]}}},
    }


def test_confidence_is_calibrated_when_the_card_has_a_calibration(caplog):
    pls = _pointlists(12, seed=6)
    raw = predict_pointlists(pls, model=tiny_model(), device="cpu")
    assert raw.meta["confidence_calibrated"] is False
    net = tiny_model()
    net.card = _card()
    caplog.clear()
    with caplog.at_level("WARNING", logger="py4dstem_gnn.calibration"):
        pred = predict_pointlists(pls, model=net, device="cpu")
    assert "no confidence calibration" not in caplog.text
    assert pred.meta["confidence_calibrated"] is True
    margin = np.sort(pred.crystal_system_probs, 1)
    margin = margin[:, -1] - margin[:, -2]
    np.testing.assert_allclose(pred.confidence, np.interp(margin, [0, 0.5, 1], [0.1, 0.3, 0.6]), atol=1e-6)
    np.testing.assert_array_equal(pred.crystal_system, raw.crystal_system)  # labels unchanged
    sets = pred.sets()
    assert sets.coverage == 0.9 and sets.cs_mask.shape == (12,)
    assert np.all(sets.cs_mask >> pred.crystal_system & 1)  # the label is always in its set


def test_aggregate_views_uses_the_calibration_of_its_number_of_views():
    pls = _pointlists(9, seed=7)
    net = tiny_model()
    net.card = _card()
    pred = predict_pointlists(pls, model=net, device="cpu")
    groups = np.array([0, 0, 1, 2, 2, 2, 3, 3, 4])
    agg = aggregate_views(pred, groups)
    assert agg.meta["n_views"].tolist() == [2, 1, 3, 2, 1]
    margin = np.sort(agg.crystal_system_probs, 1)
    margin = margin[:, -1] - margin[:, -2]
    two = agg.meta["n_views"] >= 2  # 3 views: no own map, the largest calibrated below (2)
    np.testing.assert_allclose(agg.confidence[two], np.interp(margin[two], [0, 1], [0.2, 0.9]), atol=1e-6)
    np.testing.assert_allclose(agg.confidence[~two], np.interp(margin[~two], [0, 0.5, 1], [0.1, 0.3, 0.6]), atol=1e-6)
    from py4dstem_gnn.conformal import cs_set_mask

    sets = agg.sets(0.8)
    np.testing.assert_array_equal(sets.cs_mask[two], cs_set_mask(agg.crystal_system_probs[two], 0.4))
    np.testing.assert_array_equal(sets.cs_mask[~two], cs_set_mask(agg.crystal_system_probs[~two], 0.5))
