"""Structural descriptors of the attention graph and their learnable encodings (Eqs. 10–12)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["shortest_path_distances", "node_degrees", "StructuralEncoding", "PairGeometryBias"]


def shortest_path_distances(adjacency: torch.Tensor, max_distance: int) -> torch.Tensor:
    """All-pairs shortest-path lengths of a batch of unweighted graphs.

    Breadth-first search for all sources at once by boolean matrix powers: the frontier at
    distance ``d`` is ``(frontier_{d-1} · A) ∧ ¬reached``.

    Parameters
    ----------
    adjacency : torch.Tensor
        ``(B, N, N)`` bool (or 0/1) adjacency; need not be symmetric (paths follow ``i → j``).
    max_distance : int
        Search depth; pairs further apart (or unreachable) get ``max_distance + 1``.

    Returns
    -------
    torch.Tensor
        ``(B, N, N)`` int64 distances, 0 on the diagonal.
    """
    b, n, _ = adjacency.shape
    a = adjacency.to(torch.float32)
    eye = torch.eye(n, dtype=torch.bool, device=adjacency.device).expand(b, n, n)
    dist = torch.full((b, n, n), max_distance + 1, dtype=torch.int64, device=adjacency.device)
    dist.masked_fill_(eye, 0)
    reached = eye.clone()
    frontier = eye.to(torch.float32)
    for d in range(1, max_distance + 1):
        new = (torch.bmm(frontier, a) > 0) & ~reached
        dist.masked_fill_(new, d)
        reached |= new
        frontier = new.to(torch.float32)
    return dist


def node_degrees(adjacency: torch.Tensor, max_degree: int) -> torch.Tensor:
    """Out-degree of every node, clamped at ``max_degree``: ``(B, N)`` int64."""
    return adjacency.to(torch.int64).sum(dim=-1).clamp(max=max_degree)


class StructuralEncoding(nn.Module):
    """Degree, path and spatial encodings of a spot graph, plus the virtual-token bias.

    * degree (centrality) encoding, Eq. 10: a learnable vector per clamped degree, added to the
      node features;
    * path encoding, Eq. 11: a learnable per-head bias per clamped shortest-path distance;
    * spatial encoding, Eq. 12: a per-head bias from Gaussian radial basis functions of the
      Euclidean distance ``|q_i − q_j|`` between spots (differences of Bragg vectors are lattice
      vectors, so this carries the lattice metric), plus a learnable per-head multiple of the
      attention product ``A`` itself, so that edge strength, not just topology, reaches the
      Graphormer;
    * the virtual graph token gets its own learnable per-head bias to and from every node.

    Parameters
    ----------
    hidden_dim, n_heads, max_distance, max_degree, n_rbf : int
        See :class:`~py4dstem_gnn.model.ModelConfig`.
    rbf_cutoff : float
        Distance range (1/Å) of the radial basis.
    """

    def __init__(self, hidden_dim: int, n_heads: int, max_distance: int, max_degree: int, n_rbf: int, rbf_cutoff: float) -> None:
        super().__init__()
        self.max_distance = max_distance
        self.max_degree = max_degree
        self.n_heads = n_heads
        self.degree = nn.Embedding(max_degree + 1, hidden_dim)
        self.path = nn.Embedding(max_distance + 2, n_heads)
        self.register_buffer("rbf_centers", torch.linspace(0.0, rbf_cutoff, n_rbf), persistent=False)
        self.rbf_width = rbf_cutoff / max(n_rbf - 1, 1)
        self.spatial = nn.Linear(n_rbf, n_heads)
        self.attention_scale = nn.Parameter(torch.zeros(n_heads))
        self.token_to_node = nn.Parameter(torch.zeros(n_heads))
        self.node_to_token = nn.Parameter(torch.zeros(n_heads))
        nn.init.zeros_(self.path.weight)
        nn.init.zeros_(self.degree.weight)

    def forward(
        self,
        positions: torch.Tensor,
        mask: torch.Tensor,
        distances: torch.Tensor,
        degrees: torch.Tensor,
        attention_product: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encodings.

        Parameters
        ----------
        positions : torch.Tensor
            ``(B, N, 2)`` spot coordinates ``qx, qy`` (1/Å).
        mask : torch.Tensor
            ``(B, N)`` bool, True for real spots.
        distances : torch.Tensor
            ``(B, N, N)`` shortest-path distances.
        degrees : torch.Tensor
            ``(B, N)`` clamped degrees.
        attention_product : torch.Tensor
            ``(B, N, N)`` the product ``A = Attn² · Attn¹``.

        Returns
        -------
        node_term : torch.Tensor
            ``(B, N, hidden_dim)`` degree encodings (zero at padding).
        bias : torch.Tensor
            ``(B, H, N + 1, N + 1)`` attention bias; index 0 is the virtual graph token.
        """
        b, n, _ = positions.shape
        node_term = self.degree(degrees) * mask.unsqueeze(-1).to(self.degree.weight.dtype)
        pair = torch.cdist(positions.float(), positions.float())
        rbf = torch.exp(-(((pair.unsqueeze(-1) - self.rbf_centers) / self.rbf_width) ** 2))
        # A is row-stochastic over the real spots: scale by their number so that O(1) means "average".
        n_valid = mask.sum(dim=1).clamp_min(1).to(attention_product.dtype)[:, None, None]
        scaled_a = (attention_product * n_valid).unsqueeze(-1)
        node_bias = (self.path(distances) + self.spatial(rbf) + self.attention_scale * scaled_a).permute(0, 3, 1, 2)
        bias = node_bias.new_zeros(b, self.n_heads, n + 1, n + 1)
        bias[:, :, 1:, 1:] = node_bias
        bias[:, :, 0, 1:] = self.token_to_node[None, :, None]
        bias[:, :, 1:, 0] = self.node_to_token[None, :, None]
        return node_term, bias


class PairGeometryBias(nn.Module):
    """Per-head attention bias from fine, rotation-invariant pair geometry.

    For spots ``i, j`` the inputs are ``|q_i − q_j|`` (raw and through Fourier features of
    periods from 4 down to 0.03 1/Å, so that lattice spacings a few thousandths of 1/Å apart stay
    distinguishable), ``|q_i|``, ``|q_j|`` and ``cos ∠(q_i, q_j)``; none depends on the in-plane
    rotation of the pattern. A two-layer MLP maps them to one bias per head. Its last layer starts
    at zero, so the bias is zero until training moves it (warm starts keep their function).

    Parameters
    ----------
    n_heads : int
        Attention heads.
    hidden : int
        Width of the MLP.
    n_frequencies : int
        Fourier frequencies of ``|q_i − q_j|``, geometric between 0.25 and 32 cycles per 1/Å.
    """

    def __init__(self, n_heads: int, hidden: int = 32, n_frequencies: int = 8) -> None:
        super().__init__()
        freqs = 2.0 * torch.pi * torch.logspace(-2.0, 5.0, n_frequencies, base=2.0)
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(4 + 2 * n_frequencies, hidden), nn.GELU(), nn.Linear(hidden, n_heads))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """``(B, H, N, N)`` bias for ``(B, N, 2)`` positions (1/Å)."""
        q = positions.float()
        d = (q[:, :, None, :] - q[:, None, :, :]).norm(dim=-1)  # exact (cdist's matmul path is not)
        r = q.norm(dim=-1)
        ri = r[:, :, None].expand_as(d)
        rj = r[:, None, :].expand_as(d)
        cos = (q @ q.transpose(1, 2)) / (ri * rj).clamp_min(1e-6)
        phase = d.unsqueeze(-1) * self.freqs
        x = torch.cat([torch.stack([d, ri, rj, cos], dim=-1), phase.sin(), phase.cos()], dim=-1)
        return self.mlp(x).permute(0, 3, 1, 2)
