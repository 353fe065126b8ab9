"""Random-forest reference classifier (Gleason et al., Phys. Rev. Materials 8, 093802, 2024).

A re-implementation from the published description, used as the baseline against which the
graph transformer is compared. It has two parts:

1. **Featurisation** (:func:`radial_angular_coefficients`, :func:`featurize`): each spot pattern
   is projected onto a complex radial–angular basis. The direct beam is removed
   (:func:`py4dstem_gnn.features.split_direct_beam`), the intensities of the diffracted spots are
   normalised to sum to ``0.3``, and for every triangular radial bin ``r`` (centres
   ``k_r = r * dk``, ``dk = 0.05`` 1/Å, ``r = 0 .. 40`` so that the last centre is ``2.0`` 1/Å)
   and every angular order ``m = 0 .. 12``::

       c[r, m] = sum_j  I_j * w_r(|q_j|) * exp(i m theta_j),
       w_r(q) = max(0, 1 - |q - k_r| / dk),      theta_j = atan2(qy_j, qx_j).

   The triangular weights of neighbouring bins sum to one, so each spot inside ``2 1/Å`` shares
   its intensity linearly between the two bins around its radius; a spot between ``2.0`` and
   ``2.05`` 1/Å contributes only to the last bin (with the weight of its descending flank) and
   spots beyond ``2.05`` 1/Å contribute nothing.

   **Feature count.** ``41`` radial bins × ``13`` angular orders = ``533`` complex coefficients;
   their magnitudes ``|c|`` and phases ``arg c`` (in ``(-π, π]``) give ``2 × 533 = 1,066``
   real features, laid out as ``[|c|.ravel(), arg(c).ravel()]`` with ``c`` of shape
   ``(41, 13)`` (radial index major, order minor). The order-0 phases are identically 0 and the
   ``k = 0`` bin is empty once the beam is removed; they are kept so that the count matches the
   published 1,066 (a forest never splits on a constant feature, so they cost nothing).
   Rotating a pattern by ``α`` multiplies ``c[r, m]`` by ``exp(i m α)``: magnitudes are
   rotation invariant, phases are not. Phases of coefficients whose magnitude is below
   ``1e-12`` are set to 0.

   The computation is vectorised over all spots of all patterns at once: spots are flattened,
   ``exp(i m θ)`` is built as powers of ``(qx + i qy) / |q|`` and the binning is one sparse
   matrix product (rows: pattern × radial bin; columns: spots). Patterns are processed in chunks
   to bound memory; there is no Python loop over spots.

2. **Hierarchical forests** (:class:`RandomForestBaseline`): a
   :class:`sklearn.ensemble.RandomForestClassifier` (80 trees, maximum depth 40) predicts the
   crystal system; one forest per crystal system (128 trees, maximum depth 30), trained only on the
   patterns of that system, predicts the space group within it. Both are combined into a
   consistent joint distribution ``P(SG) = P(CS) · P(SG | CS)``: its crystal-system marginals are
   exactly the crystal-system probabilities, and the reported space group is the most probable one
   *within the predicted crystal system* (the hierarchical decision of the paper, and the rule
   :class:`py4dstem_gnn.predict.Prediction` applies to the model), so that the two labels of one
   pattern never contradict each other.

Security note: :meth:`RandomForestBaseline.save` / :meth:`RandomForestBaseline.load` use
:mod:`joblib` (pickle). Loading a pickle executes code stored in the file: only load files you
created yourself or otherwise trust.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from ..features import DEFAULT_BEAM_TOLERANCE, as_pointlist, split_direct_beam
from .hierarchical import HierarchicalClassifier

__all__ = [
    "DK",
    "K_MAX",
    "MAX_ORDER",
    "INTENSITY_SUM",
    "N_RADIAL_BINS",
    "N_ANGULAR_ORDERS",
    "N_FEATURES",
    "FeaturizerConfig",
    "radial_angular_coefficients",
    "featurize",
    "RandomForestBaseline",
]

logger = logging.getLogger(__name__)

#: Radial bin spacing (1/Å) of the triangular bins.
DK: float = 0.05
#: Centre of the last radial bin (1/Å).
K_MAX: float = 2.0
#: Highest angular order.
MAX_ORDER: int = 12
#: Sum of the diffracted-spot intensities after normalisation.
INTENSITY_SUM: float = 0.3
#: Number of radial bins: centres 0, dk, ..., k_max.
N_RADIAL_BINS: int = int(round(K_MAX / DK)) + 1  # 41
#: Number of angular orders 0..MAX_ORDER.
N_ANGULAR_ORDERS: int = MAX_ORDER + 1  # 13
#: Number of real features: magnitudes and phases of every coefficient.
N_FEATURES: int = 2 * N_RADIAL_BINS * N_ANGULAR_ORDERS  # 1066

_PHASE_EPS = 1e-12
_SAVE_FORMAT = "py4dstem_gnn.baseline.RandomForestBaseline/1"  # kept as written before the subpackages


@dataclass(frozen=True)
class FeaturizerConfig:
    """Parameters of the radial–angular featurisation.

    Attributes
    ----------
    dk : float
        Radial bin spacing and half-width of the triangular bins (1/Å).
    k_max : float
        Centre of the last radial bin (1/Å); must be a multiple of ``dk``.
    max_order : int
        Highest angular order ``m``.
    intensity_sum : float
        Sum the diffracted-spot intensities are normalised to.
    beam_tolerance : float
        Distance (1/Å) within which the spot nearest ``q = 0`` is taken as the direct beam.
    """

    dk: float = DK
    k_max: float = K_MAX
    max_order: int = MAX_ORDER
    intensity_sum: float = INTENSITY_SUM
    beam_tolerance: float = DEFAULT_BEAM_TOLERANCE

    @property
    def n_radial(self) -> int:
        """Number of radial bins."""
        return int(round(self.k_max / self.dk)) + 1

    @property
    def n_orders(self) -> int:
        """Number of angular orders."""
        return self.max_order + 1

    @property
    def n_features(self) -> int:
        """Number of real features (magnitudes and phases)."""
        return 2 * self.n_radial * self.n_orders


def _flatten_diffracted(
    pointlists: Sequence[np.ndarray], cfg: FeaturizerConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Remove the direct beam, normalise intensities and flatten all spots.

    Returns the flat ``(S, 3)`` float64 spots, the ``(S,)`` pattern index of each spot and the
    ``(n,)`` number of diffracted spots per pattern.
    """
    diffracted = [split_direct_beam(as_pointlist(p), cfg.beam_tolerance)[0] for p in pointlists]
    counts = np.fromiter((len(d) for d in diffracted), dtype=np.int64, count=len(diffracted))
    if counts.sum() == 0:
        return np.zeros((0, 3)), np.zeros(0, dtype=np.int64), counts
    spots = np.concatenate(diffracted, axis=0).astype(np.float64)
    owner = np.repeat(np.arange(len(diffracted), dtype=np.int64), counts)
    inten = np.clip(spots[:, 2], 0.0, None)
    totals = np.bincount(owner, weights=inten, minlength=len(diffracted))
    scale = np.divide(
        cfg.intensity_sum, totals, out=np.zeros_like(totals), where=totals > 0
    )
    spots[:, 2] = inten * scale[owner]
    return spots, owner, counts


def _coefficients_chunk(
    pointlists: Sequence[np.ndarray], cfg: FeaturizerConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Complex coefficients ``(n, n_radial, n_orders)`` and spot counts for one chunk."""
    n = len(pointlists)
    n_rad, n_ord = cfg.n_radial, cfg.n_orders
    spots, owner, counts = _flatten_diffracted(pointlists, cfg)
    if len(spots) == 0:
        return np.zeros((n, n_rad, n_ord), dtype=np.complex128), counts
    qx, qy, inten = spots[:, 0], spots[:, 1], spots[:, 2]
    q = np.hypot(qx, qy)
    # unit phasor exp(i theta); a spot exactly at q = 0 has no angle: only its m = 0 term counts
    safe_q = np.where(q > 0, q, 1.0)
    z = np.where(q > 0, (qx + 1j * qy) / safe_q, 0.0)
    powers = np.empty((len(z), n_ord), dtype=np.complex128)
    powers[:, 0] = 1.0
    for m in range(1, n_ord):  # loop over the 13 orders, vectorised over all spots
        powers[:, m] = powers[:, m - 1] * z
    # triangular binning: each spot goes to bins lo and lo + 1 with weights (1 - f, f)
    t = q / cfg.dk
    lo = np.floor(t).astype(np.int64)
    frac = t - lo
    rows = np.concatenate([owner * n_rad + lo, owner * n_rad + lo + 1])
    bins = np.concatenate([lo, lo + 1])
    vals = np.concatenate([inten * (1.0 - frac), inten * frac])
    cols = np.concatenate([np.arange(len(q)), np.arange(len(q))])
    keep = (bins < n_rad) & (vals != 0.0)
    binning = sp.csr_matrix(
        (vals[keep], (rows[keep], cols[keep])), shape=(n * n_rad, len(q))
    )
    coeffs = binning @ powers
    return np.asarray(coeffs).reshape(n, n_rad, n_ord), counts


def radial_angular_coefficients(
    pointlists: Sequence[np.ndarray],
    config: FeaturizerConfig | None = None,
    *,
    chunk_size: int = 256,
    progress: bool = False,
    return_counts: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Complex radial–angular coefficients of spot patterns.

    Parameters
    ----------
    pointlists : sequence of numpy.ndarray
        Each ``(n_i, 3)``: ``qx, qy`` (1/Å, origin at the direct beam) and intensity, the direct
        beam included (it is removed here).
    config : FeaturizerConfig, optional
        Binning parameters; the published ones by default.
    chunk_size : int
        Patterns processed per vectorised step (bounds memory).
    progress : bool
        Show a tqdm bar over the chunks.
    return_counts : bool
        Also return the number of diffracted spots (direct beam excluded) of each pattern.

    Returns
    -------
    coefficients : numpy.ndarray
        Complex128 array ``(n, n_radial, n_orders)``; ``[i, r, m]`` is
        ``sum_j I_j w_r(|q_j|) exp(i m θ_j)`` over the diffracted spots of pattern ``i``.
    counts : numpy.ndarray
        ``(n,)`` int64, only if ``return_counts``.
    """
    cfg = config or FeaturizerConfig()
    n = len(pointlists)
    out = np.zeros((n, cfg.n_radial, cfg.n_orders), dtype=np.complex128)
    counts = np.zeros(n, dtype=np.int64)
    starts = range(0, n, max(1, int(chunk_size)))
    if progress:
        from ..progress import tqdm

        starts = tqdm(starts, desc="RF features", unit="chunk")
    for s in starts:
        out[s : s + chunk_size], counts[s : s + chunk_size] = _coefficients_chunk(
            pointlists[s : s + chunk_size], cfg
        )
    return (out, counts) if return_counts else out


def featurize(
    pointlists: Sequence[np.ndarray],
    config: FeaturizerConfig | None = None,
    *,
    chunk_size: int = 256,
    progress: bool = False,
    return_counts: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Real feature vectors (magnitudes then phases) of spot patterns.

    Parameters
    ----------
    pointlists : sequence of numpy.ndarray
        Each ``(n_i, 3)`` ``qx, qy, intensity`` with the direct beam included.
    config : FeaturizerConfig, optional
        Binning parameters; the published ones (1,066 features) by default.
    chunk_size : int
        Patterns processed per vectorised step.
    progress : bool
        Show a tqdm bar over the chunks.
    return_counts : bool
        Also return the number of diffracted spots of each pattern.

    Returns
    -------
    features : numpy.ndarray
        Float32 ``(n, 2 * n_radial * n_orders)``: ``|c|`` flattened ``(radial, order)`` followed
        by ``arg c`` in the same layout (phase 0 where ``|c| < 1e-12``).
    counts : numpy.ndarray
        ``(n,)`` int64, only if ``return_counts``.
    """
    c, counts = radial_angular_coefficients(
        pointlists, config, chunk_size=chunk_size, progress=progress, return_counts=True
    )
    mag = np.abs(c)
    phase = np.where(mag > _PHASE_EPS, np.angle(c), 0.0)
    n = len(c)
    feats = np.concatenate([mag.reshape(n, -1), phase.reshape(n, -1)], axis=1).astype(np.float32)
    return (feats, counts) if return_counts else feats




@dataclass
class RandomForestBaseline(HierarchicalClassifier):
    """Hierarchical random-forest classifier of crystal system and space group.

    Parameters
    ----------
    n_estimators_cs, max_depth_cs : int
        Size of the crystal-system forest (published: 80 trees, depth 40).
    n_estimators_sg, max_depth_sg : int
        Size of each per-crystal-system space-group forest (published: 128 trees, depth 30).
    n_jobs : int
        Parallel jobs of scikit-learn during fit and predict.
    random_state : int
        Seed of the forests.
    featurizer : FeaturizerConfig
        Featurisation parameters.

    Notes
    -----
    ``predict`` returns the same kind of object as
    :func:`py4dstem_gnn.predict.predict_pointlists` (built with
    :meth:`~py4dstem_gnn.predict.Prediction.from_probs`, so labels and confidence follow the
    same rules as the model's), and :func:`py4dstem_gnn.predict.aggregate_views` combines its
    views exactly as it does the model's. A crystal system absent from the training
    data gets a uniform ``P(SG | CS)`` over its space groups (the crystal-system forest never
    assigns it probability, so this never matters in practice); a crystal system with a single
    training space group puts all of its mass on it.

    Loading (:meth:`load`) unpickles the file, which can execute arbitrary code: load only
    trusted files.

    Fitting, prediction and saving are those of
    :class:`~py4dstem_gnn.baselines.hierarchical.HierarchicalClassifier`, shared with the
    other reference classifier.
    """

    n_estimators_cs: int = 80
    max_depth_cs: int | None = 40
    n_estimators_sg: int = 128
    max_depth_sg: int | None = 30
    n_jobs: int = 1
    random_state: int = 0
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    cs_forest_: Any = field(default=None, repr=False)
    sg_forests_: dict = field(default_factory=dict, repr=False)
    fit_info_: dict = field(default_factory=dict, repr=False)

    _ESTIMATOR = "RandomForestClassifier"
    _WHAT = "the random-forest baseline"
    _LOG_NAME = "RF baseline"
    _SAVE_FORMAT = _SAVE_FORMAT
    _CS_HEAD = "cs_forest_"
    _SG_HEADS = "sg_forests_"
    _SG_PROGRESS = "SG forests"

    # ------------------------------------------------------------------ features
    def featurize(self, pointlists: Sequence[np.ndarray], progress: bool = False,
                  return_counts: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Feature matrix ``(n, n_features)`` of pointlists (and spot counts; see :func:`featurize`)."""
        return featurize(pointlists, self.featurizer, progress=progress, return_counts=return_counts)

    # ------------------------------------------------------------------ heads
    def _new_head(self, estimator: type, head: str, seed: int) -> Any:
        if head == "cs":
            return estimator(n_estimators=self.n_estimators_cs, max_depth=self.max_depth_cs,
                             n_jobs=self.n_jobs, random_state=seed)
        return estimator(n_estimators=self.n_estimators_sg, max_depth=self.max_depth_sg,
                         n_jobs=self.n_jobs, random_state=seed)

    def _check_width(self, X: np.ndarray) -> None:
        if X.shape[1] != self.featurizer.n_features:
            raise ValueError(f"expected {self.featurizer.n_features} features, got {X.shape[1]}")

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, path: str | Path, n_jobs: int | None = None) -> "RandomForestBaseline":
        """Load a baseline written by :meth:`save`.

        Warning: this unpickles the file, which can execute arbitrary code; load only files you
        trust.
        """
        import sys

        # files written before the package was grouped into subpackages name the class
        # py4dstem_gnn.baseline.RandomForestBaseline: let the unpickler find it here
        sys.modules.setdefault("py4dstem_gnn.baseline", sys.modules[__name__])
        model = cls._read(path)["model"]
        if n_jobs is not None:
            model.n_jobs = n_jobs
            for forest in [model.cs_forest_, *model.sg_forests_.values()]:
                forest.n_jobs = n_jobs
        return model
