"""Weights: save/load round trip, checksum and config verification, helpful errors."""

from __future__ import annotations

import json

import pytest
import torch

from py4dstem_gnn.model import ModelConfig, PEAGGMoE
from py4dstem_gnn.weights import WeightsIntegrityError, load_model, resolve_weights, save_weights

TINY = dict(feature_dim=16, hidden_dim=16, n_layers=1, n_heads=4, ffn_dim=16)


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model = PEAGGMoE(ModelConfig(**TINY))
    path = save_weights(model, tmp_path, "tiny", note="test")
    return model, path


def test_round_trip_is_exact(saved):
    model, path = saved
    loaded = load_model(path)
    assert not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["note"] == "test" and card["config"]["hidden_dim"] == 16
    assert path.with_suffix(".sha256").read_text().split()[0] == card["sha256"]


def test_truncated_file_is_refused(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsIntegrityError, match="checksum mismatch"):
        load_model(path)


def test_altered_file_is_refused(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError):
        load_model(path)


def test_card_config_must_match_tensors(saved):
    _, path = saved
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["config"]["n_layers"] = 2
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="do not match"):
        load_model(path)


def test_missing_file_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="looked for"):
        resolve_weights(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_model("no-such-model")


def test_wrong_type_is_a_type_error():
    with pytest.raises(TypeError):
        load_model(3.0)


def test_loaded_model_passes_through():
    model = PEAGGMoE(ModelConfig(**TINY)).train()
    assert load_model(model) is model and not model.training


@pytest.mark.parametrize("feature_set", ["polar", "polar+neighbours"])
def test_card_names_every_input_channel(feature_set):
    from py4dstem_gnn.weights import model_card

    net = PEAGGMoE(ModelConfig(feature_set=feature_set, feature_dim=16, hidden_dim=16, n_layers=1, n_heads=2, ffn_dim=16))
    norm = model_card(net)["feature_normalisation"]
    assert len(norm["features"]) == len(norm["mean"]) == len(norm["std"]) == net.config.in_features
