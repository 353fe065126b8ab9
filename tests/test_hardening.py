"""Hardening of the public inference functions (issue 6): explicit bad inputs, determinism,
memory bounds and the CUDA out-of-memory fallback.

Every case listed in ``docs/guarantees.md`` has a test here; the random counterpart is
``tests/test_fuzz.py``.
"""

from __future__ import annotations

import functools

import logging
import os
import subprocess
import sys
import textwrap
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from py4dstem_gnn import network_stage
from py4dstem_gnn import predict as predict_mod
from py4dstem_gnn.predict import (
    CPU_TOKEN_BUDGET,
    Prediction,
    RaggedSpots,
    _predict_spot_lists,
    aggregate_views,
    predict_pointlists,
)
from py4dstem_gnn.labels import SG_TO_CS
from py4dstem_gnn.model import ModelConfig, PEAGGMoE

# these tests exercise the network stage: the match stage (phases='pool' by default) is tested in test_matching.py
predict_pointlists = functools.partial(predict_pointlists, phases=None)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def net() -> PEAGGMoE:
    torch.manual_seed(0)
    return PEAGGMoE(ModelConfig(feature_dim=16, hidden_dim=16, n_layers=1, n_heads=4, ffn_dim=16)).eval()


def _pattern(n: int, seed: int = 0, beam: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pl = np.concatenate([rng.uniform(-1.5, 1.5, (n, 2)), rng.exponential(1.0, (n, 1))], axis=1)
    if beam:
        pl = np.concatenate([[[0.001, -0.002, 20.0]], pl])
    return pl


def _calibrated_bv(pointlists_px, shape, origin=(64.0, 64.0), q_pixel_size=0.02):
    from py4dstem_gnn.data.synthetic import braggvectors_from_pointlists

    bv = braggvectors_from_pointlists(pointlists_px, shape, (128, 128))
    bv.calibration.set_origin(origin)
    bv.calibration.set_Q_pixel_size(q_pixel_size)
    bv.calibration.set_Q_pixel_units("A^-1")
    bv.setcal()
    return bv


# --------------------------------------------------------------------------------------
# predict_pointlists: explicit cases
# --------------------------------------------------------------------------------------


BAD_POINTLISTS = [
    ("a single (n, 3) array", lambda: _pattern(5), TypeError, "pass a sequence"),
    ("an int", lambda: 5, TypeError, "sequence of"),
    ("a string", lambda: "spots.h5", TypeError, "sequence of"),
    ("a dict", lambda: {"a": _pattern(3)}, TypeError, "sequence of"),
    ("None in the list", lambda: [None], TypeError, "pointlist 0"),
    ("text in the list", lambda: [_pattern(3), "x"], TypeError, "pointlist 1"),
    ("complex values", lambda: [_pattern(3) + 1j], TypeError, "complex"),
    ("boolean values", lambda: [np.ones((3, 3), bool)], TypeError, "bool"),
    ("non-numeric objects", lambda: [np.array([[1, 2, "x"]], object)], TypeError, "non-numeric"),
    ("two columns", lambda: [np.zeros((4, 2))], ValueError, r"shape \(n, 3\)"),
    ("a flat array", lambda: [np.zeros(6)], ValueError, r"shape \(n, 3\)"),
    ("a 3-d array", lambda: [np.zeros((2, 3, 3))], ValueError, r"shape \(n, 3\)"),
    ("ragged rows", lambda: [[[1.0, 2.0, 3.0], [4.0, 5.0]]], ValueError, "rectangular"),
    ("pixel units", lambda: [_pattern(10) * [100.0, 100.0, 1.0]], ValueError, "detector pixels"),
]


@pytest.mark.parametrize("case, make, error, match", BAD_POINTLISTS, ids=[c[0] for c in BAD_POINTLISTS])
def test_bad_pointlists_raise_clear_errors(net, case, make, error, match):
    with pytest.raises(error, match=match):
        predict_pointlists(make(), model=net, device="cpu")


BAD_PARAMETERS = [
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=-3), ValueError, "batch_size"),
    (dict(batch_size=2.5), TypeError, "batch_size"),
    (dict(direct_beam_tolerance=-0.1), ValueError, "direct_beam_tolerance"),
    (dict(direct_beam_tolerance=float("nan")), ValueError, "direct_beam_tolerance"),
    (dict(device="tpu"), ValueError, "unknown device"),
    (dict(device=3), TypeError, "device"),
    (dict(model=3), TypeError, "model must be"),
    (dict(model="no-such-weights"), FileNotFoundError, "looked for"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD_PARAMETERS, ids=[str(c[0]) for c in BAD_PARAMETERS])
def test_bad_parameters_raise_clear_errors(net, kwargs, error, match):
    kwargs = {"model": net, "device": "cpu", **kwargs}
    with pytest.raises(error, match=match):
        predict_pointlists([_pattern(5)], **kwargs)


def test_documented_behaviour_of_unusual_but_valid_pointlists(net, caplog):
    nan_pl = _pattern(6, seed=1)
    nan_pl[2, 0] = np.nan
    nan_pl[4, 2] = np.inf
    neg_pl = _pattern(6, seed=2)
    neg_pl[1:3, 2] *= -1
    dup = _pattern(6, seed=3)
    dup = np.concatenate([dup, dup[1:]])
    cases = {
        "empty list": np.zeros((0, 3)),
        "empty 1-d": np.zeros(0),
        "beam only": np.array([[0.0, 0.0, 5.0]]),
        "one spot": np.array([[0.5, 0.3, 1.0]]),
        "many spots": _pattern(3000, seed=4),
        "nan/inf": nan_pl,
        "negative": neg_pl,
        "duplicates": dup,
        "int dtype": np.array([[0, 0, 5], [1, 0, 2], [0, 1, 3]]),
        "torch tensor": torch.as_tensor(_pattern(4, seed=5)),
    }
    with caplog.at_level(logging.WARNING, logger="py4dstem_gnn.validation"):
        pred = predict_pointlists(list(cases.values()), model=net, device="cpu")
    assert len(pred) == len(cases)
    n_spots = dict(zip(cases, pred.n_spots.tolist()))
    assert n_spots["empty list"] == n_spots["empty 1-d"] == n_spots["beam only"] == 0
    assert n_spots["one spot"] == 1
    assert n_spots["many spots"] == 3000  # all counted; the model sees the max_spots brightest
    assert n_spots["nan/inf"] == 4  # 7 spots, 2 non-finite dropped, the beam removed
    assert n_spots["negative"] == 6  # kept (counted as zero intensity by the model)
    assert n_spots["duplicates"] == 12  # 6 spots + 6 copies: duplicates are kept as given
    assert n_spots["int dtype"] == 2
    assert np.isfinite(pred.crystal_system_probs).all() and np.isfinite(pred.space_group_probs).all()
    assert np.array_equal(SG_TO_CS[pred.space_group - 1], pred.crystal_system)
    text = caplog.text
    assert "dropped 2 spot(s) with NaN or inf" in text
    assert "negative intensity" in text


def test_empty_input_gives_empty_prediction(net):
    pred = predict_pointlists([], model=net, device="cpu")
    assert len(pred) == 0 and pred.crystal_system_probs.shape == (0, 7)
    assert pred.space_group_probs.shape == (0, 230)


def test_nonfinite_spot_does_not_hide_the_direct_beam(net):
    """A NaN spot is dropped before the direct beam is looked for (argmin of NaN would pick it)."""
    pl = np.array([[np.nan, np.nan, 1.0], [0.0, 0.0, 9.0], [0.4, 0.1, 1.0], [-0.3, 0.2, 2.0]])
    pred = predict_pointlists([pl], model=net, device="cpu")
    ref = predict_pointlists([pl[2:]], model=net, device="cpu", direct_beam_tolerance=0.0)
    assert pred.n_spots.tolist() == [2]
    np.testing.assert_allclose(pred.crystal_system_probs, ref.crystal_system_probs, atol=1e-6)


AGG_BAD = [
    ("not a Prediction", lambda p: ("x", [0, 1]), TypeError, "Prediction"),
    ("groups None", lambda p: (p, None), TypeError, "groups"),
    ("groups too short", lambda p: (p, [0]), ValueError, "one key per pattern"),
    ("groups 2-d", lambda p: (p, [[0, 1]]), ValueError, "one key per pattern"),
    ("NaN group keys", lambda p: (p, [np.nan, 1.0]), ValueError, "NaN"),
]


@pytest.mark.parametrize("case, make, error, match", AGG_BAD, ids=[c[0] for c in AGG_BAD])
def test_aggregate_views_bad_arguments(net, case, make, error, match):
    pred = predict_pointlists([_pattern(5, 1), _pattern(6, 2)], model=net, device="cpu")
    with pytest.raises(error, match=match):
        aggregate_views(*make(pred))


def test_aggregate_views_of_nothing_is_empty(net):
    pred = predict_pointlists([], model=net, device="cpu")
    agg = aggregate_views(pred, [])
    assert len(agg) == 0


# --------------------------------------------------------------------------------------
# classify_braggvectors: explicit cases
# --------------------------------------------------------------------------------------


def _spots_px(n, seed=0, origin=(64.0, 64.0)):
    rng = np.random.default_rng(seed)
    sp = np.concatenate([rng.uniform(10, 118, (n, 2)), rng.exponential(1.0, (n, 1))], axis=1)
    return np.concatenate([[[origin[0], origin[1], 10.0]], sp])


def test_classify_uncalibrated_braggvectors_names_the_missing_calibration(net):
    from py4dstem_gnn.classify import classify_braggvectors as _classify

    classify_braggvectors = functools.partial(_classify, phases=None)
    from py4dstem_gnn.data.synthetic import random_braggvectors

    bv = random_braggvectors((2, 2), calibrate=False)
    with pytest.raises(ValueError, match="not calibrated: missing origin .* and Q pixel size"):
        classify_braggvectors(bv, model=net, device="cpu", progress=False)


def test_classify_pixel_units_and_empty_scan(net):
    import py4DSTEM

    from py4dstem_gnn.classify import classify_braggvectors as _classify

    classify_braggvectors = functools.partial(_classify, phases=None)

    bv = _calibrated_bv([_spots_px(8, s) for s in range(4)], (2, 2), q_pixel_size=1.5)
    with pytest.raises(ValueError, match="detector pixels"):
        classify_braggvectors(bv, model=net, device="cpu", progress=False)
    for shape in [(0, 0), (0, 4)]:
        empty = py4DSTEM.BraggVectors(shape, (128, 128))
        with pytest.raises(ValueError, match="scan is empty"):
            classify_braggvectors(empty, model=net, device="cpu", progress=False)
    with pytest.raises(TypeError, match="BraggVectors"):
        classify_braggvectors(np.zeros((4, 4)), model=net, device="cpu", progress=False)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(min_spots=-1), ValueError, "min_spots"),
        (dict(min_spots=2.5), TypeError, "min_spots"),
        (dict(min_spots="5"), TypeError, "min_spots"),
        (dict(median_filter=0), ValueError, "median_filter"),
        (dict(median_filter=2.5), TypeError, "median_filter"),
        (dict(confidence_threshold=float("nan")), ValueError, "confidence_threshold"),
        (dict(confidence_threshold=1.5), ValueError, "confidence_threshold"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(direct_beam_tolerance=-1.0), ValueError, "direct_beam_tolerance"),
        (dict(model="no-such-weights"), FileNotFoundError, "looked for"),
        (dict(model=None), TypeError, "model must be"),
    ],
)
def test_classify_bad_parameters(net, kwargs, error, match):
    from py4dstem_gnn.classify import classify_braggvectors as _classify

    classify_braggvectors = functools.partial(_classify, phases=None)

    bv = _calibrated_bv([_spots_px(8, s) for s in range(4)], (2, 2))
    kwargs = {"model": net, "device": "cpu", "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        classify_braggvectors(bv, **kwargs)


def test_classify_odd_scans_and_nan_vectors(net, caplog):
    from py4dstem_gnn.classify import classify_braggvectors as _classify

    classify_braggvectors = functools.partial(_classify, phases=None)

    for shape in [(1, 7), (7, 1), (1, 1)]:
        n = shape[0] * shape[1]
        maps = classify_braggvectors(
            _calibrated_bv([_spots_px(8, s) for s in range(n)], shape),
            model=net,
            device="cpu",
            progress=False,
            confidence_threshold=0.0,
        )
        assert maps.data.shape[1:] == shape
        assert (maps["valid"].data == 1).all()
    # empty positions, a single spot, NaN vectors
    pls = [np.zeros((0, 3)), _spots_px(0), _spots_px(1), _spots_px(8, 1), _spots_px(8, 1).copy()]
    pls[4][3, 0] = np.nan
    pls[4][5, 2] = np.nan
    with caplog.at_level(logging.WARNING):
        maps = classify_braggvectors(
            _calibrated_bv(pls, (1, 5)), model=net, device="cpu", progress=False, confidence_threshold=0.0
        )
    assert "dropped 2 Bragg vector(s) with NaN or inf" in caplog.text
    assert maps["n_spots"].data.ravel().tolist() == [0, 0, 1, 8, 6]
    assert maps["valid"].data.ravel().tolist() == [0, 0, 0, 1, 1]
    assert maps["crystal_system"].data.ravel()[:3].tolist() == [-1, -1, -1]
    assert np.isfinite(maps.data).all()


# --------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------


def test_same_input_same_maps_and_thread_count_only_rounds(net):
    from py4dstem_gnn.classify import classify_braggvectors as _classify

    classify_braggvectors = functools.partial(_classify, phases=None)
    from py4dstem_gnn.data.synthetic import random_braggvectors

    bv = random_braggvectors((6, 7), spots=(3, 40), seed=4)
    a = classify_braggvectors(bv, model=net, device="cpu", progress=False)
    b = classify_braggvectors(bv, model=net, device="cpu", progress=False)
    assert np.array_equal(a.data, b.data)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        c = classify_braggvectors(bv, model=net, device="cpu", progress=False)
    finally:
        torch.set_num_threads(before)
    labels = list(a.slicelabels)
    p_idx = [i for i, name in enumerate(labels) if name.startswith("p_")]
    np.testing.assert_allclose(c.data[p_idx], a.data[p_idx], atol=1e-5)
    # labels agree except where two classes are tied to float rounding
    conf = a["confidence"].data
    same = a["crystal_system_raw"].data == c["crystal_system_raw"].data
    assert np.all(same | (conf < 1e-4))


def test_predict_twice_is_bitwise_identical(net):
    pls = [_pattern(n, seed=n) for n in (0, 1, 5, 30, 120)]
    a = predict_pointlists(pls, model=net, device="cpu")
    b = predict_pointlists(pls, model=net, device="cpu")
    assert np.array_equal(a.crystal_system_probs, b.crystal_system_probs)
    assert np.array_equal(a.space_group_probs, b.space_group_probs)


# --------------------------------------------------------------------------------------
# memory: batches are bounded whatever the scan size
# --------------------------------------------------------------------------------------


class _RecordingStub(torch.nn.Module):
    """A model stand-in that records the size of every batch (no compute)."""

    def __init__(self, max_spots: int = 64) -> None:
        super().__init__()
        self.config = SimpleNamespace(max_spots=max_spots)
        self.tokens: list[int] = []

    def forward(self, spots: torch.Tensor, mask: torch.Tensor) -> SimpleNamespace:
        self.tokens.append(int(mask.numel()))
        b = spots.shape[0]
        cs = spots[..., 2].sum(1, keepdim=True) * torch.arange(7, dtype=spots.dtype)
        return SimpleNamespace(cs_logits=cs, sg_logits=torch.zeros(b, 230), aux_loss=torch.zeros(()))


def _ragged(n: int, seed: int = 0) -> RaggedSpots:
    """n patterns, mostly 5 spots, one in a hundred 200 spots (capped at 64)."""
    rng = np.random.default_rng(seed)
    lengths = np.where(rng.random(n) < 0.01, 200, 5)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    spots = rng.uniform(0.1, 1.0, (int(offsets[-1]), 3)).astype(np.float32)
    return RaggedSpots(spots, offsets)


def test_batches_are_bounded_whatever_the_scan_size():
    stub = _RecordingStub()
    for n in (1_000, 200_000):
        stub.tokens.clear()
        _predict_spot_lists(_ragged(n), stub, torch.device("cpu"), space_group_probs=False)
        assert max(stub.tokens) <= CPU_TOKEN_BUDGET, (n, max(stub.tokens))
    # the public path too, on 50k tiny pointlists
    stub.tokens.clear()
    rng = np.random.default_rng(1)
    pls = [rng.uniform(0.1, 1.0, (4, 3)) for _ in range(50_000)]
    pred = predict_pointlists(pls, model=stub, device="cpu")
    assert len(pred) == 50_000 and max(stub.tokens) <= CPU_TOKEN_BUDGET


def test_host_memory_grows_with_the_outputs_not_the_padded_scan():
    """200k patterns: peak numpy memory is a few copies of the flat spots, not a padded scan."""
    n = 200_000
    ragged = _ragged(n)
    stub = _RecordingStub()
    padded_all_at_once = n * 64 * (3 * 4 + 1)  # (n, 64, 3) float32 + (n, 64) mask: ~166 MB
    outputs = n * (7 * 4 + 8)  # (n, 7) float32 probabilities + (n,) int64 labels
    tracemalloc.start()
    try:
        _predict_spot_lists(ragged, stub, torch.device("cpu"), space_group_probs=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    inputs = ragged.spots.nbytes + ragged.offsets.nbytes
    # a few copies of the flat spots (capping long patterns copies them once) and the outputs;
    # never a padded (n, max_spots) array nor an (n, 230) array (n * 920 B = 184 MB here)
    assert peak < 3 * (inputs + outputs) + 16e6, (peak, inputs, outputs)
    assert peak < padded_all_at_once / 2, (peak, padded_all_at_once)


@pytest.mark.slow
def test_rss_of_a_large_scan_with_the_real_model_stays_small(tmp_path):
    """In a fresh process: 400k patterns through a (tiny) real model add well under 1 GB RSS."""
    script = tmp_path / "rss.py"
    script.write_text(
        textwrap.dedent(
            """
            import numpy as np, torch
            torch.set_num_threads(1)
            from py4dstem_gnn.model import ModelConfig, PEAGGMoE
            from py4dstem_gnn.predict import RaggedSpots, _predict_spot_lists
            torch.manual_seed(0)
            net = PEAGGMoE(ModelConfig(feature_dim=16, hidden_dim=16, n_layers=1, n_heads=4, ffn_dim=16)).eval()
            n = 400_000
            rng = np.random.default_rng(0)
            lengths = rng.integers(3, 12, n)
            offsets = np.zeros(n + 1, np.int64); np.cumsum(lengths, out=offsets[1:])
            spots = rng.uniform(-1, 1, (int(offsets[-1]), 3)).astype(np.float32)
            ragged = RaggedSpots(spots, offsets)
            _predict_spot_lists(RaggedSpots(spots[:100], offsets[:11]), net, torch.device("cpu"))

            def status(key):
                with open("/proc/self/status") as f:
                    return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

            before = status("VmRSS:")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak (VmHWM) to the current RSS
            cs, sg = _predict_spot_lists(ragged, net, torch.device("cpu"), space_group_probs=False)
            print(status("VmHWM:") - before)
            """
        )
    )
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc to reset the peak RSS")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    growth = int(out.stdout.strip().splitlines()[-1])
    # the spots (400k x ~7 x 12 B = 34 MB) exist before the call; the outputs take 14 MB; the
    # batches add a bounded amount (measured: 46 MB in all on the development machine)
    assert growth < 300e6, growth


# --------------------------------------------------------------------------------------
# CUDA out-of-memory: halve the batch and retry
# --------------------------------------------------------------------------------------


def test_cuda_oom_halves_the_batch_and_gives_the_same_result(net, monkeypatch, caplog):
    """Simulated: the forward raises torch.cuda.OutOfMemoryError for batches above 3 patterns."""
    pls = [_pattern(n, seed=n) for n in (2, 3, 5, 8, 13, 21, 34, 40, 1, 0)]
    ref = predict_pointlists(pls, model=net, device="cpu")
    real_run_batch = predict_mod._run_batch
    sizes: list[int] = []

    def fake_run_batch(net_, ragged, idx, device, autocast):
        sizes.append(int(idx.size))
        if idx.size > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run_batch(net_, ragged, idx, torch.device("cpu"), autocast)

    monkeypatch.setattr(network_stage, "_run_batch", fake_run_batch)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    spot_lists = [p[1:] for p in pls]  # direct beam removed, as the public path does
    with caplog.at_level(logging.WARNING, logger="py4dstem_gnn.predict"):
        cs, sg = _predict_spot_lists(spot_lists, net, torch.device("cuda"), batch_size=10)
    assert sizes[0] == 10 and sum(s for s in sizes if s <= 3) == 10  # every pattern run once
    assert "CUDA out of memory" in caplog.text
    np.testing.assert_allclose(cs, ref.crystal_system_probs, atol=1e-5)
    np.testing.assert_allclose(sg, ref.space_group_probs, atol=1e-5)


def test_oom_of_a_single_pattern_and_cpu_errors_are_not_swallowed(net, monkeypatch):
    def always_oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(network_stage, "_run_batch", always_oom)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _predict_spot_lists([_pattern(4)], net, torch.device("cuda"), batch_size=4)
    with pytest.raises(torch.cuda.OutOfMemoryError):  # on the CPU there is nothing to halve
        _predict_spot_lists([_pattern(4), _pattern(5)], net, torch.device("cpu"), batch_size=4)


def test_prediction_type_is_returned(net):
    assert isinstance(predict_pointlists([_pattern(3)], model=net, device="cpu"), Prediction)
