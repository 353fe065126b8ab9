"""Hyper-parameters of PE-AG-GMoE in one dataclass.

Defaults reproduce Table 6 of Nathani et al. (npj Comput. Mater. 2026): input feature
dimension 256, hidden dimension 64, 8 Graphormer layers with 8 heads, dropout 0.1, mixture of
4 experts with top-2 routing in the attention-graph and Graphormer blocks, load-balancing weight
0.01. Choices the paper leaves open are documented per field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from ..features import FEATURE_SETS

__all__ = ["ModelConfig", "DEFAULT_NORMALISATION"]

#: Per-channel (mean, std) of the features on augmented zone-axis kinematic training patterns
#: (``py4dstem_gnn.training.train.fit_feature_normalisation``); used when a config gives none.
DEFAULT_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "polar": ((0.896, 0.0, 0.0, 0.163, -1.07), (0.398, 0.707, 0.707, 0.205, 0.529)),
    "polar+neighbours": (
        (0.859, 0.0, 0.0, 0.183, -0.994, 0.220, 1.462, 0.771, 0.631, 0.850, 0.859),
        (0.375, 0.707, 0.707, 0.212, 0.507, 0.097, 0.733, 0.322, 0.397, 0.257, 0.254),
    ),
}


@dataclass
class ModelConfig:
    """Architecture of :class:`~py4dstem_gnn.model.PEAGGMoE`.

    Attributes
    ----------
    feature_set : str
        Per-spot input (:func:`py4dstem_gnn.features.spot_features`): ``"polar"`` is the paper's
        ``[r, θ, I]``; ``"polar+neighbours"`` (default) adds rotation-invariant descriptors of each
        spot's neighbourhood, which made the network learn from far fewer patterns.
    in_features : int
        Per-spot input channels (derived from ``feature_set``).
    feature_dim : int
        Width of the pointlist encoder ("input feature dim", Table 6).
    encoder_layers : int
        Number of 1×1-convolution layers in the pointlist encoder.
    hidden_dim : int
        Model width of the attention aggregator and the Graphormer.
    n_layers, n_heads : int
        Graphormer depth and attention heads.
    ffn_dim : int
        Hidden width of each SwiGLU expert (not given in the paper; 2 × hidden).
    dropout : float
        Dropout on residual branches (Table 6).
    attention_dropout : float
        Dropout on attention weights (0 by default: on a CPU the random masks of
        ``B × H × N × N`` weights cost a fifth of a training step for no measured gain).
    n_experts, top_k : int
        Routed experts per MoE block and experts chosen per token.
    shared_expert : bool
        Whether every MoE block has an always-on shared expert.
    aux_loss_weight : float
        Weight of the load-balancing loss in the training objective (Eq. 16).
    graph_top_k : int
        Sparsification of the attention product ``A = Attn² · Attn¹`` into a graph: each spot keeps
        its ``graph_top_k`` strongest partners, the result is symmetrised (not given in the paper).
    max_distance : int
        Shortest paths are clamped at this distance; unreachable pairs take ``max_distance + 1``.
    max_degree : int
        Degrees are clamped at this value.
    n_rbf : int
        Gaussian radial basis functions of the pairwise spot distance ``|q_i − q_j|`` in the
        spatial encoding.
    rbf_cutoff : float
        Largest pairwise distance (1/Å) covered by the radial basis.
    max_spots : int
        Padding cap: patterns with more diffracted spots keep their brightest ``max_spots``.
    feature_mean, feature_std : tuple of float
        Per-channel normalisation of the features, estimated on training patterns (empty: the
        defaults of :data:`DEFAULT_NORMALISATION`).
    lattice_token : bool
        Whether the lattice descriptors of each pattern
        (:func:`py4dstem_gnn.geometry.lattice_descriptors`: reduced 2D cell, net type scores,
        symmetry residuals, centring, higher-Laue-zone spacing…), measured on the spots the model
        reads, enter as a global token (:class:`~py4dstem_gnn.model.lattice.LatticeEmbedding`).
    lattice_mean, lattice_std : tuple of float
        Per-descriptor normalisation of the lattice token (fitted on training patterns; empty:
        mean 0, std 1).
    pair_encoding : bool
        Whether a small MLP of fine, rotation-invariant pair geometry (``|q_i − q_j|`` with Fourier
        features, ``|q_i|``, ``|q_j|``, ``cos ∠(q_i, q_j)``) adds a per-head attention bias
        (:class:`~py4dstem_gnn.model.structural.PairGeometryBias`).
    n_crystal_systems, n_space_groups : int
        Output classes.
    cs_logit_adjustment, sg_logit_adjustment : tuple of float
        Added to the logits in evaluation mode only (empty: none). Training with class-balanced
        sampling teaches the heads a flattened class prior; these offsets,
        ``log p_deploy(class) − log p_sampled(class)``, move the predictions back to the
        deployment prior (post-hoc logit adjustment, Menon et al., ICLR 2021). Written by
        ``py4dstem-gnn train`` from its sampling (see ``py4dstem_gnn.data.sources.logit_adjustment``).
    """

    feature_set: str = "polar+neighbours"
    in_features: int = 0
    feature_dim: int = 256
    encoder_layers: int = 3
    hidden_dim: int = 64
    n_layers: int = 8
    n_heads: int = 8
    ffn_dim: int = 128
    dropout: float = 0.1
    attention_dropout: float = 0.0
    n_experts: int = 4
    top_k: int = 2
    shared_expert: bool = True
    aux_loss_weight: float = 0.01
    graph_top_k: int = 6
    max_distance: int = 5
    max_degree: int = 16
    n_rbf: int = 16
    rbf_cutoff: float = 4.0
    max_spots: int = 64
    feature_mean: tuple[float, ...] = ()
    feature_std: tuple[float, ...] = ()
    lattice_token: bool = False
    lattice_mean: tuple[float, ...] = ()
    lattice_std: tuple[float, ...] = ()
    pair_encoding: bool = False
    n_crystal_systems: int = 7
    n_space_groups: int = 230
    cs_logit_adjustment: tuple[float, ...] = ()
    sg_logit_adjustment: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown feature_set {self.feature_set!r}; choose one of {sorted(FEATURE_SETS)}")
        if self.in_features == 0:
            self.in_features = FEATURE_SETS[self.feature_set]
        if self.in_features != FEATURE_SETS[self.feature_set]:
            raise ValueError(f"feature_set {self.feature_set!r} has {FEATURE_SETS[self.feature_set]} channels, not {self.in_features}")
        if len(self.feature_mean) == 0:
            self.feature_mean = DEFAULT_NORMALISATION[self.feature_set][0]
            self.feature_std = DEFAULT_NORMALISATION[self.feature_set][1]
        self.feature_mean = tuple(float(v) for v in self.feature_mean)
        self.feature_std = tuple(float(v) for v in self.feature_std)
        if self.hidden_dim % self.n_heads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by n_heads ({self.n_heads})")
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k must lie in 1..n_experts ({self.n_experts}); got {self.top_k}")
        if len(self.feature_mean) != self.in_features or len(self.feature_std) != self.in_features:
            raise ValueError("feature_mean and feature_std need one value per input feature")
        if min(self.feature_std) <= 0:
            raise ValueError("feature_std must be positive")
        if self.encoder_layers < 1 or self.n_layers < 1:
            raise ValueError("encoder_layers and n_layers must be at least 1")
        self.lattice_mean = tuple(float(v) for v in self.lattice_mean)
        self.lattice_std = tuple(float(v) for v in self.lattice_std)
        if len(self.lattice_mean) != len(self.lattice_std):
            raise ValueError("lattice_mean and lattice_std need the same length")
        if self.lattice_std and min(self.lattice_std) <= 0:
            raise ValueError("lattice_std must be positive")
        self.cs_logit_adjustment = tuple(float(v) for v in self.cs_logit_adjustment)
        self.sg_logit_adjustment = tuple(float(v) for v in self.sg_logit_adjustment)
        for name, n in (("cs_logit_adjustment", self.n_crystal_systems), ("sg_logit_adjustment", self.n_space_groups)):
            values = getattr(self, name)
            if values and (len(values) != n or not all(math.isfinite(v) for v in values)):
                raise ValueError(f"{name} needs {n} finite values (or none)")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of the configuration."""
        d = dataclasses.asdict(self)
        d["feature_mean"] = list(self.feature_mean)
        d["feature_std"] = list(self.feature_std)
        d["lattice_mean"] = list(self.lattice_mean)
        d["lattice_std"] = list(self.lattice_std)
        d["cs_logit_adjustment"] = list(self.cs_logit_adjustment)
        d["sg_logit_adjustment"] = list(self.sg_logit_adjustment)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model-config keys: {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        """JSON string of the configuration."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))
