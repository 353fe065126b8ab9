"""Phase identification against known structures (the match stage).

* :mod:`~py4dstem_gnn.matching.templates` — zone-axis templates of one structure (2D net + indexed
  intensities);
* :mod:`~py4dstem_gnn.matching.bank` — :class:`TemplateBank`, many structures' templates in flat
  arrays; building the whole-pool bank (``py4dstem-gnn bank build``), saving, loading, subsets;
* :mod:`~py4dstem_gnn.matching.phases` — what users pass (``phases="pool"``, structures, ``elements=``)
  -> a bank;
* :mod:`~py4dstem_gnn.matching.matcher` — :func:`match_patterns`: shortlist by the measured net with a
  fitted global scale, score on indexed intensities, top-k per pattern;
* :mod:`~py4dstem_gnn.matching.orientation` — orientations (zone axis, in-plane angle, rotation) of
  matches; :mod:`~py4dstem_gnn.matching.fields` — the per-pattern fields users see.
"""

from .bank import TemplateBank, build_pool_bank, load_bank
from .fields import match_fields
from .matcher import MatchConfig, MatchResult, match_patterns
from .orientation import match_orientations
from .phases import formula_elements, resolve_bank, structure_bank
from .templates import Template, TemplateConfig, axis_templates, material_templates

__all__ = [
    "TemplateBank",
    "TemplateConfig",
    "Template",
    "MatchConfig",
    "MatchResult",
    "load_bank",
    "build_pool_bank",
    "resolve_bank",
    "structure_bank",
    "formula_elements",
    "match_patterns",
    "match_orientations",
    "match_fields",
    "axis_templates",
    "material_templates",
]
