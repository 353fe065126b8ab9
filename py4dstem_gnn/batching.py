"""Ragged spot lists to padded batches, and the model forward on one batch.

This module holds the batching machinery used by :mod:`py4dstem_gnn.predict`:

* :class:`RaggedSpots` stores the diffracted spots of ``n`` patterns as one flat
  ``(total, 3)`` array with offsets (no per-pattern objects), caps every pattern to
  the model's ``max_spots`` brightest spots and pads a batch of patterns into the
  ``(B, N, 3)`` spots / ``(B, N)`` mask tensors the model takes.
* :func:`_plan_batches` sorts patterns by their number of spots and cuts them into
  batches of similar length, so that little padding is computed. Without an
  explicit ``batch_size`` each batch is bounded by a token budget (patterns ×
  padded spots, :func:`_token_budget`) chosen for the device, so the memory of one
  batch stays bounded whatever the scan size.
* :func:`_run_batch` pads one batch, runs the model and returns the softmax
  probabilities of both heads; :func:`_is_oom` recognises a CUDA out-of-memory
  error so that the caller can halve the batch and retry.

The names are re-exported by :mod:`py4dstem_gnn.predict`, where they were defined
first. The token budgets are module attributes of *this* module: change
``py4dstem_gnn.batching.CPU_TOKEN_BUDGET`` (not the re-exported copy) to change the
automatic batch size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "RaggedSpots",
    "CPU_TOKEN_BUDGET",
    "CUDA_TOKEN_BUDGET",
    "MAX_AUTO_BATCH",
]

logger = logging.getLogger(__name__)

#: Token budget (patterns × padded spots per batch) on the CPU. Measured on the
#: 2-core development machine (benchmarks/results/inference.md): smaller batches
#: stay in cache; throughput drops above ~4k tokens.
CPU_TOKEN_BUDGET: int = 4096
#: Token budget on CUDA when the free memory cannot be queried.
CUDA_TOKEN_BUDGET: int = 1 << 20
#: Largest number of patterns in one automatic batch.
MAX_AUTO_BATCH: int = 8192


def _max_spots(net: torch.nn.Module) -> int:
    """Most spots per pattern the model takes (``net.config.max_spots``, default 64)."""
    cfg = getattr(net, "config", None)
    return int(getattr(cfg, "max_spots", 64))


def _token_budget(device: torch.device, net: torch.nn.Module, max_spots: int) -> int:
    """Tokens (patterns × padded spots) per batch for an automatic batch size."""
    if device.type != "cuda":
        return CPU_TOKEN_BUDGET
    try:
        free, _total = torch.cuda.mem_get_info(device)
    except Exception:  # pragma: no cover - depends on the driver
        logger.debug("CUDA free memory unavailable; token budget %d", CUDA_TOKEN_BUDGET)
        return CUDA_TOKEN_BUDGET
    # A generous per-token estimate: activations of all layers kept at once
    # (inference mode frees them, so this overestimates) plus attention scores.
    cfg = getattr(net, "config", None)
    width = int(getattr(cfg, "d_model", getattr(cfg, "hidden_dim", 256)) or 256)
    heads = int(getattr(cfg, "n_heads", getattr(cfg, "num_heads", 8)) or 8)
    per_token = 4 * (16 * width + 4 * heads * max_spots)
    budget = int(0.4 * free / max(per_token, 1))
    return int(min(max(budget, 4 * max_spots), 1 << 24))


def _plan_batches(
    lengths: np.ndarray, batch_size: int | None, token_budget: int
) -> list[np.ndarray]:
    """Cut patterns sorted by length into batches; returns index arrays (original order)."""
    order = np.argsort(lengths, kind="stable")
    n = order.size
    batches: list[np.ndarray] = []
    if n == 0:
        return batches
    if batch_size is not None:
        bs = max(int(batch_size), 1)
        return [order[i : i + bs] for i in range(0, n, bs)]
    sorted_len = np.maximum(lengths[order], 1)
    start = 0
    while start < n:
        # patterns sorted ascending: the last one of a batch sets its padded length
        # grow the batch while (count * padded length) stays within the budget
        lo, hi = start + 1, min(n, start + MAX_AUTO_BATCH)
        # binary search the largest end with (end - start) * sorted_len[end - 1] <= budget
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if (mid - start) * int(sorted_len[mid - 1]) <= token_budget:
                lo = mid
            else:
                hi = mid - 1
        end = max(lo, start + 1)
        batches.append(order[start:end])
        start = end
    return batches


def _is_oom(err: BaseException) -> bool:
    """Whether ``err`` is a (CUDA) out-of-memory error."""
    oom_types = tuple(
        t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t
    )
    if oom_types and isinstance(err, oom_types):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


@dataclass
class RaggedSpots:
    """Diffracted spots of ``n`` patterns as one flat array (no per-pattern objects).

    Attributes
    ----------
    spots : numpy.ndarray of float32, shape (total, 3)
        ``qx, qy, intensity`` of all patterns, pattern after pattern.
    offsets : numpy.ndarray of int64, shape (n + 1,)
        Pattern ``i`` is ``spots[offsets[i]:offsets[i + 1]]``.
    """

    spots: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def lengths(self) -> np.ndarray:
        """Number of spots of every pattern, (n,)."""
        return np.diff(self.offsets)

    @classmethod
    def from_lists(cls, spot_lists: Sequence[np.ndarray]) -> "RaggedSpots":
        """Concatenate ``(m_i, 3)`` arrays."""
        arrays = [np.asarray(s, np.float32).reshape(-1, 3) for s in spot_lists]
        offsets = np.zeros(len(arrays) + 1, np.int64)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        flat = np.concatenate(arrays) if offsets[-1] else np.zeros((0, 3), np.float32)
        return cls(flat, offsets)

    def cap(self, max_spots: int) -> "RaggedSpots":
        """Keep the ``max_spots`` brightest spots of every longer pattern.

        Same selection as :func:`py4dstem_gnn.features.collate` (brightest first,
        ties broken by radius then angle; kept spots stay in their input order),
        vectorised over all patterns.
        """
        lengths = self.lengths
        long = np.flatnonzero(lengths > max_spots)
        if long.size == 0:
            return self
        keep = np.ones(len(self.spots), bool)
        long_len = lengths[long]
        pattern = np.repeat(long, long_len)  # pattern of every spot of the long patterns
        first = np.repeat(np.cumsum(long_len) - long_len, long_len)  # group start, compacted
        local = np.arange(pattern.size) - first  # index of the spot within its pattern
        idx = np.repeat(self.offsets[long], long_len) + local  # flat index into self.spots
        sp = self.spots[idx]
        r = np.hypot(sp[:, 0], sp[:, 1])
        theta = np.arctan2(sp[:, 1], sp[:, 0])
        order = np.lexsort((theta, r, -sp[:, 2], pattern))  # grouped by pattern, brightest first
        rank = np.empty(pattern.size, np.int64)
        rank[order] = np.arange(pattern.size) - first
        keep[idx[rank >= max_spots]] = False
        new_len = lengths.copy()
        new_len[long] = max_spots
        offsets = np.zeros_like(self.offsets)
        np.cumsum(new_len, out=offsets[1:])
        return RaggedSpots(self.spots[keep], offsets)

    def pad(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded batch of patterns ``idx``: spots (B, N, 3) float32 and mask (B, N).

        ``N = max(1, longest pattern of the batch)``; call :meth:`cap` first to
        bound it. Equals :func:`py4dstem_gnn.features.collate` of those patterns.
        """
        idx = np.asarray(idx, np.int64)
        lengths = self.offsets[idx + 1] - self.offsets[idx]
        n = max(1, int(lengths.max()) if lengths.size else 1)
        cols = np.arange(n)
        mask = cols[None, :] < lengths[:, None]
        gather = np.where(mask, self.offsets[idx][:, None] + cols[None, :], 0)
        out = self.spots[gather] if len(self.spots) else np.zeros(gather.shape + (3,), np.float32)
        out[~mask] = 0.0
        return torch.from_numpy(np.ascontiguousarray(out, np.float32)), torch.from_numpy(mask)


def _run_batch(
    net: torch.nn.Module,
    ragged: RaggedSpots,
    idx: np.ndarray,
    device: torch.device,
    autocast: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Model forward on patterns ``idx``; returns (cs_probs, sg_probs) as numpy."""
    spots, mask = ragged.pad(idx)
    spots = spots.to(device, non_blocking=True)
    mask = mask.to(device, non_blocking=True)
    if autocast:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            out = net(spots, mask)
    else:
        out = net(spots, mask)
    cs_p = torch.softmax(out.cs_logits.float(), dim=-1)
    sg_p = torch.softmax(out.sg_logits.float(), dim=-1)
    return cs_p.cpu().numpy(), sg_p.cpu().numpy()
