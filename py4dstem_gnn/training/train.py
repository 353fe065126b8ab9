"""Training PE-AG-GMoE: objective, schedule, resumable checkpoints, distributed data parallel.

The objective is Eq. 16 of the paper::

    L = CE(crystal system) + CE(space group) + λ · L_balance,   λ = config.aux_loss_weight (0.01)

Training patterns come from a *pattern source* — any object with a method
``sample(rng, n) -> (pointlists, crystal_system, space_group)`` — by default kinematic patterns
simulated on the fly from the structure-factor library of :mod:`py4dstem_gnn.data.kinematic`, with
fresh random orientations and the realism augmentations of :mod:`py4dstem_gnn.data.augment`.

Design decisions
----------------
* **Resumable by construction.** The batch of step ``s`` is drawn from
  ``numpy.random.default_rng([seed, s, rank])`` (the torch sampler: a torch generator seeded from
  the same numbers), so data do not depend on how a run was cut into pieces. Checkpoints (model,
  optimizer, step, RNG states, configs, schedule) are written atomically every ``checkpoint_every``
  steps (and every ``checkpoint_minutes``) and on SIGTERM/SIGINT; a rerun of the same command
  continues from the last one and follows the same schedule. Checkpoints hold CPU tensors only, so
  one written on a GPU resumes on a CPU and back. ``init_from`` starts a new run from shipped
  weights (e.g. ``weights/default.safetensors``).
* **Schedules** (:mod:`py4dstem_gnn.training.schedules`): ``cosine`` (fixed length) or ``wsd``
  (warm-up, constant, short decay). A WSD run saves ``checkpoint_stable.pt`` where its decay begins
  and a cool-down snapshot ``cooldown_<step>.safetensors`` at its end; rerun with more ``steps``, it
  continues from the constant-rate checkpoint (the decay's checkpoint and metrics are kept as
  ``cooldown_<step>.pt`` / ``.metrics.jsonl``).
* **Samplers.** Patterns come from numpy sources (pointlists collated on the CPU) or, with a
  :class:`~py4dstem_gnn.data.sources_torch.TorchKinematicSource`, are made batched on the training
  device (``--sampler torch``; no py4DSTEM needed, tables from ``py4dstem-gnn export-tables``).
* **Class imbalance.** Materials are drawn with probability ∝ ``n_sg^(-balance_power)``, where
  ``n_sg`` is the number of training materials of that space group (0.5 by default: rare groups are
  seen more often than their share, without being repeated to exhaustion). The heads then learn
  the flattened prior of those draws; the trainer sets evaluation-mode logit offsets
  ``log p_deploy − log p_sampled`` (:meth:`Trainer.set_logit_adjustment`, stored in the model
  config and card) so that predictions follow the training materials' own prior again.
* **Mixed precision.** bf16 autocast on CUDA, and on CPUs with native bf16 (AVX-512 BF16 or AMX),
  when ``bf16`` is set; elsewhere float32 (on an AVX2-only CPU bf16 autocast ran 7x slower).
* **Distributed.** Under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
  :class:`torch.nn.parallel.DistributedDataParallel`; each rank draws its own batch; only rank 0
  logs and writes. Gradient accumulation over ``accumulate`` micro-batches.
* **Metrics** go to ``<run_dir>/metrics.jsonl`` (one JSON object per line; see :func:`read_metrics`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from ..progress import tqdm

from ..features import collate, split_direct_beam
from ..model import ModelConfig, PEAGGMoE
from ..data.orientations import IN_PLANE
from ..weights import load_model, save_weights
from .runtime import atomic_torch_save, load_checkpoint, native_bf16, resolve_device, to_cpu
from .schedules import DECAY_SHAPES, SCHEDULES, Schedule, make_schedule

__all__ = [
    "TrainConfig",
    "PatternSource",
    "Trainer",
    "compute_loss",
    "lr_at",
    "schedule_of",
    "read_metrics",
    "fit_feature_normalisation",
    "configure_parser",
    "run_cli",
]

logger = logging.getLogger(__name__)


class PatternSource(Protocol):
    """Anything that draws labelled training patterns."""

    def sample(self, rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """``n`` pointlists (with direct beam), crystal-system codes and space-group numbers."""
        ...


@dataclass
class TrainConfig:
    """Optimisation settings of a training run (the model's are in :class:`ModelConfig`)."""

    run_dir: str = "runs/default"
    steps: int = 20000
    batch_size: int = 128
    accumulate: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 300
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    bf16: bool = True
    seed: int = 0
    eval_every: int = 250
    checkpoint_every: int = 50
    log_every: int = 10
    balance_power: float = 0.5
    init_from: str | None = None
    device: str = "auto"
    threads: int | None = None
    model: dict[str, Any] = field(default_factory=dict)
    logit_adjustment: bool = True
    schedule: str = "cosine"
    decay_steps: int | None = None
    decay_shape: str = "sqrt"
    sampler: str = "numpy"
    compile: bool = False
    max_minutes: float | None = None
    checkpoint_minutes: float | None = None

    def model_config(self) -> ModelConfig:
        """The architecture (Table 6 defaults overridden by ``model``)."""
        return ModelConfig(**self.model)


def _without_adjustment(config: ModelConfig) -> dict[str, Any]:
    """Config dict without the logit offsets (set from the training source at start-up, not trained)."""
    return {k: v for k, v in config.to_dict().items() if not k.endswith("_logit_adjustment")}


def schedule_of(cfg: TrainConfig) -> Schedule:
    """The learning-rate schedule of a run (see :mod:`py4dstem_gnn.training.schedules`)."""
    return make_schedule(cfg.schedule, cfg.lr, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio, cfg.decay_steps,
                         cfg.decay_shape)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step``: linear warm-up, then cosine decay to ``min_lr_ratio · lr`` (or WSD)."""
    return schedule_of(cfg).lr(step)


def compute_loss(
    model: torch.nn.Module,
    spots: torch.Tensor,
    mask: torch.Tensor,
    crystal_system: torch.Tensor,
    space_group: torch.Tensor,
    aux_weight: float,
    label_smoothing: float = 0.0,
    sync: bool = True,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Eq. 16: ``CE(cs) + CE(sg) + aux_weight · L_balance``.

    ``space_group`` holds International Tables numbers (1..230). The statistics are floats, or with
    ``sync=False`` detached scalar tensors (no wait for the device until they are read).
    """
    out = model(spots, mask)
    cs_loss = F.cross_entropy(out.cs_logits, crystal_system, label_smoothing=label_smoothing)
    sg_loss = F.cross_entropy(out.sg_logits, space_group - 1, label_smoothing=label_smoothing)
    loss = cs_loss + sg_loss + aux_weight * out.aux_loss
    with torch.no_grad():
        stats = {
            "loss": loss.detach(),
            "cs_loss": cs_loss.detach(),
            "sg_loss": sg_loss.detach(),
            "aux_loss": out.aux_loss.detach(),
            "cs_acc": (out.cs_logits.argmax(-1) == crystal_system).float().mean(),
            "sg_acc": (out.sg_logits.argmax(-1) == space_group - 1).float().mean(),
        }
    return loss, ({k: float(v) for k, v in stats.items()} if sync else stats)


def fit_feature_normalisation(
    pointlists: Sequence[np.ndarray], max_spots: int, feature_set: str = "polar+neighbours"
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of the model's input features over real spots."""
    from ..features import spot_features

    spots, mask = collate([split_direct_beam(p)[0] for p in pointlists], max_spots)
    feats = spot_features(spots, mask, feature_set)[mask]
    mean = feats.mean(0).tolist()
    std = feats.std(0).clamp_min(1e-3).tolist()
    return tuple(round(v, 4) for v in mean), tuple(round(v, 4) for v in std)


def _batch(pointlists: Sequence[np.ndarray], max_spots: int) -> tuple[torch.Tensor, torch.Tensor]:
    return collate([split_direct_beam(p)[0] for p in pointlists], max_spots)


@torch.inference_mode()
def predict_logits(model: PEAGGMoE, pointlists: Sequence[np.ndarray], batch_size: int = 512, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Crystal-system and space-group logits of pointlists (length-sorted batches)."""
    was_training = model.training
    model.eval()
    counts = np.array([len(p) for p in pointlists])
    order = np.argsort(counts, kind="stable")
    cs = np.zeros((len(pointlists), model.config.n_crystal_systems), np.float32)
    sg = np.zeros((len(pointlists), model.config.n_space_groups), np.float32)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        spots, mask = _batch([pointlists[j] for j in idx], model.config.max_spots)
        out = model(spots.to(device), mask.to(device))
        cs[idx] = out.cs_logits.float().cpu().numpy()
        sg[idx] = out.sg_logits.float().cpu().numpy()
    model.train(was_training)
    return cs, sg


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Metrics of a run; for a step logged twice (a resumed run) the last entry wins."""
    path = Path(run_dir) / "metrics.jsonl"
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            rows[(row.get("kind", "train"), int(row["step"]))] = row
    return sorted(rows.values(), key=lambda r: (r["step"], r.get("kind", "train")))


class Trainer:
    """One training run.

    Parameters
    ----------
    cfg : TrainConfig
        Settings; ``cfg.run_dir`` holds checkpoint, metrics and exported weights.
    source : PatternSource
        Training patterns.
    validation : dict of str to (pointlists, crystal_system, space_group), optional
        Named fixed validation sets, evaluated every ``eval_every`` steps; the first one selects
        the best weights.
    data_manifest : dict, optional
        Description of the training data, written into the model card.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        source: PatternSource,
        validation: dict[str, tuple[Sequence[np.ndarray], np.ndarray, np.ndarray]] | None = None,
        data_manifest: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.validation = validation or {}
        self.data_manifest = data_manifest or {}
        self.run_dir = Path(cfg.run_dir)
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.distributed = self.world > 1
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        if self.distributed and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        torch.manual_seed(cfg.seed)
        if cfg.init_from:
            self.model = load_model(cfg.init_from).train()
            logger.info("initialised from %s", cfg.init_from)
        else:
            self.model = PEAGGMoE(cfg.model_config())
        self.model.to(self.device)
        self.net: torch.nn.Module = self.model
        if self.distributed:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2 and "embed" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.98),
        )
        self.step = 0
        self.best: float = -1.0
        self.seconds = 0.0
        self._stop = False
        self.schedule = schedule_of(cfg)
        self.autocast = cfg.bf16 and native_bf16(self.device)
        if cfg.bf16 and not self.autocast:
            logger.warning("no native bf16 on %s: training in float32", self.device)
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        self.stable_path = self.run_dir / "checkpoint_stable.pt"
        if self.checkpoint_path.is_file():
            self._load_checkpoint()
        self.adjustment_info = self.set_logit_adjustment()
        if cfg.compile:
            from .runtime import compile_model

            compile_model(self.model)

    # -- checkpoints -------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "best": self.best,
            "seconds": self.seconds,
            "torch_rng": torch.get_rng_state(),
            "train_config": dataclasses.asdict(self.cfg),
            "model_config": self.model.config.to_dict(),
            "schedule": self.schedule.to_dict(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return to_cpu(state)

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> None:
        """Write the resumable state atomically (rank 0 only), CPU tensors only (any device resumes it)."""
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(self._state(), Path(path) if path else self.checkpoint_path)

    def _load_checkpoint(self) -> None:
        state = load_checkpoint(self.checkpoint_path, self.stable_path, self.schedule, rewrite=self.rank == 0)
        self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        saved = ModelConfig.from_dict(state["model_config"])
        if _without_adjustment(saved) != _without_adjustment(self.model.config):
            raise ValueError(
                f"{self.checkpoint_path} was written for another model config; use another run_dir "
                "or the same --model settings"
            )
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.best = float(state["best"])
        self.seconds = float(state["seconds"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        logger.info("resumed %s at step %d", self.checkpoint_path, self.step)

    # -- logging -------------------------------------------------------------------------------
    def _log(self, row: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Accuracies on every validation set."""
        results: dict[str, float] = {}
        for name, (pls, cs, sg) in self.validation.items():
            cs_logits, sg_logits = predict_logits(self.model, pls, device=self.device)
            results[f"{name}/cs_acc"] = float((cs_logits.argmax(1) == cs).mean())
            results[f"{name}/sg_acc"] = float((sg_logits.argmax(1) + 1 == sg).mean())
        return results

    def set_logit_adjustment(self) -> dict[str, Any]:
        """Set the model's evaluation-mode logit offsets from the source's sampling (at start-up).

        The offsets move the class prior of the balanced training draws
        (``source.sampled_prior()``) to the deployment prior (``source.deploy_prior()``, the
        training materials one vote each); see :func:`py4dstem_gnn.data.sources.logit_adjustment`.
        Off (offsets removed) when ``cfg.logit_adjustment`` is False or the source cannot tell
        its priors.

        Returns
        -------
        dict
            What was done, for the model card.
        """
        from ..data.sources import logit_adjustment

        if not self.cfg.logit_adjustment or not hasattr(self.source, "sampled_prior"):
            self.model.set_logit_adjustment()
            return {"applied": False}
        cs, sg = logit_adjustment(self.source.sampled_prior(), self.source.deploy_prior())
        self.model.set_logit_adjustment(cs.tolist(), sg.tolist())
        return {
            "applied": True,
            "method": "post-hoc logit adjustment (Menon et al., ICLR 2021): log p_deploy - log p_sampled, "
            "added to the logits in evaluation mode",
            "sampled": f"class-balanced training draws (balance_power {self.cfg.balance_power})",
            "deploy": "space groups of the training materials, one vote per material",
        }

    def export(self, directory: str | os.PathLike, name: str, **card: Any) -> Path:
        """Save the current weights (with their logit offsets, see :meth:`set_logit_adjustment`) and a card."""
        return save_weights(
            self.model,
            directory,
            name,
            training={
                "train_config": dataclasses.asdict(self.cfg),
                "steps": self.step,
                "patterns_seen": self.step * self.cfg.batch_size * self.cfg.accumulate * self.world,
                "compute": {
                    "wall_seconds": round(self.seconds, 1),
                    "device": str(self.device),
                    "threads": torch.get_num_threads(),
                    "world_size": self.world,
                },
                "data": self.source.describe() if hasattr(self.source, "describe") else self.data_manifest,
                "logit_adjustment": self.adjustment_info,
            },
            **card,
        )

    # -- training ------------------------------------------------------------------------------
    def _handle_signal(self, signum: int, frame: Any) -> None:
        logger.warning("signal %d: checkpointing and stopping after this step", signum)
        self._stop = True

    def _generator(self) -> torch.Generator | None:
        """The torch random stream of this step (sources that sample on the device), else None."""
        src = self.source
        src = src if hasattr(src, "generator") else getattr(src, "main", None)
        if src is None or not hasattr(src, "generator"):
            return None
        return src.generator([self.cfg.seed, self.step, self.rank])

    def fit(self, progress: bool = True) -> None:
        """Train until ``cfg.steps`` (or a stop signal, or ``cfg.max_minutes``), checkpointing along the way."""
        from ..data.sources_torch import draw_batch

        cfg = self.cfg
        old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress or self.rank != 0, desc="train", dynamic_ncols=True)
        max_spots = self.model.config.max_spots
        pad_to = max_spots if cfg.compile else None
        started = last_checkpoint = time.monotonic()
        finished_here = False
        self.net.train()
        try:
            while self.step < cfg.steps and not self._stop:
                if self.schedule.kind == "wsd" and self.step == self.schedule.decay_start and self.step > 0:
                    self.save_checkpoint(self.stable_path)  # the constant-rate state to continue from
                t0 = time.perf_counter()
                rng = np.random.default_rng([cfg.seed, self.step, self.rank])
                gen = self._generator()
                lr = self.schedule.lr(self.step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer.zero_grad(set_to_none=True)
                stats_sum: dict[str, torch.Tensor] = {}
                for _ in range(cfg.accumulate):
                    spots, mask, cs, sg = draw_batch(self.source, rng, gen, cfg.batch_size, max_spots, self.device, pad_to)
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                        loss, stats = compute_loss(self.net, spots, mask, cs, sg, self.model.config.aux_loss_weight,
                                                   cfg.label_smoothing, sync=False)
                    (loss / cfg.accumulate).backward()
                    for k, v in stats.items():
                        stats_sum[k] = stats_sum.get(k, 0.0) + v / cfg.accumulate
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.step += 1
                finished_here = self.step == cfg.steps
                self.seconds += time.perf_counter() - t0
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    means = {k: float(v) for k, v in stats_sum.items()}
                    row = {"kind": "train", "step": self.step, "lr": lr, "grad_norm": float(grad_norm),
                           "seconds": round(self.seconds, 2), **means}
                    self._log(row)
                    bar.set_postfix(loss=f"{means['loss']:.3f}", cs=f"{means['cs_acc']:.2f}")
                if self.validation and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                    res = self.evaluate()
                    self._log({"kind": "val", "step": self.step, "seconds": round(self.seconds, 2), **res})
                    logger.info("step %d validation %s", self.step, res)
                    key = next(iter(res))
                    if res[key] > self.best and self.rank == 0:
                        self.best = res[key]
                        self.export(self.run_dir, "best", validation=res, validation_step=self.step)
                now = time.monotonic()
                if cfg.max_minutes is not None and now - started >= 60 * cfg.max_minutes:
                    logger.info("time limit of %g minutes reached at step %d", cfg.max_minutes, self.step)
                    self._stop = True
                due = cfg.checkpoint_minutes is not None and now - last_checkpoint >= 60 * cfg.checkpoint_minutes
                if self.step % cfg.checkpoint_every == 0 or due or self._stop or self.step == cfg.steps:
                    self.save_checkpoint()
                    last_checkpoint = now
            if finished_here and self.schedule.kind == "wsd" and self.rank == 0:
                path = self.export(self.run_dir, f"cooldown_{self.step}")
                logger.info("cool-down snapshot %s (continue from %s with more --steps)", path, self.stable_path)
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)


# -- command line -----------------------------------------------------------------------------
#: protocol -> (manifest split column, training split(s), validation split) of ``train --protocol``.
#: ``known`` trains on the whole pool; its kinematic validation draws fresh orientations of the
#: unseen-type validation groups (seen in training, so only a monitor, not a held-out figure).
PROTOCOL_SPLITS: dict[str, tuple[str, str | tuple[str, ...], str]] = {
    "known": ("split_type", ("train", "val", "test"), "val"),
    "unseen-material": ("split_material", "train", "val"),
    "unseen-type": ("split_type", "train", "val"),
    "legacy": ("split", "train", "val"),
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``py4dstem-gnn train``."""
    d = TrainConfig()
    parser.description = (
        "Train PE-AG-GMoE on kinematic patterns simulated on the fly from the structure-factor "
        "library (fresh orientations and realism augmentations every step). Rerunning the same "
        "command resumes from <run-dir>/checkpoint.pt. Under torchrun it trains with DDP."
    )
    parser.add_argument("--library", required=True, help="kinematic structure-factor library (HDF5 file or shard folder) from "
                        "`py4dstem-gnn simulate kinematic`, or its tables (.npz) from `py4dstem-gnn export-tables`")
    parser.add_argument("--manifest", default=None, help="structure manifest with the train/val/test split (default: the committed data/manifest.csv.gz)")
    parser.add_argument("--val-set", action="append", default=[], metavar="NAME=PATH", help="stored pattern set(s) for validation (HDF5); the first selects the best weights")
    parser.add_argument("--val-kinematic", type=int, default=1000, metavar="N", help="also validate on N validation-split materials x 2 augmented kinematic patterns (0: off)")
    parser.add_argument("--run-dir", default=d.run_dir)
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--accumulate", type=int, default=d.accumulate)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    parser.add_argument("--no-bf16", action="store_true", help="train in float32 (bf16 autocast runs only where the device has native bf16)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                        help="learning rate: cosine decay over --steps, or wsd (warm-up, constant, decay over the last "
                             "--decay-steps; rerun with more --steps to continue from the constant-rate checkpoint)")
    parser.add_argument("--decay-steps", type=int, default=None, help="wsd: length of the final decay (default: 20%% of --steps)")
    parser.add_argument("--decay-shape", choices=DECAY_SHAPES, default=d.decay_shape, help="wsd: shape of the decay")
    parser.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio, help="final learning rate as a share of --lr")
    parser.add_argument("--sampler", choices=("numpy", "torch"), default=d.sampler,
                        help="numpy: kinematic patterns made on the CPU; torch: made batched on --device from the "
                             "library's tables (no py4DSTEM needed)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (did not pay on a CPU; try on a GPU)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this many minutes")
    parser.add_argument("--checkpoint-minutes", type=float, default=None, help="also checkpoint every this many minutes")
    parser.add_argument("--stored-train", default=None, metavar="PATH", help="stored patterns of training materials (e.g. Bloch-wave; file or shard folder) mixed into every batch")
    parser.add_argument("--stored-fraction", type=float, default=0.5, help="share of --stored-train patterns in a batch")
    parser.add_argument("--follow-library", action="store_true", help="pick up library shards written while training runs")
    parser.add_argument("--no-augment", action="store_true", help="switch the realism augmentations off")
    parser.add_argument("--augment", choices=["calibrated", "uncalibrated", "legacy"], default="calibrated",
                        help="augmentation preset (py4dstem_gnn.data.augment.AugmentConfig; default: calibrated)")
    parser.add_argument("--protocol", choices=list(PROTOCOL_SPLITS), default="known",
                        help="which materials train: known = the whole pool (shipped weights), unseen-material / "
                             "unseen-type = the training side of that split, legacy = the old group split")
    parser.add_argument("--axes", choices=["conventional", "primitive"], default="conventional",
                        help="zone axes of the conventional cell (default) or of the primitive cell (legacy)")
    parser.add_argument("--random-fraction", type=float, default=0.2,
                        help="share of patterns at uniformly random orientations (default: %(default)s)")
    parser.add_argument("--tilt-deg", type=float, default=1.0, help="largest zone-axis mis-tilt, degrees")
    parser.add_argument("--selection", choices=["bloch", "legacy"], default="bloch",
                        help="kinematic spot selection: matched to Bloch-wave patterns (default) or py4DSTEM's")
    parser.add_argument("--in-plane", choices=IN_PLANE, default="random",
                        help="in-plane rotation of kinematic patterns: random (default, as detectors see them) or "
                             "py4DSTEM's default frame tied to the crystal axes (experiments only)")
    parser.add_argument(
        "--no-logit-adjustment",
        action="store_true",
        help="export without the logit offsets that undo the class-balanced sampling's prior",
    )
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--eval-every", type=int, default=d.eval_every)
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    parser.add_argument("--balance-power", type=float, default=d.balance_power)
    parser.add_argument("--init-from", default=None, help="start from these weights (name or .safetensors path), e.g. default")
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--model", default="{}", help='JSON overrides of the model config, e.g. \'{"n_layers": 4}\'')
    parser.add_argument("--export", default=None, metavar="DIR", help="at the end, export the final weights (with their card) to DIR/<--name>")
    parser.add_argument("--name", default="default", help="name of the exported weights")


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``py4dstem-gnn train``."""
    from ..data.sources import KinematicSource, MixedSource, StoredSource, load_validation_sets

    cfg = TrainConfig(
        run_dir=args.run_dir,
        steps=args.steps,
        batch_size=args.batch_size,
        accumulate=args.accumulate,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        bf16=not args.no_bf16,
        seed=args.seed,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        balance_power=args.balance_power,
        init_from=args.init_from,
        device=args.device,
        threads=args.threads,
        model=json.loads(args.model),
        logit_adjustment=not args.no_logit_adjustment,
        schedule=args.schedule,
        decay_steps=args.decay_steps,
        decay_shape=args.decay_shape,
        min_lr_ratio=args.min_lr_ratio,
        sampler=args.sampler,
        compile=args.compile,
        max_minutes=args.max_minutes,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    from ..data.augment import AugmentConfig
    from ..data.kinematic import LEGACY_SELECTION, SpotSelection

    column, train_split, val_split = PROTOCOL_SPLITS[args.protocol]
    augment = False if args.no_augment else AugmentConfig.preset(args.augment)
    recipe = dict(axes=args.axes, random_fraction=args.random_fraction, tilt_deg=args.tilt_deg,
                  selection=SpotSelection() if args.selection == "bloch" else LEGACY_SELECTION, in_plane=args.in_plane)
    if args.sampler == "torch":  # patterns made on the training device from the tables
        from ..data.sources_torch import TorchKinematicSource

        kinematic: Any = functools.partial(TorchKinematicSource, device=resolve_device(cfg.device))
    else:
        kinematic = functools.partial(KinematicSource, follow=args.follow_library)
    source = kinematic(args.library, args.manifest, split=train_split, split_column=column, augment=augment,
                       balance_power=cfg.balance_power, **recipe)
    if args.stored_train:
        stored = StoredSource(args.stored_train, augment=not args.no_augment, balance_power=cfg.balance_power)
        source = MixedSource(source, stored, args.stored_fraction)
    validation = load_validation_sets(args.val_set)
    if args.val_kinematic:
        val_source = kinematic(args.library, args.manifest, split=val_split, split_column=column, augment=augment,
                               **recipe)
        validation["val_kinematic"] = val_source.fixed_set(per_material=2, seed=1234, max_materials=args.val_kinematic)
    trainer = Trainer(cfg, source, validation, data_manifest=source.describe())
    trainer.fit()
    if args.export and trainer.rank == 0 and trainer.step >= cfg.steps:
        # The final weights, not the "best" checkpoint: small validation sets are too noisy to pick
        # among checkpoints (<run-dir>/best.* stays available for those who want it).
        validation_now = trainer.evaluate() if trainer.validation else {}
        trainer.export(args.export, args.name, validation=validation_now, validation_step=trainer.step)
        logger.info("exported the final weights to %s/%s.safetensors", args.export, args.name)
    return 0
