"""Stages 4-5 of the data flow: the network where the match is not decisive, then the decision.

One implementation serves every caller: :func:`py4dstem_gnn.predict_pointlists` (pointlists),
:func:`py4dstem_gnn.classify_braggvectors` (through :func:`py4dstem_gnn.scan.network_scan`, over the
classified positions of a scan) and the benchmarks that compare the network, the match alone and
both (``benchmarks/phase_identification.py``):

* :func:`network_probabilities` runs the model batched (patterns sorted by spot count, batches bounded
  by a token budget, a CUDA out-of-memory error halves the batch; the padding and one forward pass
  are :mod:`py4dstem_gnn.batching`'s);
* :func:`run_network` runs it on the patterns that need it and keeps uniform probabilities elsewhere
  (:class:`NetworkOutput`);
* :func:`network_and_decide` is the stage: which patterns need the network
  (:func:`py4dstem_gnn.decide.network_needed`), the network there, the decision
  (:func:`py4dstem_gnn.decide.decide`) and the match fields users see
  (:func:`py4dstem_gnn.matching.match_fields`), as one :class:`StageOutput`.

Also here: :func:`consistent_labels` and :func:`crystal_system_confidence`, the labels derived from
the network's probabilities (the space group is the most probable one of the argmax crystal
system). :mod:`py4dstem_gnn.predict` re-exports these names.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .batching import RaggedSpots, _is_oom, _max_spots, _plan_batches, _run_batch, _token_budget
from .confidence.conformal import sg_set_size
from .labels import INVALID, N_CRYSTAL_SYSTEMS, N_SPACE_GROUPS, SG_TO_CS
from .progress import tqdm

__all__ = [
    "NetworkOutput",
    "StageOutput",
    "network_probabilities",
    "run_network",
    "network_and_decide",
    "network_mask",
    "consistent_labels",
    "crystal_system_confidence",
]

logger = logging.getLogger(__name__)

#: Which patterns the network runs on: where the match is not decisive, on all, or on none.
NETWORK_MODES: tuple[str, ...] = ("auto", "always", "never")


def consistent_labels(
    crystal_system_probs: np.ndarray, space_group_probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crystal system, space group within it, and margin confidence.

    Parameters
    ----------
    crystal_system_probs : numpy.ndarray, shape (n, 7)
    space_group_probs : numpy.ndarray, shape (n, 230)

    Returns
    -------
    crystal_system : numpy.ndarray of int64, shape (n,)
        Argmax of the crystal-system probabilities.
    space_group : numpy.ndarray of int64, shape (n,)
        1-based number of the most probable space group of that crystal system.
    confidence : numpy.ndarray of float32, shape (n,)
        Largest minus second-largest crystal-system probability.
    """
    cs_p = np.asarray(crystal_system_probs)
    sg_p = np.asarray(space_group_probs)
    n = cs_p.shape[0]
    if n == 0:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    cs, conf = crystal_system_confidence(cs_p)
    allowed = SG_TO_CS[None, :] == cs[:, None]  # (n, 230)
    sg = np.argmax(np.where(allowed, sg_p, -np.inf), axis=1).astype(np.int64) + 1
    return cs, sg, conf


def crystal_system_confidence(crystal_system_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crystal system (argmax) and margin confidence from crystal-system probabilities.

    Parameters
    ----------
    crystal_system_probs : numpy.ndarray, shape (n, 7)

    Returns
    -------
    crystal_system : numpy.ndarray of int64, shape (n,)
    confidence : numpy.ndarray of float32, shape (n,)
        Largest minus second-largest probability.
    """
    cs_p = np.asarray(crystal_system_probs)
    if cs_p.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    cs = np.argmax(cs_p, axis=1).astype(np.int64)
    top2 = np.partition(cs_p, N_CRYSTAL_SYSTEMS - 2, axis=1)[:, -2:]
    return cs, (top2[:, 1] - top2[:, 0]).astype(np.float32)


def network_probabilities(
    spot_lists: Sequence[np.ndarray] | RaggedSpots,
    net: torch.nn.Module,
    device: torch.device,
    batch_size: int | None = None,
    progress: bool = False,
    autocast: bool = False,
    timings: dict[str, float] | None = None,
    space_group_probs: bool = True,
    sg_set_q: float | None = None,
    extras: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities for lists of DIFFRACTED spots (direct beam already removed).

    Parameters
    ----------
    spot_lists : sequence of numpy.ndarray (each (m_i, 3)), or RaggedSpots
    net : torch.nn.Module
        A loaded model in eval mode on ``device``.
    device : torch.device
    batch_size : int, optional
        Fixed number of patterns per batch; ``None`` bounds each batch by a token
        budget for the device.
    progress : bool
        Show a tqdm bar over the patterns.
    autocast : bool
        Run the forward pass under bf16 autocast.
    timings : dict, optional
        If given, ``"model"`` (seconds in padding + forward) is accumulated into it.
    space_group_probs : bool
        Return the space-group probabilities; if False, return instead the
        consistent space-group label (1..230, int64) of every pattern, which keeps
        the memory of large scans small (no ``(n, 230)`` array).
    sg_set_q : float, optional
        Conformal quantile of the space-group head: the size of every pattern's space-group set is
        stored in ``extras["sg_set_size"]`` (int64, (n,)).
    extras : dict, optional
        Receives the extra outputs.

    Returns
    -------
    crystal_system_probs : numpy.ndarray, (n, 7) float32
    space_group_probs : numpy.ndarray, (n, 230) float32, or (n,) int64 labels
    """
    t0 = time.perf_counter()
    ragged = spot_lists if isinstance(spot_lists, RaggedSpots) else RaggedSpots.from_lists(spot_lists)
    n = len(ragged)
    cs_out = np.zeros((n, N_CRYSTAL_SYSTEMS), np.float32)
    sg_out = np.zeros((n, N_SPACE_GROUPS) if space_group_probs else (n,), np.float32 if space_group_probs else np.int64)
    sg_size = np.zeros(n, np.int64)
    if extras is not None and sg_set_q is not None:
        extras["sg_set_size"] = sg_size
    if n == 0:
        return cs_out, sg_out
    max_spots = _max_spots(net)
    ragged = ragged.cap(max_spots)
    lengths = ragged.lengths
    budget = _token_budget(device, net, max_spots)
    batches = _plan_batches(lengths, batch_size, budget)
    logger.debug("%d patterns in %d batches (token budget %d)", n, len(batches), budget)
    queue: list[np.ndarray] = list(reversed(batches))
    with torch.inference_mode(), tqdm(
        total=n, disable=not progress, desc="classifying", unit="pattern", leave=False
    ) as bar:
        while queue:
            idx = queue.pop()
            try:
                cs_p, sg_p = _run_batch(net, ragged, idx, device, autocast)
            except Exception as err:  # noqa: BLE001 - re-raised unless a CUDA OOM
                if device.type != "cuda" or not _is_oom(err) or idx.size <= 1:
                    raise
                torch.cuda.empty_cache()
                half = idx.size // 2
                logger.warning(
                    "CUDA out of memory on a batch of %d patterns; retrying as two batches of %d and %d",
                    idx.size,
                    half,
                    idx.size - half,
                )
                queue.append(idx[half:])
                queue.append(idx[:half])
                continue
            cs_out[idx] = cs_p
            sg_out[idx] = sg_p if space_group_probs else consistent_labels(cs_p, sg_p)[1]
            if sg_set_q is not None:
                sg_size[idx] = sg_set_size(sg_p, sg_set_q)
            bar.update(idx.size)
    if timings is not None:
        timings["model"] = timings.get("model", 0.0) + time.perf_counter() - t0
    return cs_out, sg_out


@dataclass
class NetworkOutput:
    """The network's outputs for ``n`` patterns, of which it ran on some.

    Attributes
    ----------
    ran : numpy.ndarray
        (n,) bool: the patterns the network ran on (its outputs are used there only).
    crystal_system_probs : numpy.ndarray
        (n, 7) float32 probabilities; uniform where the network did not run.
    space_group_probs : numpy.ndarray
        (n, 230) float32 probabilities; uniform where the network did not run.
    sg_set_size : numpy.ndarray
        (n,) int64 size of the conformal space-group set (with ``sg_set_q``); -1 where the network
        did not run or no quantile was given.
    """

    ran: np.ndarray
    crystal_system_probs: np.ndarray
    space_group_probs: np.ndarray
    sg_set_size: np.ndarray

    def __len__(self) -> int:
        return int(self.ran.shape[0])

    @property
    def space_group(self) -> np.ndarray:
        """(n,) int64 the network's space group within its crystal system; -1 where it did not run."""
        out = np.full(len(self), INVALID, np.int64)
        out[self.ran] = consistent_labels(self.crystal_system_probs[self.ran], self.space_group_probs[self.ran])[1]
        return out


def _take(spots: Sequence[np.ndarray] | RaggedSpots, idx: np.ndarray) -> Sequence[np.ndarray] | RaggedSpots:
    """The patterns ``idx`` of ``spots`` (``spots`` itself when that is all of them)."""
    if idx.size == len(spots):
        return spots
    if isinstance(spots, RaggedSpots):
        o = spots.offsets
        return RaggedSpots.from_lists([spots.spots[o[i]:o[i + 1]] for i in idx])
    return [spots[i] for i in idx]


def run_network(
    spots: Sequence[np.ndarray] | RaggedSpots,
    need: np.ndarray,
    net: torch.nn.Module | None,
    device: torch.device | None,
    *,
    batch_size: int | None = None,
    progress: bool = False,
    autocast: bool = False,
    sg_set_q: float | None = None,
    timings: dict[str, float] | None = None,
    probabilities: tuple[np.ndarray, np.ndarray] | None = None,
) -> NetworkOutput:
    """Stage 4, network: probabilities of the patterns that need them, uniform elsewhere.

    Parameters
    ----------
    spots : sequence of numpy.ndarray, or RaggedSpots
        Diffracted spots of ``n`` patterns (direct beam removed), ``qx, qy`` (1/Å), intensity.
    need : numpy.ndarray
        (n,) bool: the patterns to run the network on.
    net : torch.nn.Module or None
        A loaded model in eval mode (``None`` only with ``probabilities`` or nothing needed).
    device : torch.device or None
    batch_size, progress, autocast, sg_set_q, timings
        As for :func:`network_probabilities`.
    probabilities : tuple of numpy.ndarray, optional
        ``(n, 7)`` and ``(n, 230)`` network probabilities of all ``n`` patterns computed before (a
        comparison that runs the network everywhere): taken at ``need`` instead of running it again.

    Returns
    -------
    NetworkOutput
    """
    need = np.asarray(need, bool)
    n = need.size
    cs_p = np.full((n, N_CRYSTAL_SYSTEMS), 1.0 / N_CRYSTAL_SYSTEMS, np.float32)
    sg_p = np.full((n, N_SPACE_GROUPS), 1.0 / N_SPACE_GROUPS, np.float32)
    sizes = np.full(n, INVALID, np.int64)
    idx = np.flatnonzero(need)
    if probabilities is not None:
        cs_p[idx] = np.asarray(probabilities[0])[idx]
        sg_p[idx] = np.asarray(probabilities[1])[idx]
    elif idx.size:
        if net is None or device is None:
            raise ValueError("run_network needs a model and a device where the network must run")
        extras: dict[str, np.ndarray] = {}
        cs_r, sg_r = network_probabilities(_take(spots, idx), net, device, batch_size, progress, autocast, timings,
                                           space_group_probs=True, sg_set_q=sg_set_q, extras=extras)
        cs_p[idx], sg_p[idx] = cs_r, sg_r
        if "sg_set_size" in extras:
            sizes[idx] = extras["sg_set_size"]
    return NetworkOutput(need, cs_p, sg_p, sizes)


@dataclass
class StageOutput:
    """What :func:`network_and_decide` returns for ``n`` patterns.

    Attributes
    ----------
    network : NetworkOutput
        The network's probabilities where it ran (``network.ran``).
    decision : Decision or None
        The decided labels, confidence, probabilities and bank phase (:class:`py4dstem_gnn.decide.Decision`);
        ``None`` without a match (the network alone: its labels are the network's).
    fields : dict or None
        :func:`py4dstem_gnn.matching.match_fields` of the decision (``phase`` compact index into
        ``phases``, ``zone_axis``, ``in_plane_angle``, ``orientation``, ``match_score``, ``q_scale``,
        ``bank_index``); ``None`` without a match.
    """

    network: NetworkOutput
    decision: Any = None
    fields: dict[str, Any] | None = None

    @property
    def network_ran(self) -> np.ndarray:
        """(n,) bool: where the network ran (the match alone decided elsewhere)."""
        return self.network.ran


def network_mask(match: Any, params: Any, network: str = "auto") -> np.ndarray:
    """(n,) bool: the patterns of a match the network runs on.

    Parameters
    ----------
    match : MatchResult
    params : DecisionParams
        Its ``skip_network_score`` says where the match alone is decisive (``network="auto"``).
    network : {"auto", "always", "never"}

    Returns
    -------
    numpy.ndarray
    """
    if network not in NETWORK_MODES:
        raise ValueError(f"network must be 'auto', 'always' or 'never', got {network!r}")
    if network == "always":
        return np.ones(len(match), bool)
    if network == "never":
        return np.zeros(len(match), bool)
    from .decide import network_needed

    return network_needed(match, params)


def network_and_decide(
    spots: Sequence[np.ndarray] | RaggedSpots,
    match: Any,
    bank: Any,
    params: Any,
    net: torch.nn.Module | None,
    device: torch.device | None,
    *,
    network: str = "auto",
    batch_size: int | None = None,
    progress: bool = False,
    autocast: bool = False,
    sg_set_q: float | None = None,
    timings: dict[str, float] | None = None,
    probabilities: tuple[np.ndarray, np.ndarray] | None = None,
) -> StageOutput:
    """Network where needed -> decide -> match fields: the stage after the match, for every caller.

    Parameters
    ----------
    spots : sequence of numpy.ndarray, or RaggedSpots
        Diffracted spots of ``n`` patterns (direct beam removed), the ones ``match`` was made on.
    match : MatchResult or None
        :func:`py4dstem_gnn.matching.match_patterns` of ``spots``; ``None``: no match stage, the
        network runs on every pattern whatever ``network`` says and there is no decision
        (``decision``, ``fields`` are None).
    bank : TemplateBank or None
        The bank ``match`` was made against.
    params : DecisionParams or None
        :func:`py4dstem_gnn.decide.load_decision_params` (needed with a match).
    net : torch.nn.Module or None
        Loaded model in eval mode (``None`` with ``network="never"`` or ``probabilities``).
    device : torch.device or None
    network : {"auto", "always", "never"}
        Run the network where the match is not decisive (``params.skip_network_score``), on every
        pattern, or nowhere (the match alone).
    batch_size, progress, autocast, sg_set_q, timings
        As for :func:`network_probabilities` (``timings["model"]``: seconds in the network).
    probabilities : tuple of numpy.ndarray, optional
        Network probabilities of all patterns computed before; the network is not run again
        (see :func:`run_network`).

    Returns
    -------
    StageOutput

    Examples
    --------
    The network, the match alone and both, with the network run once (a comparison):

    >>> probs = network_probabilities(spots, net, dev)  # doctest: +SKIP
    >>> match = match_patterns(spots, bank)  # doctest: +SKIP
    >>> hybrid = network_and_decide(spots, match, bank, params, net, dev, probabilities=probs)  # doctest: +SKIP
    >>> alone = network_and_decide(spots, match, bank, params, None, None, network="never")  # doctest: +SKIP
    """
    if match is None:
        if network not in NETWORK_MODES:
            raise ValueError(f"network must be 'auto', 'always' or 'never', got {network!r}")
        need = np.ones(len(spots), bool)
    else:
        need = network_mask(match, params, network)
    out = run_network(spots, need, net, device, batch_size=batch_size, progress=progress, autocast=autocast,
                      sg_set_q=sg_set_q, timings=timings, probabilities=probabilities)
    if match is None:
        return StageOutput(out)
    from .decide import decide
    from .matching.fields import match_fields

    dec = decide(match, out.crystal_system_probs, out.space_group_probs, params, bank.crystal_system.astype(np.int64),
                 need, bank.space_group.astype(np.int64))
    return StageOutput(out, dec, match_fields(match, bank, dec.phase, dec.phase_rank))
