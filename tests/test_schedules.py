"""Learning-rate schedules: the cosine of old, the WSD shape, and which extensions keep the rates taken."""

from __future__ import annotations

import math

import numpy as np
import pytest

from py4dstem_gnn.training.schedules import DEFAULT_DECAY_FRACTION, Schedule, make_schedule


def _old_cosine(step, lr, steps, warmup, min_ratio):
    """The cosine schedule as train.lr_at computed it before schedules.py."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@pytest.mark.parametrize("steps, warmup", [(100, 10), (2400, 50), (7, 2), (5, 0)])
def test_cosine_is_the_previous_schedule(steps, warmup):
    s = make_schedule("cosine", 5e-4, steps, warmup, 0.05)
    for step in range(steps + 3):
        assert s.lr(step) == pytest.approx(_old_cosine(step, 5e-4, steps, warmup, 0.05), rel=1e-12)


@pytest.mark.parametrize("shape", ["sqrt", "linear", "cosine"])
def test_wsd_warms_up_holds_then_decays_to_the_floor(shape):
    s = make_schedule("wsd", 1.0, 100, 10, 0.1, decay_steps=20, decay_shape=shape)
    lrs = s.lrs(np.arange(120))
    np.testing.assert_allclose(lrs[:10], np.arange(1, 11) / 10)
    assert np.all(lrs[10:80] == 1.0) and s.decay_start == 80
    assert np.all(np.diff(lrs[79:100]) < 0)  # strictly decreasing through the decay
    assert lrs[99] == pytest.approx(0.1) and np.all(lrs[100:] == pytest.approx(0.1))
    assert [s.phase(t) for t in (0, 50, 85, 100)] == ["warmup", "stable", "decay", "end"]
    mid = s.lr(89)  # half-way through the decay
    expected = {"sqrt": 1 - math.sqrt(0.5), "linear": 0.5, "cosine": 0.5}[shape]
    assert mid == pytest.approx(0.1 + 0.9 * expected)


def test_wsd_default_decay_and_short_runs():
    s = make_schedule("wsd", 1.0, 1000, 10, 0.0)
    assert s.decay_steps == math.ceil(DEFAULT_DECAY_FRACTION * 1000) and s.decay_start == 800
    short = make_schedule("wsd", 1.0, 12, 10, 0.0, decay_steps=8)  # decay cannot start inside the warm-up
    assert short.decay_start == 10 and short.lr(9) == 1.0 and short.lr(11) == pytest.approx(0.0)


def test_which_extensions_keep_the_rates_already_taken():
    short = make_schedule("wsd", 1e-3, 1000, 50, 0.0, decay_steps=100)
    longer = make_schedule("wsd", 1e-3, 5000, 50, 0.0, decay_steps=500)
    assert longer.agrees_with(short, 900)  # the whole constant phase
    assert not longer.agrees_with(short, 901)  # the first decayed step differs
    cos_a, cos_b = make_schedule("cosine", 1e-3, 1000, 50, 0.05), make_schedule("cosine", 1e-3, 2000, 50, 0.05)
    assert cos_a.agrees_with(cos_b, 51) and not cos_a.agrees_with(cos_b, 60)
    assert not short.agrees_with(make_schedule("wsd", 2e-3, 1000, 50, 0.0, decay_steps=100), 60)


def test_record_roundtrip_and_validation():
    s = make_schedule("wsd", 3e-4, 10_000, 100, 0.01, decay_steps=1000, decay_shape="linear")
    assert Schedule.from_dict({**s.to_dict(), "unknown": 1}) == s
    with pytest.raises(ValueError):
        Schedule(kind="step")
    with pytest.raises(ValueError):
        Schedule(kind="wsd", decay_shape="exp")
