"""Hand-built test crystals (no database needed): fcc Au, rock salt, hcp Mg."""

from __future__ import annotations

import numpy as np

from py4dstem_gnn.data.structures import StructureCell


def au() -> StructureCell:
    """fcc gold, conventional cell, Fm-3m (225)."""
    return StructureCell(np.eye(3) * 4.08, np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]]),
                         np.full(4, 79))


def nacl() -> StructureCell:
    """Rock salt NaCl, conventional cell, Fm-3m (225)."""
    pos = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                    [.5, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5]])
    return StructureCell(np.eye(3) * 5.64, pos, np.array([11] * 4 + [17] * 4))


def mg() -> StructureCell:
    """hcp magnesium, P6_3/mmc (194)."""
    a, c = 3.21, 5.21
    lat = np.array([[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, c]])
    return StructureCell(lat, np.array([[1 / 3, 2 / 3, .25], [2 / 3, 1 / 3, .75]]), np.array([12, 12]))


#: material id -> (cell, space group)
CELLS = {0: (au(), 225), 1: (nacl(), 225), 2: (mg(), 194)}
