"""Training: schedule, an interrupted run resumes to the same state, metrics file."""

from __future__ import annotations

import json
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


# ----------------------------------------------------------------------------- schedules across resumes
def _wsd(run_dir, steps, **kw):
    return _cfg(run_dir, steps=steps, schedule="wsd", decay_steps=2, lr=1e-3, min_lr_ratio=0.0, **kw)


def test_wsd_run_extends_from_its_constant_rate_checkpoint(tmp_path):
    """8 steps (decay 6..8), then --steps 12: continues from step 6 and ends where a 12-step run ends."""
    straight = Trainer(_wsd(tmp_path / "a", 12), ToyLatticeSource())
    straight.fit(progress=False)

    first = Trainer(_wsd(tmp_path / "b", 8), ToyLatticeSource())
    first.fit(progress=False)
    run = tmp_path / "b"
    assert torch.load(run / "checkpoint_stable.pt", weights_only=True)["step"] == 6
    assert (run / "cooldown_8.safetensors").is_file()  # the snapshot to ship
    extended = Trainer(_wsd(run, 12), ToyLatticeSource())
    assert extended.step == 6 and (run / "cooldown_8.pt").is_file()
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4, 5, 6]
    assert [json.loads(x)["step"] for x in (run / "cooldown_8.metrics.jsonl").read_text().splitlines()] == [7, 8]
    extended.fit(progress=False)
    a, b = _params(straight), _params(extended)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    # a rerun of the finished command resumes where it is; a schedule that rewrites the past is refused
    assert Trainer(_wsd(run, 12), ToyLatticeSource()).step == 12
    with pytest.raises(ValueError, match="schedule"):
        Trainer(_cfg(run, steps=12, lr=1e-3), ToyLatticeSource())


def _locations(path) -> set[str]:
    seen: set[str] = set()
    torch.load(path, map_location=lambda storage, loc: (seen.add(loc), storage)[1], weights_only=True)
    return seen


def test_checkpoint_from_another_device_resumes_here(tmp_path, monkeypatch):
    """Checkpoints hold CPU tensors only; one whose tensors were saved on a CUDA device resumes on the CPU."""
    import torch.serialization as ser

    straight = Trainer(_cfg(tmp_path / "a"), ToyLatticeSource())
    straight.fit(progress=False)
    Trainer(_cfg(tmp_path / "b", steps=3), ToyLatticeSource()).fit(progress=False)
    ckpt = tmp_path / "b" / "checkpoint.pt"
    assert _locations(ckpt) == {"cpu"}
    state = torch.load(ckpt, weights_only=True)
    with monkeypatch.context() as m:  # rewrite it as a GPU machine would have, every storage tagged cuda:0
        m.setattr(ser, "location_tag", lambda storage: "cuda:0")
        torch.save(state, ckpt)
    assert _locations(ckpt) == {"cuda:0"}
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(ckpt, weights_only=True)  # what a device-bound load would do here
    resumed = Trainer(_cfg(tmp_path / "b"), ToyLatticeSource())
    assert resumed.step == 3
    resumed.fit(progress=False)
    a, b = _params(straight), _params(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    assert _locations(ckpt) == {"cpu"}


def test_time_limit_stops_with_a_checkpoint_and_bf16_only_where_native(tmp_path):
    from py4dstem_gnn.training.runtime import native_bf16

    cfg = _cfg(tmp_path / "t", steps=50, max_minutes=0.0)
    cfg.bf16, cfg.checkpoint_every = True, 1000
    trainer = Trainer(cfg, ToyLatticeSource())
    assert trainer.autocast == native_bf16(torch.device("cpu"))
    trainer.fit(progress=False)
    assert trainer.step == 1 and torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=True)["step"] == 1


# ----------------------------------------------------------------------------- the torch sampler
@pytest.fixture(scope="module")
def tiny_tables(tmp_path_factory):
    from py4dstem_gnn.data import kinematic as kinematic_
    from py4dstem_gnn.data.kinematic_torch import KinematicTables
    from _crystals import CELLS
    from test_kinematic_torch import write_tiny_manifest

    d = tmp_path_factory.mktemp("tables")
    entries = [kinematic_.kinematic_entry(CELLS[m][0].to_crystal()) for m in sorted(CELLS)]
    lib = kinematic_.KinematicLibrary.from_entries(sorted(CELLS), entries, {"k_max": kinematic_.K_MAX})
    return KinematicTables.from_library(lib).save(d / "tables.npz"), write_tiny_manifest(d / "manifest.csv.gz")


def test_torch_sampler_run_resumes_identically(tiny_tables, tmp_path):
    from py4dstem_gnn.data.sources_torch import TorchKinematicSource

    tables, manifest = tiny_tables
    source = TorchKinematicSource(tables, manifest, split=["train", "val"], axes="primitive")
    straight = Trainer(_cfg(tmp_path / "a", steps=4, sampler="torch"), source)
    straight.fit(progress=False)
    Trainer(_cfg(tmp_path / "b", steps=2, sampler="torch"), source).fit(progress=False)
    resumed = Trainer(_cfg(tmp_path / "b", steps=4, sampler="torch"), source)
    resumed.fit(progress=False)
    a, b = _params(straight), _params(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


NO_PY4DSTEM = textwrap.dedent(
    """
    import importlib.abc, json, sys
    BLOCKED = {"py4DSTEM", "emdfile", "spglib", "ase", "h5py", "pymatgen"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError("blocked: " + name)
            return None

    sys.meta_path.insert(0, Block())
    from py4dstem_gnn.cli import main
    tables, manifest, run = sys.argv[1:4]
    model = json.dumps(dict(feature_dim=16, hidden_dim=16, n_layers=1, n_heads=4, ffn_dim=16, max_spots=32))
    rc = main(["train", "--sampler", "torch", "--library", tables, "--manifest", manifest, "--run-dir", run,
               "--steps", "3", "--batch-size", "8", "--warmup-steps", "1", "--val-kinematic", "2", "--eval-every", "3",
               "--axes", "primitive", "--schedule", "wsd", "--decay-steps", "1", "--device", "cpu", "--threads", "1",
               "--model", model])
    assert rc == 0, rc
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    """
)


def test_torch_sampler_path_needs_no_py4dstem(tiny_tables, tmp_path):
    """``train --sampler torch`` from exported tables runs with py4DSTEM, spglib, ase and h5py unimportable."""
    tables, manifest = tiny_tables
    script = tmp_path / "no_py4dstem.py"
    script.write_text(NO_PY4DSTEM)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(tables), str(manifest), str(tmp_path / "run")], check=True, env=env)
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows if r["kind"] == "train"] == [3]  # logged every 10 steps and at the end
    assert any("val_kinematic/cs_acc" in r for r in rows) and (tmp_path / "run" / "cooldown_3.safetensors").is_file()
