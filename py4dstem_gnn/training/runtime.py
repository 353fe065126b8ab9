"""Where and how a training run executes: device, precision, compilation, portable checkpoints.

* :func:`resolve_device` and :func:`native_bf16` -- bf16 autocast only where the hardware has it
  (CUDA; CPUs with AVX-512 BF16 or AMX). On an AVX2-only CPU, autocast emulates bf16 and a training
  step of the shipped model ran 7x slower than in float32.
* :func:`to_cpu`, :func:`atomic_torch_save`, :func:`load_checkpoint` -- checkpoints hold CPU tensors
  and are read onto the CPU, so one written on a GPU resumes on a CPU and back
  (``model.load_state_dict`` and ``optimizer.load_state_dict`` move the tensors to the parameters'
  device). :func:`load_checkpoint` also checks that a resumed run keeps the learning rates of the
  steps it already took (:meth:`~py4dstem_gnn.training.schedules.Schedule.agrees_with`) and, for a
  WSD run extended past its decay, continues from the constant-rate checkpoint instead
  (:func:`archive_cooldown` keeps the decay beside the run).
* :func:`compile_model` -- ``torch.compile`` of the model (``train --compile``; off by default: it did not
  pay on this project's CPU).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .schedules import Schedule

__all__ = ["resolve_device", "native_bf16", "to_cpu", "atomic_torch_save", "load_checkpoint", "archive_cooldown",
           "compile_model"]

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: this rank's CUDA device when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast pays on ``device``: CUDA, or a CPU with AVX-512 BF16 or AMX."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def to_cpu(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with every tensor on the CPU (a checkpoint bound to no device)."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file, then rename (a kill never leaves half a checkpoint)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def archive_cooldown(run_dir: str | os.PathLike, step: int, stable_step: int) -> None:
    """Move a finished decay out of a run's main line: ``checkpoint.pt`` -> ``cooldown_<step>.pt``, and
    the metrics rows after ``stable_step`` -> ``cooldown_<step>.metrics.jsonl``."""
    run_dir = Path(run_dir)
    os.replace(run_dir / "checkpoint.pt", run_dir / f"cooldown_{step}.pt")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return
    keep, moved = [], []
    for line in path.read_text().splitlines():
        try:
            later = int(json.loads(line)["step"]) > stable_step
        except (json.JSONDecodeError, KeyError, ValueError, TypeError):
            later = False
        (moved if later else keep).append(line)
    (run_dir / f"cooldown_{step}.metrics.jsonl").write_text("".join(x + "\n" for x in moved))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(x + "\n" for x in keep))
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, stable_path: str | os.PathLike, schedule: Schedule,
                    rewrite: bool = True) -> dict[str, Any]:
    """The state a run resumes from, read onto the CPU.

    Parameters
    ----------
    path : path-like
        ``checkpoint.pt``.
    stable_path : path-like
        ``checkpoint_stable.pt``, the constant-rate state a WSD run saved where its decay began.
    schedule : Schedule
        The schedule the run is asked to follow now.
    rewrite : bool
        Whether this process may archive a finished decay (rank 0 of a distributed run).

    Returns
    -------
    dict
        The checkpoint, or the stable one when ``schedule`` extends a WSD run past its decay.

    Raises
    ------
    ValueError
        If ``schedule`` gives other rates to steps already taken and no stable checkpoint fits
        (another cosine length only warns: the previous behaviour).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "schedule" not in state:  # written before schedules were recorded
        return state
    saved, step = Schedule.from_dict(state["schedule"]), int(state["step"])
    if saved.agrees_with(schedule, step):
        return state
    if saved.kind == "cosine" and schedule.kind == "cosine":
        logger.warning("%s: continuing step %d under a cosine schedule of %d steps (was %d)", path, step,
                       schedule.total_steps, saved.total_steps)
        return state
    if Path(stable_path).is_file():
        stable = torch.load(stable_path, map_location="cpu", weights_only=True)
        s0 = int(stable["step"])
        if s0 <= step and Schedule.from_dict(stable["schedule"]).agrees_with(schedule, s0):
            if rewrite:
                archive_cooldown(Path(path).parent, step, s0)
            logger.info("continuing from the constant-rate checkpoint at step %d (the decay to step %d is kept as "
                        "cooldown_%d.pt)", s0, step, step)
            return stable
    raise ValueError(f"{path} (step {step}) was trained under {saved}; the requested {schedule} gives other rates "
                     "to steps already taken: rerun with the same schedule options or use another run_dir")


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile`` the whole model in place (parameter names unchanged), for ``train --compile``.

    Off by default: on the 2-core AVX2 CPU of this project it did not pay. A step of the shipped
    model (batch 128, 64 spots, one thread) took 1.82 s of CPU time compiled against 1.48 s eager,
    after a minute of compilation, and compiling parts (attention, structural encoding, encoder)
    was slower too (``benchmarks/results/train_step.md``): the mixture of experts routes a varying
    number of tokens, which breaks the graph into many small pieces. Untested on a GPU.
    """
    model.compile()
    return model
