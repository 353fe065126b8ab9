"""Gradient-boosting reference classifier on lattice descriptors measured from the pointlists.

A strong, cheap reference beside the random forest (:mod:`py4dstem_gnn.evaluation.baseline`):
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
(:meth:`py4dstem_gnn.inference.Prediction.from_probs`). A flat 100+-class boosted head diverged
here without L2 regularisation (train accuracy 4 %); ``l2_regularization = 1`` keeps the Newton
steps of rare classes bounded.

Security note: :meth:`GradientBoostingReference.save` / :meth:`GradientBoostingReference.load`
use :mod:`joblib` (pickle). Loading a pickle executes code stored in the file: only load files you
created yourself or otherwise trust.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..geometry import GeometryConfig, descriptor_names, descriptors_from_geometry, pattern_geometry
from ..inference import Prediction
from ..labels import N_CRYSTAL_SYSTEMS, N_SPACE_GROUPS, SG_TO_CS

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
class GradientBoostingReference:
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
    (:class:`py4dstem_gnn.inference.Prediction`, ``confidence`` = margin of the two largest
    crystal-system probabilities), so :func:`py4dstem_gnn.inference.aggregate_views` and the
    evaluation code treat all three alike. Loading (:meth:`load`) unpickles the file, which can
    execute arbitrary code: load only trusted files.
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

    # ------------------------------------------------------------------ fitting
    def _model(self, max_iter: int, seed: int):
        try:
            from sklearn.ensemble import HistGradientBoostingClassifier
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the gradient-boosting reference needs scikit-learn: pip install 'py4dstem-gnn[baseline]'"
            ) from exc
        return HistGradientBoostingClassifier(
            max_iter=max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization,
            early_stopping=False, random_state=seed,
        )

    def fit(
        self,
        pointlists: Sequence[np.ndarray] | None,
        crystal_system: np.ndarray,
        space_group: np.ndarray,
        *,
        features: np.ndarray | None = None,
        progress: bool = False,
    ) -> "GradientBoostingReference":
        """Train both heads.

        Parameters
        ----------
        pointlists : sequence of numpy.ndarray or None
            Training patterns (direct beam included); ignored if ``features`` is given.
        crystal_system : numpy.ndarray
            ``(n,)`` crystal-system codes 0..6.
        space_group : numpy.ndarray
            ``(n,)`` space-group numbers 1..230, consistent with ``crystal_system``.
        features : numpy.ndarray, optional
            Precomputed :meth:`featurize` output.
        progress : bool
            Show a progress bar during featurisation.

        Returns
        -------
        GradientBoostingReference
            ``self``.

        Raises
        ------
        ValueError
            On length mismatch, labels out of range, crystal systems that contradict the space
            groups, or a feature matrix of the wrong width.
        """
        cs = np.asarray(crystal_system, dtype=np.int64)
        sg = np.asarray(space_group, dtype=np.int64)
        if features is None:
            if pointlists is None:
                raise ValueError("give either pointlists or features")
            t0 = time.perf_counter()
            features = self.featurize(pointlists, progress=progress)
            self.fit_info_["featurize_s"] = time.perf_counter() - t0
        X = np.asarray(features, dtype=np.float32)
        if not (len(X) == len(cs) == len(sg)):
            raise ValueError(f"length mismatch: {len(X)} patterns, {len(cs)} CS, {len(sg)} SG labels")
        if len(X) == 0:
            raise ValueError("cannot fit on an empty training set")
        if X.ndim != 2 or X.shape[1] != len(self.feature_names()):
            raise ValueError(f"expected {len(self.feature_names())} features, got shape {X.shape}")
        if np.any((sg < 1) | (sg > N_SPACE_GROUPS)):
            raise ValueError("space-group numbers must lie in 1..230")
        if np.any(SG_TO_CS[sg - 1] != cs):
            raise ValueError("crystal_system contradicts space_group for some patterns")
        t0 = time.perf_counter()
        with _threads(self.n_threads):
            self.cs_model_ = _fit_or_constant(self._model(self.max_iter_cs, self.random_state), X, cs)
            self.sg_models_ = {}
            for c in np.unique(cs):
                sel = cs == c
                model = self._model(self.max_iter_sg, self.random_state + 1 + int(c))
                self.sg_models_[int(c)] = _fit_or_constant(model, X[sel], sg[sel])
        self.fit_info_.update(
            n_train=int(len(X)),
            n_features=int(X.shape[1]),
            n_per_crystal_system=np.bincount(cs, minlength=N_CRYSTAL_SYSTEMS).tolist(),
            n_space_groups=int(len(np.unique(sg))),
            fit_s=time.perf_counter() - t0,
        )
        logger.info("fitted gradient-boosting reference on %d patterns in %.1f s", len(X), self.fit_info_["fit_s"])
        return self

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if self.cs_model_ is None:
            raise RuntimeError("GradientBoostingReference is not fitted; call fit() or load()")

    def predict_proba_features(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Crystal-system ``(n, 7)`` and joint space-group ``(n, 230)`` probabilities."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        n = len(X)
        cs_probs = np.zeros((n, N_CRYSTAL_SYSTEMS))
        if n == 0:
            return cs_probs, np.zeros((0, N_SPACE_GROUPS))
        cond = np.zeros((n, N_SPACE_GROUPS))  # P(SG | CS), each CS block sums to 1
        with _threads(self.n_threads):
            cs_probs[:, self.cs_model_.classes_] = self.cs_model_.predict_proba(X)
            for c in range(N_CRYSTAL_SYSTEMS):
                members = np.flatnonzero(SG_TO_CS == c)
                model = self.sg_models_.get(c)
                if model is None:
                    cond[:, members] = 1.0 / len(members)
                    continue
                rows = cs_probs[:, c] > 0  # only where the crystal system has mass
                block = np.full((n, len(model.classes_)), 1.0 / len(model.classes_))
                if rows.any():
                    block[rows] = model.predict_proba(X[rows])
                cond[:, model.classes_ - 1] = block
        return cs_probs, cond * cs_probs[:, SG_TO_CS]

    def predict_features(self, X: np.ndarray, n_spots: np.ndarray | None = None) -> Prediction:
        """Prediction object from a precomputed feature matrix (``n_spots`` stored as given, or 0)."""
        cs_probs, sg_probs = self.predict_proba_features(X)
        if n_spots is None:
            n_spots = np.zeros(len(cs_probs), dtype=np.int64)
        return Prediction.from_probs(cs_probs, sg_probs, n_spots)

    def predict(self, pointlists: Sequence[np.ndarray], progress: bool = False) -> Prediction:
        """Predict crystal system and space group of each pattern.

        Parameters
        ----------
        pointlists : sequence of numpy.ndarray
            Each ``(n_i, 3)`` ``qx, qy, intensity``, direct beam included.
        progress : bool
            Show a progress bar during featurisation.

        Returns
        -------
        py4dstem_gnn.inference.Prediction
            ``crystal_system (n,)``, ``space_group (n,)`` (most probable within the predicted
            crystal system), ``confidence (n,)`` (margin of the two largest crystal-system
            probabilities), ``crystal_system_probs (n, 7)``, ``space_group_probs (n, 230)``
            (joint ``P(CS) P(SG | CS)``), ``n_spots (n,)`` (diffracted spots).
        """
        X, counts = self.featurize(pointlists, progress=progress, return_counts=True)
        return self.predict_features(X, counts)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, compress: int = 3) -> Path:
        """Write the fitted reference with joblib (pickle). Returns the path written."""
        import joblib

        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        joblib.dump({"format": _SAVE_FORMAT, "model": self, "feature_names": self.feature_names()},
                    tmp, compress=compress)
        tmp.replace(path)
        return path

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
        import joblib

        obj = joblib.load(Path(path))
        if not isinstance(obj, dict) or obj.get("format") != _SAVE_FORMAT:
            raise ValueError(f"{path} is not a GradientBoostingReference file")
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
