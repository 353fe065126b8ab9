"""Gradient-boosting reference classifier on lattice descriptors measured from the pointlists.

A strong, cheap reference beside the random forest (:mod:`py4dstem_gnn.baselines.forest`):
scikit-learn's :class:`~sklearn.ensemble.HistGradientBoostingClassifier` on

1. the lattice descriptors of :func:`py4dstem_gnn.geometry.lattice_descriptors` (reduced 2D cell,
   net type and its scores, fit quality, intensity-symmetry residuals, centring and row
   occupancies, off-net spots and the Laue-layer spacing), *measured* from each pointlist by the
   package's own net reduction (not ideal values), and
2. optionally a radial histogram of the diffracted spots (``radial_bins`` bins of equal width
   over ``[0, radial_max]`` 1/Å, each the fraction of the pattern's spots in it), which carries
   the absolute spacings of spots off the reduced net.

Heads, as for the forest: a crystal-system classifier, and one space-group classifier per crystal
system trained on that system's patterns only. They are combined into a consistent joint
distribution ``P(SG) = P(CS) * P(SG | CS)`` (uniform ``P(SG | CS)`` over the system's space
groups for a system absent from training), so that the crystal-system marginals are exactly the
crystal-system head's and the reported space group is the most probable one within the predicted
crystal system, as for the network and the forest
(:meth:`py4dstem_gnn.predict.Prediction.from_probs`). A flat 100+-class boosted head diverged
here without L2 regularisation (train accuracy 4 %); ``l2_regularization = 1`` keeps the Newton
steps of rare classes bounded.

Security note: :meth:`GradientBoostingReference.save` / :meth:`GradientBoostingReference.load`
use :mod:`joblib` (pickle). Loading a pickle executes code stored in the file: only load files you
created yourself or otherwise trust.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Sequence

import numpy as np

from ..geometry import GeometryConfig, descriptor_names, descriptors_from_geometry, pattern_geometry
from .hierarchical import HierarchicalClassifier

__all__ = ["GradientBoostingReference", "radial_histogram"]

logger = logging.getLogger(__name__)

_SAVE_FORMAT = "py4dstem_gnn.evaluation.reference.GradientBoostingReference/1"


def radial_histogram(pointlists: Sequence[np.ndarray], is_beam: np.ndarray, offsets: np.ndarray,
                     bins: int, q_max: float) -> np.ndarray:
    """Fraction of each pattern's diffracted spots in ``bins`` equal radial bins over ``[0, q_max]``.

    Parameters
    ----------
    pointlists : sequence of numpy.ndarray
        ``(n_i, 3)`` pointlists.
    is_beam : numpy.ndarray
        ``(S,)`` bool over the concatenated rows, True for the direct beam (excluded).
    offsets : numpy.ndarray
        ``(n + 1,)`` pattern bounds in the concatenated rows.
    bins : int
        Number of bins.
    q_max : float
        Outer edge (1/Å); spots beyond it are not counted.

    Returns
    -------
    numpy.ndarray
        ``(n, bins)`` float32 (rows of patterns without spots are 0).
    """
    n = len(offsets) - 1
    counts = np.diff(offsets)
    out = np.zeros((n, bins))
    if bins <= 0 or counts.sum() == 0:
        return out.astype(np.float32)
    q = np.concatenate([np.asarray(p, np.float64).reshape(-1, 3)[:, :2] for p in pointlists])
    seg = np.repeat(np.arange(n), counts)
    r = np.hypot(q[:, 0], q[:, 1])
    b = np.floor(r / q_max * bins).astype(np.int64)
    keep = ~is_beam & (b < bins)
    np.add.at(out, (seg[keep], b[keep]), 1.0)
    n_diff = np.bincount(seg[~is_beam], minlength=n)
    return (out / np.maximum(n_diff, 1)[:, None]).astype(np.float32)


@contextlib.contextmanager
def _threads(n: int | None):
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        yield
        return
    with threadpool_limits(limits=n):
        yield


@dataclass
class GradientBoostingReference(HierarchicalClassifier):
    """Crystal system and space group from measured lattice descriptors (histogram gradient boosting).

    Parameters
    ----------
    max_iter_cs, max_iter_sg : int
        Boosting iterations of the crystal-system head and of each per-crystal-system
        space-group head (each iteration grows one tree per class).
    learning_rate : float
        Shrinkage of both heads.
    max_leaf_nodes : int
        Leaves per tree.
    min_samples_leaf : int
        Smallest leaf.
    l2_regularization : float
        L2 penalty on leaf values.
    radial_bins : int
        Bins of the radial spot histogram appended to the descriptors (0: descriptors only).
    radial_max : float
        Outer edge of the radial histogram, 1/Å.
    n_threads : int or None
        OpenMP threads during fit and predict (None: scikit-learn's default, all cores).
    random_state : int
        Seed of both heads.
    geometry : GeometryConfig
        Net-reduction settings of the descriptors.

    Notes
    -----
    :meth:`predict` returns the same kind of object as the network and the forest
    (:class:`py4dstem_gnn.predict.Prediction`, ``confidence`` = margin of the two largest
    crystal-system probabilities), so :func:`py4dstem_gnn.predict.aggregate_views` and the
    evaluation code treat all three alike. Loading (:meth:`load`) unpickles the file, which can
    execute arbitrary code: load only trusted files.

    Fitting, prediction and saving are those of
    :class:`~py4dstem_gnn.baselines.hierarchical.HierarchicalClassifier`, shared with the
    other reference classifier.
    """

    max_iter_cs: int = 200
    max_iter_sg: int = 50
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    l2_regularization: float = 1.0
    radial_bins: int = 0
    radial_max: float = 2.0
    n_threads: int | None = 1
    random_state: int = 0
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    cs_model_: Any = field(default=None, repr=False)
    sg_models_: dict = field(default_factory=dict, repr=False)
    fit_info_: dict = field(default_factory=dict, repr=False)

    _ESTIMATOR = "HistGradientBoostingClassifier"
    _WHAT = "the gradient-boosting reference"
    _LOG_NAME = "gradient-boosting reference"
    _SAVE_FORMAT = _SAVE_FORMAT
    _CS_HEAD = "cs_model_"
    _SG_HEADS = "sg_models_"

    # ------------------------------------------------------------------ features
    def feature_names(self) -> list[str]:
        """Names of the feature columns: :func:`~py4dstem_gnn.geometry.descriptor_names`, then the
        radial bins ``radial_<lo>_<hi>`` (1/Å)."""
        edges = np.linspace(0, self.radial_max, self.radial_bins + 1)
        return descriptor_names() + [f"radial_{lo:.2f}_{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:])]

    def featurize(self, pointlists: Sequence[np.ndarray], progress: bool = False,
                  return_counts: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Feature matrix ``(n, len(feature_names()))`` float32 (and diffracted-spot counts)."""
        geom = pattern_geometry(pointlists, self.geometry, progress=progress)
        X = descriptors_from_geometry(pointlists, geom)
        if self.radial_bins > 0:
            H = radial_histogram(pointlists, geom.is_beam, geom.offsets, self.radial_bins, self.radial_max)
            X = np.concatenate([X, H], axis=1)
        return (X, geom.n_spots) if return_counts else X

    # ------------------------------------------------------------------ heads
    def _new_head(self, estimator: type, head: str, seed: int) -> Any:
        max_iter = self.max_iter_cs if head == "cs" else self.max_iter_sg
        return estimator(
            max_iter=max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization,
            early_stopping=False, random_state=seed,
        )

    def _fit_head(self, model: Any, X: np.ndarray, y: np.ndarray) -> Any:
        return _fit_or_constant(model, X, y)

    def _check_width(self, X: np.ndarray) -> None:
        if X.ndim != 2 or X.shape[1] != len(self.feature_names()):
            raise ValueError(f"expected {len(self.feature_names())} features, got shape {X.shape}")

    def _thread_limit(self) -> ContextManager[Any]:
        return _threads(self.n_threads)

    def _fit_summary(self, X: np.ndarray) -> dict[str, Any]:
        return {"n_features": int(X.shape[1])}

    # ------------------------------------------------------------------ persistence
    def _save_extras(self) -> dict[str, Any]:
        return {"feature_names": self.feature_names()}

    @classmethod
    def load(cls, path: str | Path, n_threads: int | None = None) -> "GradientBoostingReference":
        """Load a reference written by :meth:`save`.

        Warning: this unpickles the file, which can execute arbitrary code; load only files you
        trust.

        Raises
        ------
        ValueError
            If the file is not a saved reference, or was fitted on descriptors of another layout
            than this version of :func:`~py4dstem_gnn.geometry.descriptor_names`.
        """
        obj = cls._read(path)
        model = obj["model"]
        if obj.get("feature_names") != model.feature_names():
            raise ValueError(f"{path} was fitted on another descriptor layout than this package version")
        if n_threads is not None:
            model.n_threads = n_threads
        return model


class _Constant:
    """Stand-in for a head trained on a single class (scikit-learn refuses one class)."""

    def __init__(self, label: int):
        self.classes_ = np.array([label])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.ones((len(X), 1))


def _fit_or_constant(model, X: np.ndarray, y: np.ndarray):
    classes = np.unique(y)
    if len(classes) == 1:
        return _Constant(int(classes[0]))
    return model.fit(X, y)
