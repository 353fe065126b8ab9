"""Crystal-system and space-group label codes.

The codes are part of the public contract of :mod:`py4dstem_gnn`:

* crystal system: 0 triclinic, 1 monoclinic, 2 orthorhombic, 3 tetragonal,
  4 trigonal, 5 hexagonal, 6 cubic (International Tables order); ``-1`` marks an
  invalid position;
* space group: International Tables number 1..230; ``-1`` marks an invalid position.

Model outputs index space groups from 0, so that column ``j`` of a probability
array is space group ``j + 1``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CRYSTAL_SYSTEMS",
    "N_CRYSTAL_SYSTEMS",
    "N_SPACE_GROUPS",
    "INVALID",
    "SPACE_GROUP_RANGES",
    "crystal_system_of_space_group",
    "SG_TO_CS",
    "space_groups_of_crystal_system",
]

CRYSTAL_SYSTEMS: tuple[str, ...] = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal",
    "hexagonal",
    "cubic",
)
N_CRYSTAL_SYSTEMS: int = len(CRYSTAL_SYSTEMS)
N_SPACE_GROUPS: int = 230
INVALID: int = -1

#: Inclusive space-group number range of each crystal system.
SPACE_GROUP_RANGES: tuple[tuple[int, int], ...] = (
    (1, 2),
    (3, 15),
    (16, 74),
    (75, 142),
    (143, 167),
    (168, 194),
    (195, 230),
)

#: ``SG_TO_CS[j]`` is the crystal-system code of space group ``j + 1``.
SG_TO_CS: np.ndarray = np.concatenate(
    [np.full(hi - lo + 1, cs, dtype=np.int64) for cs, (lo, hi) in enumerate(SPACE_GROUP_RANGES)]
)


def crystal_system_of_space_group(space_group: int | np.ndarray) -> int | np.ndarray:
    """Crystal-system code of International Tables space-group number(s).

    Parameters
    ----------
    space_group : int or numpy.ndarray
        Space-group number(s) in 1..230. ``-1`` (invalid) maps to ``-1``.

    Returns
    -------
    int or numpy.ndarray
        Crystal-system code(s) in 0..6, or ``-1`` where the input is ``-1``.

    Raises
    ------
    ValueError
        If a number is outside 1..230 and is not ``-1``.
    """
    sg = np.asarray(space_group)
    if sg.size and (not np.issubdtype(sg.dtype, np.integer)):
        if not np.all(np.equal(np.mod(sg, 1), 0)):
            raise ValueError("space-group numbers must be integers")
        sg = sg.astype(np.int64)
    bad = (sg != INVALID) & ((sg < 1) | (sg > N_SPACE_GROUPS))
    if np.any(bad):
        raise ValueError(
            f"space-group numbers must lie in 1..230 (or -1 for invalid); got {np.unique(sg[bad])[:5]}"
        )
    out = np.where(sg == INVALID, INVALID, SG_TO_CS[np.clip(sg, 1, N_SPACE_GROUPS) - 1])
    return int(out) if out.ndim == 0 else out


def space_groups_of_crystal_system(crystal_system: int) -> np.ndarray:
    """Space-group numbers (1-based) that belong to a crystal system code."""
    if not 0 <= int(crystal_system) < N_CRYSTAL_SYSTEMS:
        raise ValueError(f"crystal-system code must lie in 0..6, got {crystal_system}")
    lo, hi = SPACE_GROUP_RANGES[int(crystal_system)]
    return np.arange(lo, hi + 1)
