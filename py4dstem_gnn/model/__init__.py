"""The PE-AG-GMoE graph transformer, one small module per component."""

from .attention import MultiHeadAttention
from .attention_graph import RelationalAttentionAggregator, sparsify_attention
from .config import ModelConfig
from .encoder import PointlistEncoder
from .graphormer import GraphormerLayer
from .moe import MixtureOfExperts, SwiGLU, load_balancing_loss
from .network import ModelOutput, PEAGGMoE
from .lattice import LatticeEmbedding, n_lattice_descriptors, pattern_descriptors
from .structural import PairGeometryBias, StructuralEncoding, node_degrees, shortest_path_distances

__all__ = [
    "ModelConfig",
    "ModelOutput",
    "PEAGGMoE",
    "PointlistEncoder",
    "MultiHeadAttention",
    "MixtureOfExperts",
    "SwiGLU",
    "load_balancing_loss",
    "RelationalAttentionAggregator",
    "sparsify_attention",
    "GraphormerLayer",
    "StructuralEncoding",
    "PairGeometryBias",
    "LatticeEmbedding",
    "pattern_descriptors",
    "n_lattice_descriptors",
    "shortest_path_distances",
    "node_degrees",
]
