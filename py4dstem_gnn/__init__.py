"""py4dstem-gnn: crystal-system and space-group maps from 4D-STEM Bragg vectors.

A py4DSTEM plugin implementing PE-AG-GMoE (Nathani et al., npj Comput. Mater. 2026): a graph
transformer over the Bragg spots of each diffraction pattern.

Public API
----------
classify_braggvectors
    py4DSTEM ``BraggVectors`` in, a ``RealSlice`` of phase / crystal-system / space-group maps out.
phase_table
    The phase table of those maps (formula, space group, crystal system, source per phase index).
predict_pointlists
    Predictions for a sequence of ``(n, 3)`` spot lists (qx, qy in 1/Å, intensity).
aggregate_views
    Combine several patterns of one material (multi-zone-axis).
Prediction
    The prediction record returned by the two functions above.
load_model, ModelConfig, PEAGGMoE
    The network and its shipped weights.
"""

from __future__ import annotations

import logging

from .labels import CRYSTAL_SYSTEMS

# the public API loads lazily (PEP 562): ``import py4dstem_gnn`` and the ``info`` command stay fast,
# torch and py4DSTEM are imported on first use
_LAZY = {
    "classify_braggvectors": ".classify",
    "phase_table": ".classify",
    "predict_pointlists": ".predict",
    "aggregate_views": ".predict",
    "Prediction": ".predict",
    "ModelConfig": ".model",
    "PEAGGMoE": ".model",
    "available_models": ".weights",
    "load_model": ".weights",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"

__all__ = [
    "classify_braggvectors",
    "phase_table",
    "predict_pointlists",
    "aggregate_views",
    "Prediction",
    "load_model",
    "available_models",
    "ModelConfig",
    "PEAGGMoE",
    "CRYSTAL_SYSTEMS",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
