"""Moved to :mod:`py4dstem_gnn.confidence.conformal`; this alias stays for code outside the package (and
``plot.py`` until its owner switches its imports)."""

from .confidence.conformal import *  # noqa: F401,F403
from .confidence.conformal import __all__  # noqa: F401
