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

The command line (``py4dstem-gnn train``) is :mod:`py4dstem_gnn.training.cli`.
"""

from __future__ import annotations

import dataclasses
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
from ..weights import load_model, save_weights
from .runtime import atomic_torch_save, load_checkpoint, native_bf16, resolve_device, to_cpu
from .schedules import Schedule, make_schedule

__all__ = [
    "TrainConfig",
    "PatternSource",
    "Trainer",
    "compute_loss",
    "lr_at",
    "schedule_of",
    "read_metrics",
    "fit_feature_normalisation",
    "fit_lattice_normalisation",
    "warm_start",
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


def fit_lattice_normalisation(source: "PatternSource", max_spots: int, n: int = 4096, seed: int = 12345) -> dict[str, tuple[float, ...]]:
    """``lattice_mean`` / ``lattice_std`` of the lattice token, from ``n`` patterns of ``source``."""
    from ..model.lattice import pattern_descriptors

    pointlists, _, _ = source.sample(np.random.default_rng(seed), n)
    spots, mask = _batch(pointlists, max_spots)
    x = pattern_descriptors(spots, mask)
    mean = x.mean(0).tolist()
    std = x.std(0).clamp_min(1e-3).tolist()
    return {"lattice_mean": tuple(round(v, 5) for v in mean), "lattice_std": tuple(round(v, 5) for v in std)}


def with_lattice_normalisation(config: ModelConfig, source: "PatternSource") -> ModelConfig:
    """``config``, with lattice-token statistics fitted on ``source`` if it has a token and none yet."""
    if config.lattice_token and not config.lattice_mean:
        config = dataclasses.replace(config, **fit_lattice_normalisation(source, config.max_spots))
    return config


#: Modules a warm start may add to a trained model (zero-initialised: the function is kept).
WARM_START_NEW = ("lattice.", "pair_bias.")


def warm_start(weights: str | os.PathLike, overrides: dict[str, Any], source: "PatternSource") -> PEAGGMoE:
    """Trained weights, optionally grown by the input modules of :data:`WARM_START_NEW`.

    ``overrides`` may switch on ``lattice_token`` / ``pair_encoding`` (and change settings that
    hold no parameters); every parameter of the trained model is copied, the new modules start at
    zero output, so the grown model computes what the trained one did.
    """
    base = load_model(weights)
    if not overrides:
        return base
    model = PEAGGMoE(with_lattice_normalisation(dataclasses.replace(base.config, **overrides), source))
    try:
        missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    except RuntimeError as err:  # shapes changed: not a growth of the trained model
        raise ValueError(f"--model {overrides} does not fit {weights}: {err}") from None
    bad = [k for k in missing if not k.startswith(WARM_START_NEW)]
    if bad or unexpected:
        raise ValueError(f"--model {overrides} does not fit {weights}: missing {bad}, unexpected {unexpected}")
    return model


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
            self.model = warm_start(cfg.init_from, cfg.model, source).train()
            logger.info("initialised from %s", cfg.init_from)
        else:
            self.model = PEAGGMoE(with_lattice_normalisation(cfg.model_config(), source))
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
        """Accuracies and cross-entropy losses (deployment prior, as predictions are made) on every validation set."""
        results: dict[str, float] = {}
        for name, (pls, cs, sg) in self.validation.items():
            cs_logits, sg_logits = predict_logits(self.model, pls, device=self.device)
            results[f"{name}/cs_acc"] = float((cs_logits.argmax(1) == cs).mean())
            results[f"{name}/sg_acc"] = float((sg_logits.argmax(1) + 1 == sg).mean())
            cs_loss = float(F.cross_entropy(torch.from_numpy(cs_logits), torch.as_tensor(cs, dtype=torch.long)))
            sg_loss = float(F.cross_entropy(torch.from_numpy(sg_logits), torch.as_tensor(sg, dtype=torch.long) - 1))
            results[f"{name}/cs_loss"] = cs_loss
            results[f"{name}/sg_loss"] = sg_loss
            results[f"{name}/loss"] = cs_loss + sg_loss
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

    def total_compute(self) -> dict[str, Any]:
        """Patterns and wall seconds behind the current weights, including those of ``init_from``."""
        patterns = self.step * self.cfg.batch_size * self.cfg.accumulate * self.world
        before = {"patterns_seen": 0, "wall_seconds": 0.0, "runs": 0}
        if self.cfg.init_from:
            from ..weights import read_card, resolve_weights

            card = read_card(resolve_weights(self.cfg.init_from))
            prior, legacy = card.get("training", {}), card.get("compute_total", {})
            before = prior.get("total") or {
                "patterns_seen": legacy.get("patterns_seen", prior.get("patterns_seen", 0)),
                "wall_seconds": legacy.get("wall_seconds_one_cpu_core", prior.get("compute", {}).get("wall_seconds", 0.0)),
                "runs": 2 if legacy else 1,
            }
        return {"patterns_seen": patterns + before.get("patterns_seen", 0),
                "wall_seconds": round(self.seconds + before.get("wall_seconds", 0.0), 1), "runs": 1 + before.get("runs", 0)}

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
                "total": self.total_compute(),
                "init_from": self.cfg.init_from,
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
