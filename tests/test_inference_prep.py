"""prepare_for_inference: the speed choices keep the model's function (or stay close, for bf16/int8)."""

from __future__ import annotations

import pytest
import torch

from py4dstem_gnn.model import ModelConfig, PEAGGMoE
from py4dstem_gnn.model.inference import InferenceModel, prepare_for_inference

TINY = dict(feature_dim=16, hidden_dim=16, n_layers=2, n_heads=4, ffn_dim=16, max_spots=32, lattice_token=True)


def _model() -> PEAGGMoE:
    torch.manual_seed(0)
    net = PEAGGMoE(ModelConfig(**TINY)).eval()
    for p in net.lattice.parameters():  # zero-initialised token: give it a say
        torch.nn.init.normal_(p, std=0.2)
    return net


def _batch(b: int = 6, n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    spots = torch.cat([torch.rand(b, n, 2, generator=g) * 2 - 1, torch.rand(b, n, 1, generator=g)], -1)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, 12:] = False  # padding
    mask[3, 5:] = False
    return spots, mask


@pytest.mark.parametrize("fuse_moe,attention", [(True, "explicit"), (False, "sdpa"), (True, "sdpa")])
def test_fused_moe_and_sdpa_keep_the_function(fuse_moe, attention):
    net = _model()
    spots, mask = _batch()
    with torch.inference_mode():
        ref = net(spots, mask)
        out = prepare_for_inference(net, "fp32", fuse_moe=fuse_moe, attention=attention)(spots, mask)
    torch.testing.assert_close(out.cs_logits, ref.cs_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.sg_logits, ref.sg_logits, rtol=1e-4, atol=1e-5)


def test_bf16_and_int8_stay_close():
    net = _model()
    spots, mask = _batch()
    with torch.inference_mode():
        ref = torch.softmax(net(spots, mask).cs_logits, -1)
        for precision in ("bf16", "int8"):
            out = torch.softmax(prepare_for_inference(net, precision)(spots, mask).cs_logits.float(), -1)
            assert (out - ref).abs().max() < 0.1, precision


def test_the_original_is_untouched_and_config_kept():
    net = _model()
    net.card = {"name": "tiny"}
    keys = set(net.state_dict())
    prepared = prepare_for_inference(net)
    assert prepared.card == {"name": "tiny"} and prepared.num_parameters() == net.num_parameters()
    assert isinstance(prepared, InferenceModel) and prepared.config is not None
    assert prepared.config.max_spots == TINY["max_spots"]
    assert set(net.state_dict()) == keys
    assert all(m.fused is None for m in net.modules() if hasattr(m, "fused"))
    assert not any(getattr(m, "sdpa", False) for m in net.modules())
    assert prepare_for_inference(prepared) is prepared


def test_training_mode_takes_the_sparse_path():
    net = _model()
    prepared = prepare_for_inference(net, "fp32").net.train()
    spots, mask = _batch()
    out = prepared(spots, mask)
    assert out.aux_loss > 0  # the load-balancing loss exists only on the sparse path


def test_auto_precision_follows_the_cpu(monkeypatch):
    import py4dstem_gnn.model.inference as inf

    net = _model()
    monkeypatch.setattr(inf, "cpu_has_native_bf16", lambda: True)
    assert prepare_for_inference(net).autocast_dtype == torch.bfloat16
    monkeypatch.setattr(inf, "cpu_has_native_bf16", lambda: False)
    assert prepare_for_inference(net).autocast_dtype is None
    assert prepare_for_inference(net, "fp32").autocast_dtype is None


def test_bad_arguments():
    net = _model()
    with pytest.raises(ValueError):
        prepare_for_inference(net, "fp8")
    with pytest.raises(ValueError):
        prepare_for_inference(net, attention="flash")
