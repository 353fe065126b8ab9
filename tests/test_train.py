"""Training: schedule, an interrupted run resumes to the same state, metrics file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from py4dstem_gnn.toy import ToyLatticeSource
from py4dstem_gnn.training.train import TrainConfig, Trainer, lr_at, read_metrics

TINY = dict(feature_dim=16, hidden_dim=16, n_layers=1, n_heads=4, ffn_dim=16, max_spots=32)


def _cfg(run_dir, steps=6, **kw) -> TrainConfig:
    return TrainConfig(
        run_dir=str(run_dir), steps=steps, batch_size=8, warmup_steps=2, eval_every=3, checkpoint_every=1,
        log_every=1, bf16=False, model=TINY, **kw,
    )


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] >= 0.1 and lrs[-1] < 0.15


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_resume_continues_the_same_run(tmp_path):
    """6 steps in one go == 3 steps, a new process-like Trainer, 3 more steps."""
    val = ToyLatticeSource().sample(np.random.default_rng(5), 16)
    torch.manual_seed(0)
    straight = Trainer(_cfg(tmp_path / "a"), ToyLatticeSource(), {"val": val})
    straight.fit(progress=False)

    torch.manual_seed(123)  # a different process state must not matter
    part = Trainer(_cfg(tmp_path / "b", steps=3), ToyLatticeSource(), {"val": val})
    part.fit(progress=False)
    resumed = Trainer(_cfg(tmp_path / "b"), ToyLatticeSource(), {"val": val})
    assert resumed.step == 3
    resumed.fit(progress=False)
    a, b = _params(straight), _params(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    rows = read_metrics(tmp_path / "b")
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "b" / "best.safetensors").is_file()


SCRIPT = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from py4dstem_gnn.toy import ToyLatticeSource
    from py4dstem_gnn.training.train import TrainConfig, Trainer
    cfg = TrainConfig(run_dir=sys.argv[1], steps=int(sys.argv[2]), batch_size=8, warmup_steps=2,
                      eval_every=1000, checkpoint_every=1, log_every=1, bf16=False,
                      model=dict(feature_dim=16, hidden_dim=16, n_layers=1, n_heads=4, ffn_dim=16, max_spots=32))
    Trainer(cfg, ToyLatticeSource()).fit(progress=False)
    """
)


def test_sigkill_at_random_moments_then_resume(tmp_path):
    """A run killed with SIGKILL (several times) resumes and ends where an uninterrupted run ends."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = 150
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, str(script), str(ref), str(steps)], check=True, env=env)
    run = tmp_path / "killed"
    rng = np.random.default_rng(0)
    kills, steps_at_kill = 0, []
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(run), str(steps)], env=env)
        # wait for this process's first checkpoint (imports take long on a loaded machine), then a random moment
        start = run / "checkpoint.pt"
        before = start.stat().st_mtime_ns if start.is_file() else 0
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if start.is_file() and start.stat().st_mtime_ns != before:
                break
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0.0, 1.5)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if (run / "checkpoint.pt").is_file():
            steps_at_kill.append(torch.load(run / "checkpoint.pt", weights_only=True)["step"])
    subprocess.run([sys.executable, str(script), str(run), str(steps)], check=True, env=env)
    assert kills >= 1
    assert any(0 < s < steps for s in steps_at_kill), steps_at_kill  # killed mid-training
    a = torch.load(ref / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == steps
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=1e-6, rtol=1e-5)
    assert not list(run.glob("*.tmp"))


class _PriorSource(ToyLatticeSource):
    """Toy source that declares a balanced sampling prior and a skewed deployment prior."""

    def sampled_prior(self):
        p = np.zeros(230)
        p[[0, 224]] = 0.5  # P1, Fm-3m
        return p

    def deploy_prior(self):
        p = np.zeros(230)
        p[[0, 224]] = [0.9, 0.1]
        return p


def test_logit_adjustment_set_at_start_exported_and_survives_resume(tmp_path):
    from py4dstem_gnn.weights import load_model

    trainer = Trainer(_cfg(tmp_path / "r", steps=2), _PriorSource())
    sg = np.array(trainer.model.config.sg_logit_adjustment)
    assert sg[0] - sg[224] == pytest.approx(np.log(9.0))
    assert trainer.adjustment_info["applied"]
    trainer.fit(progress=False)
    trainer.export(tmp_path / "w", "m")
    loaded = load_model(tmp_path / "w" / "m.safetensors")
    assert loaded.config.sg_logit_adjustment == trainer.model.config.sg_logit_adjustment
    # resuming a checkpoint of the same architecture is allowed whatever the offsets
    again = Trainer(_cfg(tmp_path / "r", steps=2, logit_adjustment=False), _PriorSource())
    assert again.step == 2 and not again.adjustment_info["applied"]
    assert again.model.config.sg_logit_adjustment == ()
