"""py4dstem-gnn: crystal-system and space-group maps from 4D-STEM Bragg vectors.

A py4DSTEM plugin implementing PE-AG-GMoE (Nathani et al., npj Comput. Mater. 2026): a graph
transformer over the Bragg spots of each diffraction pattern.

Public API
----------
classify_braggvectors
    py4DSTEM ``BraggVectors`` in, a ``RealSlice`` of crystal-system / space-group maps out.
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

from .predict import Prediction, aggregate_views, predict_pointlists
from .labels import CRYSTAL_SYSTEMS
from .model import ModelConfig, PEAGGMoE
from .classify import classify_braggvectors
from .weights import available_models, load_model

__version__ = "0.1.0"

__all__ = [
    "classify_braggvectors",
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
