"""Shared test settings: one torch thread, headless matplotlib, no network."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

# Tiny models gain nothing from threads, and two threads on two shared cores ran ten times slower.
torch.set_num_threads(1)
