"""The lattice token and the pair-geometry bias: invariant, function-preserving when added, trainable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from py4dstem_gnn.model import ModelConfig, PEAGGMoE, PairGeometryBias, n_lattice_descriptors, pattern_descriptors
from py4dstem_gnn.toy import ToyLatticeSource
from py4dstem_gnn.training.train import TrainConfig, Trainer, warm_start
from py4dstem_gnn.weights import save_weights

TINY = dict(feature_dim=16, hidden_dim=16, n_layers=1, n_heads=4, ffn_dim=16, max_spots=32)


def _square_net(n: int = 3, a: float = 0.3, angle: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One padded pattern: a square net of spacing ``a`` (1/Å) rotated by ``angle`` (no direct beam)."""
    pts = [(h * a, k * a, 1.0 / (1 + h * h + k * k)) for h in range(-n, n + 1) for k in range(-n, n + 1) if (h, k) != (0, 0)]
    q = torch.tensor(pts, dtype=torch.float32)
    c, s = math.cos(angle), math.sin(angle)
    q[:, :2] = q[:, :2] @ torch.tensor([[c, s], [-s, c]])
    return q[None], torch.ones(1, len(q), dtype=torch.bool)


def _grown(base: PEAGGMoE, **overrides) -> PEAGGMoE:
    grown = PEAGGMoE(ModelConfig.from_dict({**base.config.to_dict(), **overrides}))
    missing, unexpected = grown.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("lattice.", "pair_bias.")) for k in missing)
    return grown


def test_new_inputs_keep_the_function_until_trained():
    torch.manual_seed(0)
    base = PEAGGMoE(ModelConfig(**TINY)).eval()
    grown = _grown(base, lattice_token=True, pair_encoding=True).eval()
    spots, mask = _square_net()
    torch.testing.assert_close(grown(spots, mask).cs_logits, base(spots, mask).cs_logits)
    # once the zero-initialised maps move, the lattice token changes the output
    with torch.no_grad():
        grown.lattice.to_head.weight.normal_()
        grown.lattice.to_head.bias.normal_()
    assert not torch.allclose(grown(spots, mask).cs_logits, base(spots, mask).cs_logits)


def test_descriptors_and_pair_bias_do_not_see_the_in_plane_angle():
    a, m = _square_net(angle=0.0)
    b, _ = _square_net(angle=0.7)
    da, db = pattern_descriptors(a, m), pattern_descriptors(b, m)
    assert da.shape == (1, n_lattice_descriptors())
    torch.testing.assert_close(da, db, atol=1e-3, rtol=1e-3)
    assert da[0, 3] == pytest.approx(0.3, abs=1e-3)  # a* of the reduced cell
    bias = PairGeometryBias(4)
    with torch.no_grad():
        bias.mlp[-1].weight.normal_()
    torch.testing.assert_close(bias(a[..., :2]), bias(b[..., :2]), atol=1e-4, rtol=1e-4)


def test_pair_bias_resolves_close_spacings():
    """Nets 0.005 1/Å apart give different pair features (the coarse radial basis could not)."""
    torch.manual_seed(0)
    bias = PairGeometryBias(4)
    with torch.no_grad():
        bias.mlp[-1].weight.normal_()
    a, _ = _square_net(a=0.300)
    b, _ = _square_net(a=0.305)
    assert (bias(a[..., :2]) - bias(b[..., :2])).abs().max() > 1e-3


def test_given_descriptors_equal_measured_ones_and_output_is_permutation_invariant():
    torch.manual_seed(1)
    model = PEAGGMoE(ModelConfig(**TINY, lattice_token=True)).eval()
    with torch.no_grad():
        model.lattice.to_token.weight.normal_()
        model.lattice.to_head.weight.normal_()
    spots, mask = _square_net()
    out = model(spots, mask).cs_logits
    torch.testing.assert_close(model(spots, mask, pattern_descriptors(spots, mask)).cs_logits, out)
    perm = torch.randperm(spots.shape[1])
    torch.testing.assert_close(model(spots[:, perm], mask[:, perm]).cs_logits, out, atol=1e-5, rtol=1e-4)


def test_warm_start_grows_a_trained_model_and_the_token_learns(tmp_path):
    torch.manual_seed(0)
    base = PEAGGMoE(ModelConfig(**TINY))
    path = save_weights(base, tmp_path, "base")
    source = ToyLatticeSource()
    grown = warm_start(path, {"lattice_token": True, "pair_encoding": True}, source)
    assert len(grown.config.lattice_mean) == n_lattice_descriptors()
    assert min(grown.config.lattice_std) > 0
    spots, mask = _square_net()
    torch.testing.assert_close(grown.eval()(spots, mask).cs_logits, base.eval()(spots, mask).cs_logits)
    with pytest.raises(ValueError):
        warm_start(path, {"hidden_dim": 32}, source)
    cfg = TrainConfig(run_dir=str(tmp_path / "run"), steps=3, batch_size=8, warmup_steps=1, eval_every=1000,
                      checkpoint_every=10, bf16=False, init_from=str(path),
                      model={"lattice_token": True, "pair_encoding": True})
    trainer = Trainer(cfg, source)
    trainer.fit(progress=False)
    assert trainer.model.lattice.to_head.weight.abs().sum() > 0
    assert trainer.model.pair_bias.mlp[-1].weight.abs().sum() > 0
    total = trainer.total_compute()
    assert total["patterns_seen"] == 3 * 8


def test_config_round_trip_keeps_the_lattice_normalisation():
    cfg = ModelConfig(**TINY, lattice_token=True, lattice_mean=tuple(np.zeros(60)), lattice_std=tuple(np.ones(60)))
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg
    with pytest.raises(ValueError):
        ModelConfig(**TINY, lattice_mean=(0.0,), lattice_std=(0.0,))
