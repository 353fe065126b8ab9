"""Pattern geometry: the 2D reciprocal net of a spot pattern, its symmetry and lattice descriptors.

* :mod:`~py4dstem_gnn.geometry.net` — robust net reduction (reduced cell ``a*, b*, gamma*``,
  ``(h, k)`` indices, canonical frame);
* :mod:`~py4dstem_gnn.geometry.cell` — reduced-cell conventions, the net type with scores;
* :mod:`~py4dstem_gnn.geometry.symmetry` — intensity residuals under rotations and mirrors,
  centring and row occupancies, off-net spots and the Laue-layer spacing they imply;
* :mod:`~py4dstem_gnn.geometry.pattern` — :func:`pattern_geometry`, everything for a batch;
* :mod:`~py4dstem_gnn.geometry.descriptors` — :func:`lattice_descriptors`, a fixed-length vector
  per pattern with :func:`descriptor_names`.

Physics (details in :mod:`~py4dstem_gnn.geometry.symmetry`): zero-order kinematic patterns obey
Friedel's law, so 3 looks like 6 and 3m like 6mm, and trigonal and hexagonal crystals differ only
through dynamical Friedel breaking or higher-Laue-zone spots; at 300 kV and ``k_max = 2 1/Å`` a
higher Laue zone appears only for a repeat along the beam above ~10-25 Å (``H ~ lambda G^2 / 2``);
double diffraction fills glide absences, so absences are soft features.

All functions take pointlists as the rest of the package does: ``(n_i, 3)`` arrays ``qx, qy``
(1/Å, direct beam near ``q = 0`` included) and intensity.
"""

from .descriptors import descriptor_names, descriptor_units, descriptors_from_geometry, lattice_descriptors
from .cell import NET_TYPES, gauss_reduce, net_type_scores
from .net import GeometryConfig
from .pattern import PatternGeometry, canonical_coordinates, pattern_geometry
from .symmetry import ROW_DIRECTIONS, SYMMETRY_OPERATIONS

__all__ = [
    "NET_TYPES",
    "SYMMETRY_OPERATIONS",
    "ROW_DIRECTIONS",
    "GeometryConfig",
    "PatternGeometry",
    "pattern_geometry",
    "lattice_descriptors",
    "descriptor_names",
    "descriptor_units",
    "descriptors_from_geometry",
    "canonical_coordinates",
    "gauss_reduce",
    "net_type_scores",
]
