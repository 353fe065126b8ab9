"""Moved to :mod:`py4dstem_gnn.confidence.calibration`; this alias stays for code outside the package (and
``plot.py`` until its owner switches its imports)."""

from .confidence.calibration import *  # noqa: F401,F403
from .confidence.calibration import __all__  # noqa: F401
