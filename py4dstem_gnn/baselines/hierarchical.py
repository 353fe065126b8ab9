"""Shared skeleton of the hierarchical reference classifiers (crystal system, then space group).

:class:`~py4dstem_gnn.baselines.forest.RandomForestBaseline` and
:class:`~py4dstem_gnn.baselines.reference.GradientBoostingReference` differ in their features
and in their scikit-learn estimator, and nothing else: both fit one crystal-system head and one
space-group head per crystal system (trained on that system's patterns only), combine them into
the joint distribution ``P(SG) = P(CS) · P(SG | CS)`` and save / load themselves with joblib.
:class:`HierarchicalClassifier` holds that common part; a subclass supplies the features
(:meth:`~HierarchicalClassifier.featurize`), the heads (:meth:`~HierarchicalClassifier._new_head`)
and a few names.

The base class adds no instance attributes, so files pickled before it existed still load: the
pickles name the subclasses, whose attribute names are unchanged (their old module paths,
``py4dstem_gnn.evaluation.baseline`` / ``.reference``, are mapped on loading).

Security note: :meth:`HierarchicalClassifier.save` / :meth:`HierarchicalClassifier._read` use
:mod:`joblib` (pickle). Loading a pickle executes code stored in the file: only load files you
created yourself or otherwise trust.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, ContextManager, Sequence

import numpy as np

from ..predict import Prediction
from ..labels import N_CRYSTAL_SYSTEMS, N_SPACE_GROUPS, SG_TO_CS

__all__ = ["HierarchicalClassifier", "sklearn_classifier"]


def sklearn_classifier(name: str, what: str) -> type:
    """The estimator class ``sklearn.ensemble.<name>``, or a helpful ImportError.

    Parameters
    ----------
    name : str
        Class name in :mod:`sklearn.ensemble`.
    what : str
        What needs it, for the error message (e.g. ``"the random-forest baseline"``).

    Returns
    -------
    type
    """
    try:
        import sklearn.ensemble
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{what} needs scikit-learn: pip install 'py4dstem-gnn[baseline]'") from exc
    return getattr(sklearn.ensemble, name)


class HierarchicalClassifier:
    """Fit / predict / save / load of a crystal-system head and per-crystal-system space-group heads.

    Subclasses are dataclasses with a ``random_state`` and a ``fit_info_`` dict field, and set the
    class attributes below. They implement :meth:`featurize`, :meth:`_new_head` and
    :meth:`_check_width`, and may override :meth:`_fit_head`, :meth:`_thread_limit`,
    :meth:`_fit_summary` and :meth:`_save_extras`.

    Attributes
    ----------
    _ESTIMATOR : str
        Class name of the heads in :mod:`sklearn.ensemble`.
    _WHAT : str
        What the model is called in the ImportError message.
    _LOG_NAME : str
        What the model is called in the log line of :meth:`fit`.
    _SAVE_FORMAT : str
        Format tag written by :meth:`save` and checked by :meth:`_read`.
    _CS_HEAD, _SG_HEADS : str
        Names of the attributes holding the crystal-system head and the dict crystal system ->
        space-group head.
    _SG_PROGRESS : str or None
        Label of the progress bar over the space-group heads when ``fit(progress=True)``; None:
        no bar.
    """

    _ESTIMATOR: ClassVar[str]
    _WHAT: ClassVar[str]
    _LOG_NAME: ClassVar[str]
    _SAVE_FORMAT: ClassVar[str]
    _CS_HEAD: ClassVar[str]
    _SG_HEADS: ClassVar[str]
    _SG_PROGRESS: ClassVar[str | None] = None

    random_state: int
    fit_info_: dict

    # ------------------------------------------------------------------ subclass hooks
    def featurize(self, pointlists: Sequence[np.ndarray], progress: bool = False,
                  return_counts: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Feature matrix ``(n, n_features)`` float32 (and diffracted-spot counts ``(n,)``)."""
        raise NotImplementedError

    def _new_head(self, estimator: type, head: str, seed: int) -> Any:
        """An unfitted ``estimator`` for the ``"cs"`` head or an ``"sg"`` head, seeded with ``seed``."""
        raise NotImplementedError

    def _check_width(self, X: np.ndarray) -> None:
        """Raise ValueError if ``X`` has not the number of features of :meth:`featurize`."""
        raise NotImplementedError

    def _fit_head(self, model: Any, X: np.ndarray, y: np.ndarray) -> Any:
        """Fit one head; returns the fitted head."""
        return model.fit(X, y)

    def _thread_limit(self) -> ContextManager[Any]:
        """Context of the fit and predict calls (e.g. a thread limit); none by default."""
        return contextlib.nullcontext()

    def _fit_summary(self, X: np.ndarray) -> dict[str, Any]:
        """Extra ``fit_info_`` entries, written after ``n_train``."""
        return {}

    def _save_extras(self) -> dict[str, Any]:
        """Extra entries of the saved dict (after ``format`` and ``model``)."""
        return {}

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        pointlists: Sequence[np.ndarray] | None,
        crystal_system: np.ndarray,
        space_group: np.ndarray,
        *,
        features: np.ndarray | None = None,
        progress: bool = False,
    ) -> Any:
        """Train the crystal-system head and the per-crystal-system space-group heads.

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
            Show a progress bar during featurisation (and, for the random forest, over the
            space-group forests).

        Returns
        -------
        self

        Raises
        ------
        ImportError
            If scikit-learn is not installed.
        ValueError
            On length mismatch, labels out of range, crystal systems that contradict the space
            groups, or a feature matrix of the wrong width.
        """
        estimator = sklearn_classifier(self._ESTIMATOR, self._WHAT)
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
        self._check_width(X)
        if np.any((sg < 1) | (sg > N_SPACE_GROUPS)):
            raise ValueError("space-group numbers must lie in 1..230")
        if np.any(SG_TO_CS[sg - 1] != cs):
            raise ValueError("crystal_system contradicts space_group for some patterns")

        t0 = time.perf_counter()
        with self._thread_limit():
            setattr(self, self._CS_HEAD, self._fit_head(self._new_head(estimator, "cs", self.random_state), X, cs))
            heads: dict[int, Any] = {}
            setattr(self, self._SG_HEADS, heads)
            systems: Any = np.unique(cs)
            if progress and self._SG_PROGRESS:
                from ..progress import tqdm

                systems = tqdm(systems, desc=self._SG_PROGRESS, unit="system")
            for c in systems:
                sel = cs == c
                model = self._new_head(estimator, "sg", self.random_state + 1 + int(c))
                heads[int(c)] = self._fit_head(model, X[sel], sg[sel])
        self.fit_info_.update(
            n_train=int(len(X)),
            **self._fit_summary(X),
            n_per_crystal_system=np.bincount(cs, minlength=N_CRYSTAL_SYSTEMS).tolist(),
            n_space_groups=int(len(np.unique(sg))),
            fit_s=time.perf_counter() - t0,
        )
        logging.getLogger(type(self).__module__).info(
            "fitted %s on %d patterns in %.1f s", self._LOG_NAME, len(X), self.fit_info_["fit_s"]
        )
        return self

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if getattr(self, self._CS_HEAD) is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load()")

    def predict_proba_features(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Crystal-system ``(n, 7)`` and joint space-group ``(n, 230)`` probabilities.

        ``P(SG | CS)`` is uniform over a crystal system's space groups when no head was trained
        for it, and over the head's classes for the patterns where ``P(CS) = 0`` (the head is
        only evaluated where the crystal system has mass).
        """
        self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        n = len(X)
        cs_probs = np.zeros((n, N_CRYSTAL_SYSTEMS))
        if n == 0:
            return cs_probs, np.zeros((0, N_SPACE_GROUPS))
        cs_head = getattr(self, self._CS_HEAD)
        sg_heads = getattr(self, self._SG_HEADS)
        cond = np.zeros((n, N_SPACE_GROUPS))  # P(SG | CS), each CS block sums to 1
        with self._thread_limit():
            cs_probs[:, cs_head.classes_] = cs_head.predict_proba(X)
            for c in range(N_CRYSTAL_SYSTEMS):
                head = sg_heads.get(c)
                if head is None:
                    members = np.flatnonzero(SG_TO_CS == c)
                    cond[:, members] = 1.0 / len(members)
                    continue
                rows = cs_probs[:, c] > 0  # only where the crystal system has mass
                block = np.full((n, len(head.classes_)), 1.0 / len(head.classes_))
                if rows.any():
                    block[rows] = head.predict_proba(X[rows])
                cond[:, head.classes_ - 1] = block
        return cs_probs, cond * cs_probs[:, SG_TO_CS]

    def predict_features(self, X: np.ndarray, n_spots: np.ndarray | None = None) -> Prediction:
        """Prediction object from a precomputed feature matrix.

        Parameters
        ----------
        X : numpy.ndarray
            ``(n, n_features)`` output of :meth:`featurize`.
        n_spots : numpy.ndarray, optional
            ``(n,)`` diffracted-spot counts to store in the prediction (zeros if not given).
        """
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
        py4dstem_gnn.predict.Prediction
            ``crystal_system (n,)``, ``space_group (n,)`` (most probable within the predicted
            crystal system), ``confidence (n,)`` (margin of the two largest crystal-system
            probabilities, as for the model), ``crystal_system_probs (n, 7)``,
            ``space_group_probs (n, 230)`` (joint ``P(CS) P(SG | CS)``), ``n_spots (n,)``
            (diffracted spots).
        """
        X, counts = self.featurize(pointlists, progress=progress, return_counts=True)
        return self.predict_features(X, counts)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, compress: int = 3) -> Path:
        """Write the fitted model with joblib (pickle). Returns the path written."""
        import joblib

        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        joblib.dump({"format": self._SAVE_FORMAT, "model": self, **self._save_extras()}, tmp, compress=compress)
        tmp.replace(path)
        return path

    @classmethod
    def _read(cls, path: str | Path) -> dict[str, Any]:
        """The dict written by :meth:`save` (``format``, ``model``, extras).

        Warning: this unpickles the file, which can execute arbitrary code; read only files you
        trust.

        Raises
        ------
        ValueError
            If the file is not one written by ``cls.save``.
        """
        import joblib

        # files pickled before the classifiers left evaluation/ name their old modules
        for old in ("baseline", "reference"):
            new = sys.modules.get(f"py4dstem_gnn.baselines.{'forest' if old == 'baseline' else old}")
            if new is not None:
                sys.modules.setdefault(f"py4dstem_gnn.evaluation.{old}", new)
        obj = joblib.load(Path(path))
        if not isinstance(obj, dict) or obj.get("format") != cls._SAVE_FORMAT:
            raise ValueError(f"{path} is not a {cls.__name__} file")
        return obj
