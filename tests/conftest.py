"""Shared test settings: one torch thread, headless matplotlib, no network; shared fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models gain nothing from threads, and two threads on two shared cores ran ten times slower.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def library():
    """Kinematic structure-factor library of the hand-built test crystals (:data:`_crystals.CELLS`)."""
    from py4dstem_gnn.data import kinematic as kinematic_
    from _crystals import CELLS

    entries = [kinematic_.kinematic_entry(CELLS[m][0].to_crystal()) for m in sorted(CELLS)]
    return kinematic_.KinematicLibrary.from_entries(sorted(CELLS), entries, {"k_max": kinematic_.K_MAX})
