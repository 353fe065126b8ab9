"""Batched inference on diffraction pointlists: devices, batching, consistent labels.

This module turns pointlists (``(n, 3)`` arrays of ``qx, qy`` in 1/A with the direct
beam near ``q = 0``, and intensity) into crystal-system and space-group predictions
with a :class:`~py4dstem_gnn.model.PEAGGMoE` model.

Decisions documented here (and relied on by :mod:`py4dstem_gnn.classify`):

* **Consistent labels.** ``crystal_system`` is the argmax of the crystal-system
  head's probabilities; ``space_group`` is the most probable space group *within*
  that crystal system (using :data:`py4dstem_gnn.labels.SG_TO_CS`), so the two
  never disagree.
* **Confidence** is the estimated probability that the crystal-system label is
  right: a monotone map of the margin ``p(1st) - p(2nd)`` fitted on validation data
  and stored in the weights' card (:mod:`py4dstem_gnn.calibration`). A model whose
  card has no calibration (or a model built in code) returns the raw margin, with
  one logged warning. Conformal prediction sets (:mod:`py4dstem_gnn.conformal`)
  come from :meth:`Prediction.sets`.
* **Batching.** Patterns are sorted by their number of diffracted spots and cut
  into batches of similar length, so that little padding is computed. Without an
  explicit ``batch_size`` the batches are bounded by a token budget (patterns ×
  padded spots) chosen for the device, so the memory of one batch stays bounded
  whatever the scan size. On CUDA an out-of-memory error halves the batch and
  retries. The padding and batch planning live in :mod:`py4dstem_gnn.batching`.
* **Combining views** (:func:`aggregate_views`) averages the log-probabilities of
  the patterns of one group (a normalised geometric mean of the probabilities),
  which is the product rule for independent views of one material.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

# The batching machinery lives in .batching and the network stage (batched forward, labels from
# probabilities) in .network_stage; these names stay importable from here (tests, benchmarks and
# matching.cli import them from this module).
from .batching import (  # noqa: F401 - re-exports
    CPU_TOKEN_BUDGET,
    CUDA_TOKEN_BUDGET,
    MAX_AUTO_BATCH,
    RaggedSpots,
    _is_oom,
    _max_spots,
    _plan_batches,
    _run_batch,
    _token_budget,
)
from .labels import N_CRYSTAL_SYSTEMS, N_SPACE_GROUPS
from .network_stage import (  # noqa: F401 - re-exports
    StageOutput,
    consistent_labels,
    crystal_system_confidence,
    network_and_decide,
    network_probabilities,
)
from .network_stage import network_probabilities as _predict_spot_lists  # the name it had here
from .validation import resolve_device  # noqa: F401 - re-exported (one implementation)

__all__ = [
    "Prediction",
    "predict_pointlists",
    "aggregate_views",
    "resolve_device",
    "RaggedSpots",
    "consistent_labels",
    "crystal_system_confidence",
]

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Predictions for ``n`` diffraction patterns (or ``n`` groups of patterns).

    Attributes
    ----------
    crystal_system : numpy.ndarray of int64, shape (n,)
        Crystal-system code 0..6 (triclinic .. cubic), the argmax of
        ``crystal_system_probs``.
    space_group : numpy.ndarray of int64, shape (n,)
        International Tables number 1..230: the most probable space group that
        belongs to ``crystal_system``.
    confidence : numpy.ndarray of float32, shape (n,)
        Estimated probability that ``crystal_system`` is right (calibrated on
        validation data), in [0, 1]; the raw margin between the two largest
        crystal-system probabilities when the model has no calibration
        (``meta["confidence_calibrated"]`` says which).
    crystal_system_probs : numpy.ndarray of float32, shape (n, 7)
        Crystal-system probabilities (softmax of the model's crystal-system logits, including the
        evaluation-mode logit adjustment stored with the weights).
    space_group_probs : numpy.ndarray of float32, shape (n, 230)
        Space-group probabilities; column ``j`` is space group ``j + 1``.
    n_spots : numpy.ndarray of int64, shape (n,)
        Number of diffracted spots (direct beam excluded) seen by the model (for
        :func:`aggregate_views`: the total over the group).
    phase : numpy.ndarray of int64, shape (n,), or None
        With the match stage on (``phases=...``): index into ``phases`` of the identified phase,
        -1 where none was identified (then the labels are the network's, or a soft combination).
    phases : list of dict, or None
        The phase table: one entry per identified phase (``formula``, ``space_group``,
        ``crystal_system``, ``source``).
    zone_axis : numpy.ndarray of int64, shape (n, 3), or None
        Zone axis ``[uvw]`` of the identified phase's conventional cell, signed along the beam
        (0 0 0 where no phase).
    in_plane_angle : numpy.ndarray of float32, shape (n,), or None
        In-plane rotation (degrees) of the identified orientation (NaN where no phase).
    orientation : numpy.ndarray of float64, shape (n, 3, 3), or None
        py4DSTEM orientation matrix of the identified phase (NaN where none).
    match_score : numpy.ndarray of float32, shape (n,), or None
        Best match score of any candidate (cosine of indexed intensities less misfit penalties;
        1 is a perfect match; NaN where no candidate).
    q_scale : numpy.ndarray of float32, shape (n,), or None
        Fitted scale, measured / template spot distances, of the identified phase: its median
        over a scan checks the Q calibration (NaN where no phase).
    """

    crystal_system: np.ndarray
    space_group: np.ndarray
    confidence: np.ndarray
    crystal_system_probs: np.ndarray
    space_group_probs: np.ndarray
    n_spots: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    phase: np.ndarray | None = None
    phases: list | None = None
    zone_axis: np.ndarray | None = None
    in_plane_angle: np.ndarray | None = None
    orientation: np.ndarray | None = field(default=None, repr=False)
    match_score: np.ndarray | None = None
    q_scale: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.crystal_system.shape[0])

    def sets(self, coverage: float | None = None) -> Any:
        """Conformal prediction sets at ``coverage`` (default: the card's level).

        See :func:`py4dstem_gnn.conformal.prediction_sets`.
        """
        from .confidence.conformal import prediction_sets

        return prediction_sets(self, coverage)

    @classmethod
    def from_probs(
        cls,
        crystal_system_probs: np.ndarray,
        space_group_probs: np.ndarray,
        n_spots: np.ndarray,
    ) -> "Prediction":
        """Build a prediction from probabilities, deriving labels and confidence.

        Parameters
        ----------
        crystal_system_probs : numpy.ndarray, shape (n, 7)
        space_group_probs : numpy.ndarray, shape (n, 230)
        n_spots : numpy.ndarray, shape (n,)

        Returns
        -------
        Prediction
        """
        cs_p = np.asarray(crystal_system_probs, dtype=np.float32).reshape(-1, N_CRYSTAL_SYSTEMS)
        sg_p = np.asarray(space_group_probs, dtype=np.float32).reshape(-1, N_SPACE_GROUPS)
        cs, sg, conf = consistent_labels(cs_p, sg_p)
        return cls(
            crystal_system=cs,
            space_group=sg,
            confidence=conf,
            crystal_system_probs=cs_p,
            space_group_probs=sg_p,
            n_spots=np.asarray(n_spots, dtype=np.int64).reshape(-1),
        )


def _load(model: Any, device: torch.device) -> torch.nn.Module:
    """Load ``model`` (name, path or module) onto ``device`` in eval mode."""
    if isinstance(model, torch.nn.Module):
        # a loaded model: used as is (moved to the device, switched to eval mode)
        net = model.to(device)
    else:
        from .weights import load_model  # local import: weights imports the model package

        net = load_model(model, device=str(device))
    net.eval()
    return net


def predict_pointlists(
    pointlists: Sequence[np.ndarray],
    model: Any = "default",
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    progress: bool = False,
    *,
    phases: Any = "pool",
    elements: Sequence[str] | None = None,
    direct_beam_tolerance: float = 0.05,
    autocast: bool = False,
    match_config: Any = None,
    network: str = "auto",
) -> Prediction:
    """Classify diffraction pointlists: phase, zone axis, crystal system and space group.

    Known structures are matched first (:mod:`py4dstem_gnn.matching`); the network answers
    where no bank phase matches well; :mod:`py4dstem_gnn.decide` combines the two.

    Parameters
    ----------
    pointlists : sequence of array_like, each (n_i, 3)
        ``qx, qy`` in 1/A with the origin at the direct beam, and intensity
        (arbitrary units), as a calibrated py4DSTEM BraggVectors holds them. The
        direct beam (the spot nearest ``q = 0`` if within
        ``direct_beam_tolerance``) is removed before classification.
    model : str, path or PEAGGMoE
        ``"default"`` for the shipped weights, a path to saved weights, or a
        loaded model.
    device : str or torch.device
        ``"auto"`` uses CUDA when available, else the CPU.
    batch_size : int, optional
        Patterns per batch. ``None`` chooses batches automatically, bounded in
        memory (patterns × padded spots per batch stays under a device budget).
    progress : bool
        Show a tqdm progress bar.
    phases : "pool", None, list or TemplateBank
        Phases to match against: ``"pool"`` (default) the shipped bank of the whole structure pool;
        a list of CIF paths, ASE ``Atoms`` or py4DSTEM ``Crystal`` objects (templates made on the
        fly); a :class:`~py4dstem_gnn.matching.TemplateBank`; ``None`` switches matching off (the
        network alone, as before the match stage existed).
    elements : sequence of str, optional
        Keep only phases made of these elements (all of a phase's elements among them), e.g.
        ``["Au"]`` or ``["Ti", "O"]`` from an EDS spectrum.
    direct_beam_tolerance : float
        Largest distance (1/A) from ``q = 0`` at which a spot counts as the
        direct beam.
    autocast : bool
        Run the model under bfloat16 autocast. Off by default: on a CPU with native
        bfloat16 it ran 1.35x the fp32 rate for -0.05 points of crystal-system accuracy
        (``benchmarks/results/speed_choices.md``), but oneDNN's per-shape caches raise the
        peak memory of a call by up to ~1 GB (tiny model, 1 thread: +0.73 GB at 10,000 patterns,
        +0.92 GB at 50,000, +1.0 GB at 150,000 against +0.06 GB in fp32; it saturates, it does not
        grow with the scan). The shapes come from the batches and from the sparse experts' token
        counts; fixing the batch shapes alone did not bound it.
    match_config : MatchConfig, optional
        Tolerances of the matcher (:class:`py4dstem_gnn.matching.MatchConfig`).
    network : {"auto", "always", "never"}
        Run the network where the match is not decisive (default), on every pattern, or never.

    Returns
    -------
    Prediction
        Labels, confidence (estimated probability that the crystal system is
        right, from the calibration in the weights' card; the raw margin if it has
        none), probabilities and the number of diffracted spots. Conformal sets:
        ``pred.sets(coverage)``.

    Raises
    ------
    TypeError
        ``pointlists`` is not a sequence of numeric arrays, or a parameter has
        the wrong type.
    ValueError
        A pointlist is not ``(n, 3)``, spots lie beyond
        :data:`py4dstem_gnn.validation.MAX_Q` 1/A (probably pixel units), or a
        parameter is out of range.
    FileNotFoundError
        ``model`` names weights that are not found (the message lists where it
        looked).

    Notes
    -----
    Spots with NaN or inf values are dropped (one logged warning per call). Empty
    pointlists are classified from an empty spot set (check ``n_spots``).
    See ``docs/guarantees.md``.

    Examples
    --------
    >>> pred = predict_pointlists([pattern_a, pattern_b])  # doctest: +SKIP
    >>> pred.crystal_system, pred.space_group  # doctest: +SKIP
    """
    from .features import split_direct_beam
    from . import validation

    # checks first (docs/guarantees.md): types, shapes, parameters; non-finite spots dropped
    batch_size = validation.check_batch_size(batch_size)
    direct_beam_tolerance = validation.check_tolerance(direct_beam_tolerance)
    validation.check_model(model)
    arrays = validation.clean_pointlists(pointlists)
    dev = validation.check_device(device)
    net = _load(model, dev)
    spot_lists: list[np.ndarray] = []
    for arr in arrays:
        spots, _removed = split_direct_beam(arr, tolerance=direct_beam_tolerance)
        spot_lists.append(np.asarray(spots, dtype=np.float32).reshape(-1, 3))
    n_spots = np.fromiter((len(s) for s in spot_lists), np.int64, len(spot_lists))
    from .confidence.calibration import apply_model_calibration
    from .matching import resolve_bank

    if network not in ("auto", "always", "never"):
        raise ValueError(f"network must be 'auto', 'always' or 'never', got {network!r}")
    bank = resolve_bank(phases, elements)
    if bank is None:  # the network alone
        out = network_and_decide(spot_lists, None, None, None, net, dev, batch_size=batch_size, progress=progress,
                                 autocast=autocast).network
        return apply_model_calibration(Prediction.from_probs(out.crystal_system_probs, out.space_group_probs, n_spots), net)
    from .decide import load_decision_params
    from .matching import match_patterns

    params = load_decision_params()
    match = match_patterns(spot_lists, bank, match_config, progress=progress)
    stage = network_and_decide(spot_lists, match, bank, params, net, dev, network=network, batch_size=batch_size,
                               progress=progress, autocast=autocast)
    return _prediction(stage, n_spots, bank, params)


def _prediction(stage: StageOutput, n_spots: np.ndarray, bank: Any, params: Any) -> Prediction:
    """The :class:`Prediction` of a match + network decision (:func:`~py4dstem_gnn.network_stage.network_and_decide`)."""
    dec = stage.decision
    fields = {k: v for k, v in stage.fields.items() if k != "bank_index"}
    pred = Prediction(crystal_system=dec.crystal_system, space_group=dec.space_group, confidence=dec.confidence,
                      crystal_system_probs=dec.crystal_system_probs, space_group_probs=dec.space_group_probs,
                      n_spots=n_spots, **fields)
    pred.meta.update({"confidence_calibrated": bool(params.calibration_x), "network_ran": stage.network_ran,
                      "decision": "match + network", "bank_phases": bank.n_phases})
    return pred


def aggregate_views(pred: Prediction, groups: Sequence[Any] | np.ndarray, rule: str = "product") -> Prediction:
    """Combine several patterns of one material into one prediction per group.

    Rules (``rule``), measured on clean and detected multi-view sets in
    ``benchmarks/results/detection.md`` and, for the default pipeline, in the "Detected spots"
    section of ``benchmarks/results/phase_identification.md``: on spots found by
    ``find_Bragg_disks`` prefer ``"mean"`` (on the validation zone axes it gained more than
    ``"product"`` on every detector preset and over-predicted the dominant crystal system less):

    * ``"product"`` (default): average the log-probabilities of the patterns and
      renormalise (a normalised geometric mean, i.e. the product rule for independent
      views, tempered by ``1/k``; any temperature gives the same labels).
    * ``"mean"``: the arithmetic mean of the probabilities (linear pool): one
      confident view cannot veto the others, and a bias shared by the views is not
      sharpened.
    * ``"vote"``: the majority of the per-pattern crystal-system labels; the
      crystal-system "probabilities" are the vote shares (ties broken by the mean
      probability), ``meta["vote_share"]`` the winner's share (a tie or a split vote
      is a low share: a caller may abstain below 0.5); space groups from the mean of
      the space-group probabilities, within the voted crystal system.

    Crystal-system and space-group heads are combined separately; labels and
    confidence are then derived as for single patterns, so they stay consistent. The
    confidence uses the calibration for the group's number of views (fitted on the
    ``"product"`` rule) and ``meta["n_views"]`` selects the per-``k`` conformal
    calibration of :meth:`Prediction.sets` (when the model's card has them).

    Parameters
    ----------
    pred : Prediction
        Per-pattern predictions, ``n`` rows.
    groups : array_like, shape (n,)
        Group key of every pattern (any sortable values, e.g. material ids).
    rule : {"product", "mean", "vote"}
        How the views are combined (see above).

    Returns
    -------
    Prediction
        One row per distinct group, in sorted group order (``numpy.unique``
        order); ``n_spots`` is the total over the group. The group keys are in
        ``result.meta["groups"]``.
    """
    from .validation import check_groups

    if rule not in ("product", "mean", "vote"):
        raise ValueError(f"unknown aggregation rule {rule!r}; choose 'product', 'mean' or 'vote'")
    keys = check_groups(pred, groups)
    uniq, inverse = np.unique(keys, return_inverse=True)
    counts = np.bincount(inverse, minlength=uniq.size).astype(np.float64)
    tiny = np.finfo(np.float32).tiny

    def combine(p: np.ndarray, how: str) -> np.ndarray:
        x = p.astype(np.float64)
        if how == "product":
            x = np.log(np.maximum(x, tiny))
        acc = np.zeros((uniq.size, p.shape[1]), np.float64)
        np.add.at(acc, inverse, x)
        acc /= np.maximum(counts, 1.0)[:, None]
        if how == "product":
            acc -= acc.max(axis=1, keepdims=True)
            acc = np.exp(acc)
        return acc / np.maximum(acc.sum(axis=1, keepdims=True), tiny)

    n_spots = np.bincount(inverse, weights=pred.n_spots, minlength=uniq.size).astype(np.int64)
    vote_share = None
    if rule == "vote":
        n_cs = pred.crystal_system_probs.shape[1]
        votes = np.zeros((uniq.size, n_cs), np.float64)
        np.add.at(votes, (inverse, np.asarray(pred.crystal_system, np.int64)), 1.0)
        votes /= np.maximum(counts, 1.0)[:, None]
        cs_probs = votes + 1e-3 * combine(pred.crystal_system_probs, "mean")  # ties: the mean probability
        cs_probs /= np.maximum(cs_probs.sum(axis=1, keepdims=True), tiny)
        vote_share = votes.max(axis=1) if uniq.size else np.zeros(0)
        sg_probs = combine(pred.space_group_probs, "mean")
    else:
        cs_probs = combine(pred.crystal_system_probs, rule)
        sg_probs = combine(pred.space_group_probs, rule)
    agg = Prediction.from_probs(cs_probs, sg_probs, n_spots)
    if vote_share is not None:
        agg.meta["vote_share"] = vote_share.astype(np.float32)
    views = np.asarray(pred.meta.get("n_views", np.ones(len(pred))), dtype=np.float64)
    agg.meta.update({k: v for k, v in pred.meta.items() if k in ("confidence_calibration", "conformal", "confidence_calibrated")})
    agg.meta["groups"] = uniq
    agg.meta["n_views"] = np.rint(np.bincount(inverse, weights=views, minlength=uniq.size)).astype(np.int64)
    cal = agg.meta.get("confidence_calibration")
    if cal is not None:
        agg.confidence = cal(agg.crystal_system_probs, agg.meta["n_views"])
    return agg
