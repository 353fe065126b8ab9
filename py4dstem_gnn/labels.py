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
    "SPACE_GROUP_SYMBOLS",
    "hermann_mauguin",
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


#: Short Hermann-Mauguin symbol of every space group: ``SPACE_GROUP_SYMBOLS[j]`` is the
#: symbol of space group ``j + 1``. Generated once with spglib 2.8.0 (``international_short``
#: of the first Hall setting of each number, spglib's spelling: subscripts as ``_``, e.g.
#: ``"P2_1/c"``) and kept here as a literal so that no run-time dependency is needed;
#: ``tests/test_labels.py`` compares it with spglib when spglib is installed.
SPACE_GROUP_SYMBOLS: tuple[str, ...] = (
    "P1", "P-1", "P2", "P2_1", "C2", "Pm", "Pc", "Cm", "Cc", "P2/m",  # 1-10
    "P2_1/m", "C2/m", "P2/c", "P2_1/c", "C2/c", "P222", "P222_1", "P2_12_12", "P2_12_12_1", "C222_1",  # 11-20
    "C222", "F222", "I222", "I2_12_12_1", "Pmm2", "Pmc2_1", "Pcc2", "Pma2", "Pca2_1", "Pnc2",  # 21-30
    "Pmn2_1", "Pba2", "Pna2_1", "Pnn2", "Cmm2", "Cmc2_1", "Ccc2", "Amm2", "Aem2", "Ama2",  # 31-40
    "Aea2", "Fmm2", "Fdd2", "Imm2", "Iba2", "Ima2", "Pmmm", "Pnnn", "Pccm", "Pban",  # 41-50
    "Pmma", "Pnna", "Pmna", "Pcca", "Pbam", "Pccn", "Pbcm", "Pnnm", "Pmmn", "Pbcn",  # 51-60
    "Pbca", "Pnma", "Cmcm", "Cmce", "Cmmm", "Cccm", "Cmme", "Ccce", "Fmmm", "Fddd",  # 61-70
    "Immm", "Ibam", "Ibca", "Imma", "P4", "P4_1", "P4_2", "P4_3", "I4", "I4_1",  # 71-80
    "P-4", "I-4", "P4/m", "P4_2/m", "P4/n", "P4_2/n", "I4/m", "I4_1/a", "P422", "P42_12",  # 81-90
    "P4_122", "P4_12_12", "P4_222", "P4_22_12", "P4_322", "P4_32_12", "I422", "I4_122", "P4mm", "P4bm",  # 91-100
    "P4_2cm", "P4_2nm", "P4cc", "P4nc", "P4_2mc", "P4_2bc", "I4mm", "I4cm", "I4_1md", "I4_1cd",  # 101-110
    "P-42m", "P-42c", "P-42_1m", "P-42_1c", "P-4m2", "P-4c2", "P-4b2", "P-4n2", "I-4m2", "I-4c2",  # 111-120
    "I-42m", "I-42d", "P4/mmm", "P4/mcc", "P4/nbm", "P4/nnc", "P4/mbm", "P4/mnc", "P4/nmm", "P4/ncc",  # 121-130
    "P4_2/mmc", "P4_2/mcm", "P4_2/nbc", "P4_2/nnm", "P4_2/mbc", "P4_2/mnm", "P4_2/nmc", "P4_2/ncm", "I4/mmm", "I4/mcm",  # 131-140
    "I4_1/amd", "I4_1/acd", "P3", "P3_1", "P3_2", "R3", "P-3", "R-3", "P312", "P321",  # 141-150
    "P3_112", "P3_121", "P3_212", "P3_221", "R32", "P3m1", "P31m", "P3c1", "P31c", "R3m",  # 151-160
    "R3c", "P-31m", "P-31c", "P-3m1", "P-3c1", "R-3m", "R-3c", "P6", "P6_1", "P6_5",  # 161-170
    "P6_2", "P6_4", "P6_3", "P-6", "P6/m", "P6_3/m", "P622", "P6_122", "P6_522", "P6_222",  # 171-180
    "P6_422", "P6_322", "P6mm", "P6cc", "P6_3cm", "P6_3mc", "P-6m2", "P-6c2", "P-62m", "P-62c",  # 181-190
    "P6/mmm", "P6/mcc", "P6_3/mcm", "P6_3/mmc", "P23", "F23", "I23", "P2_13", "I2_13", "Pm-3",  # 191-200
    "Pn-3", "Fm-3", "Fd-3", "Im-3", "Pa-3", "Ia-3", "P432", "P4_232", "F432", "F4_132",  # 201-210
    "I432", "P4_332", "P4_132", "I4_132", "P-43m", "F-43m", "I-43m", "P-43n", "F-43c", "I-43d",  # 211-220
    "Pm-3m", "Pn-3n", "Pm-3n", "Pn-3m", "Fm-3m", "Fm-3c", "Fd-3m", "Fd-3c", "Im-3m", "Ia-3d",  # 221-230
)


def hermann_mauguin(space_group: int) -> str:
    """Short Hermann-Mauguin symbol of a space-group number (``225`` -> ``"Fm-3m"``).

    Parameters
    ----------
    space_group : int
        International Tables number, 1..230.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If the number is outside 1..230 (``-1``, invalid, has no symbol).
    """
    number = int(space_group)
    if not 1 <= number <= N_SPACE_GROUPS:
        raise ValueError(f"space-group numbers lie in 1..230; got {space_group!r}")
    return SPACE_GROUP_SYMBOLS[number - 1]
