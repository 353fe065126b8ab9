"""Learning-rate schedules: cosine (a run of fixed length) and WSD (a run that can go on).

* ``cosine``: linear warm-up, then a cosine decay to ``min_ratio · peak`` at ``total_steps``. The whole
  curve depends on ``total_steps``: a run cannot be extended without changing the rate of the steps
  it has already taken.
* ``wsd`` (warm-up, stable, decay): linear warm-up, a constant rate, then a short decay over the last
  ``decay_steps`` to ``min_ratio · peak``. Up to the decay the rate does not depend on where the run
  will end, so a run is extended by raising ``total_steps``: training continues from the
  constant-rate (*stable*) checkpoint saved where the decay began, and the decayed weights are a
  *cool-down snapshot* to ship. Decay shapes: ``linear``, ``sqrt`` (``1 - sqrt(progress)``, the
  cool-down found best for WSD runs by Hägele et al., "Scaling laws and compute-optimal training
  beyond fixed training durations", 2024) and ``cosine``.

A :class:`Schedule` is a small frozen record stored in every checkpoint, so that a resumed run checks
that it continues the same rates (:meth:`Schedule.agrees_with`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Schedule", "SCHEDULES", "DECAY_SHAPES", "DEFAULT_DECAY_FRACTION", "make_schedule"]

#: Schedule kinds.
SCHEDULES: tuple[str, ...] = ("cosine", "wsd")

#: Shapes of the WSD decay.
DECAY_SHAPES: tuple[str, ...] = ("sqrt", "linear", "cosine")

#: Share of ``total_steps`` that a WSD decay takes when ``decay_steps`` is not given.
DEFAULT_DECAY_FRACTION: float = 0.2


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule.

    Attributes
    ----------
    kind : {"cosine", "wsd"}
    peak : float
        Rate after warm-up.
    total_steps : int
        Last step (exclusive) of the schedule; the rate stays at ``min_ratio · peak`` after it.
    warmup_steps : int
        Linear warm-up: step ``s < warmup_steps`` runs at ``peak · (s + 1) / warmup_steps``.
    min_ratio : float
        Final rate as a share of ``peak``.
    decay_steps : int
        WSD only: length of the decay (ends at ``total_steps``).
    decay_shape : {"sqrt", "linear", "cosine"}
        WSD only.
    """

    kind: str = "cosine"
    peak: float = 1e-3
    total_steps: int = 20000
    warmup_steps: int = 300
    min_ratio: float = 0.05
    decay_steps: int = 0
    decay_shape: str = "sqrt"

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.kind!r}")
        if self.decay_shape not in DECAY_SHAPES:
            raise ValueError(f"decay shape must be one of {DECAY_SHAPES}, got {self.decay_shape!r}")
        if self.warmup_steps < 0 or self.decay_steps < 0 or self.total_steps < 0:
            raise ValueError("steps must not be negative")

    @property
    def decay_start(self) -> int:
        """First step of the decay (WSD), or the end of warm-up (cosine decays from there)."""
        if self.kind == "cosine":
            return self.warmup_steps
        return max(self.warmup_steps, self.total_steps - self.decay_steps)

    def lrs(self, steps: np.ndarray) -> np.ndarray:
        """Rates of many steps at once."""
        s = np.asarray(steps, dtype=np.float64)
        warm = self.peak * (s + 1) / max(1, self.warmup_steps)
        if self.kind == "cosine":
            progress = np.clip((s - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps), 0.0, 1.0)
            shape = 0.5 * (1 + np.cos(np.pi * progress))
        else:
            d0 = self.decay_start
            progress = np.clip((s - d0 + 1) / max(1, self.total_steps - d0), 0.0, 1.0)
            if self.decay_shape == "linear":
                shape = 1.0 - progress
            elif self.decay_shape == "sqrt":
                shape = 1.0 - np.sqrt(progress)
            else:
                shape = 0.5 * (1 + np.cos(np.pi * progress))
            shape = np.where(s < d0, 1.0, shape)
        rest = self.peak * (self.min_ratio + (1 - self.min_ratio) * shape)
        return np.where(s < self.warmup_steps, warm, rest)

    def lr(self, step: int) -> float:
        """Rate of optimiser step ``step`` (0-based)."""
        return float(self.lrs(np.array([step]))[0])

    def phase(self, step: int) -> str:
        """``"warmup"``, ``"stable"`` (WSD), ``"decay"`` or ``"end"`` at ``step``."""
        if step < self.warmup_steps:
            return "warmup"
        if step >= self.total_steps:
            return "end"
        if self.kind == "wsd" and step < self.decay_start:
            return "stable"
        return "decay"

    def agrees_with(self, other: "Schedule", until: int) -> bool:
        """Whether both schedules gave the same rate to every step before ``until``."""
        if until <= 0:
            return True
        steps = np.arange(int(until))
        return bool(np.allclose(self.lrs(steps), other.lrs(steps), rtol=1e-9, atol=0.0))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Schedule":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def make_schedule(kind: str, peak: float, total_steps: int, warmup_steps: int, min_ratio: float,
                  decay_steps: int | None = None, decay_shape: str = "sqrt") -> Schedule:
    """A :class:`Schedule`; ``decay_steps=None`` gives WSD a decay of :data:`DEFAULT_DECAY_FRACTION` of the run."""
    if decay_steps is None:
        decay_steps = int(math.ceil(DEFAULT_DECAY_FRACTION * total_steps)) if kind == "wsd" else 0
    return Schedule(kind, float(peak), int(total_steps), int(warmup_steps), float(min_ratio), int(decay_steps),
                    decay_shape)
