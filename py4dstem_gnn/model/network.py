"""PE-AG-GMoE: pointlist encoder → attention graph → Graphormer-MoE → crystal-system / space-group heads."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import torch
from torch import nn

from ..features import spot_features
from .attention import key_padding_bias
from .attention_graph import RelationalAttentionAggregator
from .config import ModelConfig
from .encoder import PointlistEncoder
from .graphormer import GraphormerLayer
from .moe import MixtureOfExperts
from .lattice import LatticeEmbedding, n_lattice_descriptors, pattern_descriptors
from .structural import PairGeometryBias, StructuralEncoding, node_degrees, shortest_path_distances

__all__ = ["ModelOutput", "PEAGGMoE"]


class ModelOutput(NamedTuple):
    """Outputs of :class:`PEAGGMoE`.

    Attributes
    ----------
    cs_logits : torch.Tensor
        ``(B, 7)`` crystal-system logits (codes of :mod:`py4dstem_gnn.labels`).
    sg_logits : torch.Tensor
        ``(B, 230)`` space-group logits; column ``j`` is space group ``j + 1``.
    aux_loss : torch.Tensor
        Scalar load-balancing loss, averaged over all MoE blocks.
    """

    cs_logits: torch.Tensor
    sg_logits: torch.Tensor
    aux_loss: torch.Tensor


class PEAGGMoE(nn.Module):
    """Graph transformer for crystal-system and space-group classification of spot patterns.

    Data flow (Nathani et al., npj Comput. Mater. 2026):

    1. per-spot features (polar ``[r, cos θ, sin θ, I, log I]`` and, by default, neighbourhood
       descriptors; :func:`~py4dstem_gnn.features.spot_features`), normalised per channel;
    2. :class:`~py4dstem_gnn.model.encoder.PointlistEncoder` (1×1 convolutions);
    3. :class:`~py4dstem_gnn.model.attention_graph.RelationalAttentionAggregator`: two MHA + MoE
       blocks, ``A = Attn² · Attn¹`` sparsified to a graph;
    4. shortest paths and degrees of that graph → degree, path and spatial encodings;
    5. a virtual graph token and ``n_layers`` :class:`~py4dstem_gnn.model.graphormer.GraphormerLayer`;
    6. a graph-level MoE on the token, then the two classification heads.

    Options beyond the paper (off by default, see :class:`ModelConfig`): a lattice token
    (:class:`~py4dstem_gnn.model.lattice.LatticeEmbedding` of the pattern's measured lattice
    descriptors, joining the graph token and the pooled representation) and a fine pair-geometry
    attention bias (:class:`~py4dstem_gnn.model.structural.PairGeometryBias`).

    Parameters
    ----------
    config : ModelConfig, optional
        Architecture; defaults reproduce the paper's Table 6.

    Notes
    -----
    Inputs are the *diffracted* spots (direct beam removed), padded with a mask; a pattern's
    output does not depend on the other patterns of its batch or on the order of its spots.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        d = config.hidden_dim
        moe_args = (config.ffn_dim, config.n_experts, config.top_k, config.shared_expert, config.dropout)
        self.register_buffer("feature_mean", torch.tensor(config.feature_mean, dtype=torch.float32))
        self.register_buffer("feature_std", torch.tensor(config.feature_std, dtype=torch.float32))
        self.encoder = PointlistEncoder(config.in_features, config.feature_dim, d, config.encoder_layers, config.dropout)
        self.aggregator = RelationalAttentionAggregator(d, config.n_heads, *moe_args, graph_top_k=config.graph_top_k, attention_dropout=config.attention_dropout)
        self.structure = StructuralEncoding(d, config.n_heads, config.max_distance, config.max_degree, config.n_rbf, config.rbf_cutoff)
        self.pair_bias = PairGeometryBias(config.n_heads) if config.pair_encoding else None
        self.lattice = (LatticeEmbedding(len(config.lattice_mean) or n_lattice_descriptors(), d, config.lattice_mean,
                                         config.lattice_std) if config.lattice_token else None)
        self.graph_token = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.normal_(self.graph_token, std=0.02)
        self.layers = nn.ModuleList(GraphormerLayer(d, config.n_heads, *moe_args, attention_dropout=config.attention_dropout) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(d)
        self.graph_moe = MixtureOfExperts(d, config.ffn_dim, config.n_experts, config.top_k, config.shared_expert)
        self.head_norm = nn.LayerNorm(d)
        self.cs_head = nn.Linear(d, config.n_crystal_systems)
        self.sg_head = nn.Linear(d, config.n_space_groups)
        self.register_buffer("cs_logit_adjustment", torch.zeros(config.n_crystal_systems), persistent=False)
        self.register_buffer("sg_logit_adjustment", torch.zeros(config.n_space_groups), persistent=False)
        self.set_logit_adjustment(config.cs_logit_adjustment, config.sg_logit_adjustment)

    def set_logit_adjustment(self, cs: Sequence[float] = (), sg: Sequence[float] = ()) -> None:
        """Set (or, with empty sequences, remove) the evaluation-mode logit offsets.

        Parameters
        ----------
        cs, sg : sequence of float
            ``n_crystal_systems`` and ``n_space_groups`` offsets added to the logits when the
            module is in evaluation mode (see :class:`ModelConfig`); stored in :attr:`config`,
            hence in the model card of saved weights.
        """
        self.config = dataclasses.replace(self.config, cs_logit_adjustment=tuple(cs), sg_logit_adjustment=tuple(sg))
        device = self.cs_logit_adjustment.device
        self.cs_logit_adjustment = torch.tensor(self.config.cs_logit_adjustment or [0.0] * self.config.n_crystal_systems, device=device)
        self.sg_logit_adjustment = torch.tensor(self.config.sg_logit_adjustment or [0.0] * self.config.n_space_groups, device=device)

    def forward(self, spots: torch.Tensor, mask: torch.Tensor, lattice: torch.Tensor | None = None) -> ModelOutput:
        """Classify a padded batch of spot patterns.

        Parameters
        ----------
        spots : torch.Tensor
            ``(B, N, 3)`` ``qx, qy`` (1/Å) and intensity of the diffracted spots.
        mask : torch.Tensor
            ``(B, N)`` bool, True for real spots.
        lattice : torch.Tensor, optional
            ``(B, n_descriptors)`` lattice descriptors of these spots (for a model with a lattice
            token); measured here by :func:`~py4dstem_gnn.model.lattice.pattern_descriptors` when
            not given.

        Returns
        -------
        ModelOutput
        """
        if spots.ndim != 3 or spots.shape[-1] != 3 or mask.shape != spots.shape[:2]:
            raise ValueError(f"expected spots (B, N, 3) and mask (B, N); got {tuple(spots.shape)} and {tuple(mask.shape)}")
        mask = mask.bool()
        cfg = self.config
        feats = spot_features(spots.float(), mask, cfg.feature_set)
        feats = (feats - self.feature_mean) / self.feature_std * mask.unsqueeze(-1).to(feats.dtype)
        x = self.encoder(feats, mask)
        x, product, adjacency, aux = self.aggregator(x, mask)
        distances = shortest_path_distances(adjacency, cfg.max_distance)
        degrees = node_degrees(adjacency, cfg.max_degree)
        node_term, bias = self.structure(spots[..., :2], mask, distances, degrees, product)
        if self.pair_bias is not None:
            bias[:, :, 1:, 1:] = bias[:, :, 1:, 1:] + self.pair_bias(spots[..., :2]).to(bias.dtype)
        x = x + node_term.to(x.dtype)
        b = x.shape[0]
        token = self.graph_token.expand(b, 1, -1)
        head_term = None
        if self.lattice is not None:
            if lattice is None:
                lattice = pattern_descriptors(spots, mask)
            token_term, head_term = self.lattice(lattice)
            token = token + token_term.unsqueeze(1)
        h = torch.cat([token.to(x.dtype), x], dim=1)
        key_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        # one bias for all layers, in the compute dtype, with the padding mask folded in
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        bias = bias.to(dtype) + key_padding_bias(key_mask, dtype)
        aux_terms = [aux]
        for layer in self.layers:
            h, layer_aux = layer(h, key_mask, bias)
            aux_terms.append(layer_aux)
        g = self.norm(h[:, 0])
        m, graph_aux = self.graph_moe(g)
        aux_terms.append(graph_aux)
        g = g + m if head_term is None else g + m + head_term.to(g.dtype)
        g = self.head_norm(g)
        cs_logits, sg_logits = self.cs_head(g).float(), self.sg_head(g).float()
        if not self.training:
            cs_logits = cs_logits + self.cs_logit_adjustment
            sg_logits = sg_logits + self.sg_logit_adjustment
        return ModelOutput(cs_logits, sg_logits, torch.stack(aux_terms).mean())

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
