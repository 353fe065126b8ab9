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


def kinematic_simulator(atoms):
    """Kinematic zone-axis patterns of an ASE ``Atoms`` (spglib primitive cell, k_max 1.6 1/Å,
    Bloch-matched spot selection): ``(entry, conv, pattern)`` with ``pattern(R, scale=1.0)`` the spot
    list ``qx, qy, I`` at rotation ``R``, its positions times ``scale``. Needs spglib and py4DSTEM."""
    import spglib
    from py4DSTEM.process.diffraction import Crystal

    from py4dstem_gnn.data.conventional import conventional_to_primitive
    from py4dstem_gnn.data.kinematic import KinematicLibrary, SpotSelection, kinematic_entry, sample_kinematic

    cell = (np.asarray(atoms.cell[:]), atoms.get_scaled_positions(), atoms.numbers)
    plat, ppos, pnum = spglib.standardize_cell(cell, to_primitive=True, symprec=1e-3)
    entry = kinematic_entry(Crystal(positions=ppos, numbers=pnum, cell=plat), 2.0)
    lib = KinematicLibrary.from_entries([0], [entry])
    conv = conventional_to_primitive(plat, ppos, pnum)

    def pattern(R, scale=1.0):
        pl = sample_kinematic(lib, [0], np.asarray(R)[None], k_max=1.6, **SpotSelection().kwargs())[0]
        pl[:, :2] *= scale
        return pl

    return entry, conv, pattern
