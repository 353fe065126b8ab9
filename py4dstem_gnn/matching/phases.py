"""Candidates as users think of them: the whole pool, an element filter, or their own structures.

:func:`resolve_bank` turns the ``phases=`` / ``elements=`` arguments of
:func:`py4dstem_gnn.predict_pointlists` and :func:`py4dstem_gnn.classify_braggvectors` into a
:class:`~py4dstem_gnn.matching.bank.TemplateBank`:

* ``phases="pool"`` (default): the shipped whole-pool bank;
* ``phases=None``: no matching (the network alone);
* ``phases=[...]``: CIF paths, ASE ``Atoms`` or py4DSTEM ``Crystal`` objects (or a mix), whose
  templates are made on the fly (about 0.1 s each): with a user's list this is multi-phase phase and
  zone-axis mapping;
* ``elements=["Au", "Ti", "O"]``: keep only bank phases made of these elements (all of a phase's
  elements among them), what an EDS spectrum tells a user.

A user's structure is standardised with spglib (primitive cell for the structure factors, the
conventional cell for naming zone axes, the space group), as the pool's structures were.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .bank import TemplateBank, formula_elements, load_bank
from .templates import TemplateConfig, material_templates

__all__ = ["resolve_bank", "structure_bank", "formula_elements", "reduced_formula"]

logger = logging.getLogger(__name__)

_SYMPREC = 1e-3


def reduced_formula(numbers: Sequence[int]) -> str:
    """Reduced formula, Hill order (C, H first when carbon is present; else alphabetical)."""
    from ase.data import chemical_symbols

    nums, counts = np.unique(np.asarray(numbers, int), return_counts=True)
    g = int(np.gcd.reduce(counts))
    sym = {chemical_symbols[z]: int(c) // g for z, c in zip(nums, counts)}
    keys = sorted(sym)
    if "C" in sym:
        keys = ["C"] + (["H"] if "H" in sym else []) + [k for k in keys if k not in ("C", "H")]
    return "".join(k + (str(sym[k]) if sym[k] > 1 else "") for k in keys)


def _cell_of(obj: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(lattice rows Å, fractional positions, atomic numbers, source name) of a user's structure."""
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        if not path.is_file():
            raise FileNotFoundError(f"structure file {path} does not exist")
        try:
            from ase.io import read
        except ImportError as exc:  # pragma: no cover - ase is a dependency
            raise ImportError("reading CIF files needs ase: pip install ase") from exc
        atoms = read(str(path))
        return np.asarray(atoms.cell[:], float), atoms.get_scaled_positions(), atoms.numbers, path.name
    if hasattr(obj, "get_scaled_positions") and hasattr(obj, "cell"):  # ASE Atoms
        name = obj.info.get("name") if hasattr(obj, "info") else None
        return np.asarray(obj.cell[:], float), obj.get_scaled_positions(), np.asarray(obj.numbers), name or obj.get_chemical_formula()
    if hasattr(obj, "lat_real") and hasattr(obj, "positions") and hasattr(obj, "numbers"):  # py4DSTEM Crystal
        return np.asarray(obj.lat_real, float), np.asarray(obj.positions, float), np.asarray(obj.numbers, int), "Crystal"
    raise TypeError(
        f"a phase must be a CIF path, an ASE Atoms or a py4DSTEM Crystal, got {type(obj).__name__}; "
        "pass phases='pool' for the shipped bank or phases=None to switch matching off")


def structure_bank(structures: Iterable[Any], config: TemplateConfig = TemplateConfig(),
                   names: Sequence[str] | None = None) -> TemplateBank:
    """Templates of users' structures, made now.

    Parameters
    ----------
    structures : iterable
        CIF paths, ASE ``Atoms`` or py4DSTEM ``Crystal`` objects.
    config : TemplateConfig
    names : sequence of str, optional
        Source names (default: the file name, the Atoms' ``info["name"]`` or its formula).

    Returns
    -------
    TemplateBank
    """
    import spglib
    from py4DSTEM.process.diffraction import Crystal

    from ..data.conventional import conventional_to_primitive
    from ..data.kinematic import kinematic_entry
    from ..labels import crystal_system_of_space_group

    temps, tphase, sgs, css, forms, lats, convs, sources = [], [], [], [], [], [], [], []
    for j, obj in enumerate(structures):
        lattice, pos, num, source = _cell_of(obj)
        cell = (lattice, np.mod(pos, 1.0), np.asarray(num, int))
        std = spglib.standardize_cell(cell, to_primitive=True, symprec=_SYMPREC)
        ds = spglib.get_symmetry_dataset(cell, symprec=_SYMPREC)
        if std is None or ds is None:
            raise ValueError(f"spglib could not standardise the structure {source!r}: check the cell and positions")
        plat, ppos, pnum = (np.asarray(x) for x in std)
        crystal = Crystal(positions=np.mod(ppos, 1.0), numbers=pnum.astype(int), cell=plat)
        entry = kinematic_entry(crystal, config.k_max)
        conv = conventional_to_primitive(plat, ppos, pnum, symprec=_SYMPREC)
        t = material_templates(entry.hkl, entry.intensity, entry.lat_inv, conv, config)
        if not t:
            logger.warning("structure %r gave no zone-axis template with %d or more reflections within %.1f 1/A",
                           source, config.min_spots, config.k_max)
        temps.extend(t)
        tphase.extend([j] * len(t))
        sg = int(ds.number)
        sgs.append(sg)
        css.append(int(crystal_system_of_space_group(sg)))
        forms.append(reduced_formula(num))
        lats.append(entry.lat_inv)
        convs.append(conv)
        sources.append(names[j] if names is not None else str(source))
    return TemplateBank.from_templates(temps, tphase, np.array(sgs, int), np.array(css, int), forms,
                                       np.array(lats).reshape(-1, 3, 3), np.array(convs).reshape(-1, 3, 3), sources,
                                       meta={"description": "user structures"})


def resolve_bank(phases: Any = "pool", elements: Sequence[str] | None = None) -> TemplateBank | None:
    """The bank to match against, from the user's ``phases`` / ``elements`` arguments.

    Parameters
    ----------
    phases : "pool", None, a bank, a path to a saved bank (.npz), or a list of structures
        See the module docstring.
    elements : sequence of str, optional
        Keep only phases whose elements are all in this list.

    Returns
    -------
    TemplateBank or None
        ``None`` when matching is off (``phases=None``).

    Raises
    ------
    ValueError
        If ``elements`` leaves no phase.
    """
    if phases is None:
        if elements:
            raise ValueError("elements= filters the phases to match against; it needs phases='pool' or a list, not None")
        return None
    if isinstance(phases, TemplateBank):
        bank = phases
    elif isinstance(phases, str) and phases == "pool":
        bank = load_bank("pool")
    elif isinstance(phases, (str, Path)) and str(phases).endswith(".npz"):
        bank = load_bank(Path(phases))
    elif isinstance(phases, (str, Path)) or hasattr(phases, "get_scaled_positions") or hasattr(phases, "lat_real"):
        bank = structure_bank([phases])
    else:
        bank = structure_bank(list(phases))
    if elements:
        allowed = {str(e).strip().capitalize() for e in elements}
        keep = np.array([els <= allowed for els in bank.elements()], bool)
        if not keep.any():
            raise ValueError(f"no phase of the bank is made of the elements {sorted(allowed)} only")
        logger.info("elements %s: %d of %d phases kept", sorted(allowed), int(keep.sum()), bank.n_phases)
        bank = bank.subset(np.flatnonzero(keep))
    return bank
