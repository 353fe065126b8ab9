"""Mixture of SwiGLU experts with an always-on shared expert (Eqs. 2–6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SwiGLU", "MixtureOfExperts", "load_balancing_loss"]


class SwiGLU(nn.Module):
    """SwiGLU feed-forward ``W₂(SiLU(W₁x) ⊙ W₃x)``.

    Parameters
    ----------
    dim : int
        Input and output width.
    hidden : int
        Inner width.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(a) * b)


def load_balancing_loss(probs: torch.Tensor, chosen: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch-Transformer load-balancing loss.

    ``L = E · Σ_e f_e · P_e`` with ``f_e`` the fraction of routing slots assigned to expert ``e``
    and ``P_e`` the mean gate probability of ``e``. It equals 1 for perfectly balanced routing
    and ``E`` when every token goes to one expert (with ``top_k = 1``).

    Parameters
    ----------
    probs : torch.Tensor
        ``(T, E)`` gate probabilities of the ``T`` real (unpadded) tokens.
    chosen : torch.Tensor
        ``(T, k)`` indices of the experts each token was routed to.
    n_experts : int
        Number of routed experts ``E``.
    """
    if probs.shape[0] == 0:
        return probs.sum() * 0.0
    counts = torch.zeros(n_experts, device=probs.device, dtype=probs.dtype)
    counts.scatter_add_(0, chosen.reshape(-1), torch.ones(chosen.numel(), device=probs.device, dtype=probs.dtype))
    frac = counts / chosen.numel()
    return n_experts * torch.sum(frac * probs.mean(dim=0))


class MixtureOfExperts(nn.Module):
    """Token-wise mixture of SwiGLU experts with a shared expert.

    For each real token ``x``: gate ``g = softmax(W_g x)`` over ``E`` experts, keep the ``k``
    largest, renormalise them to sum to one, and return
    ``shared(x) + Σ_{e ∈ top-k} ĝ_e · expert_e(x)``. Only the chosen experts are evaluated, on
    exactly the tokens routed to them (one gather/scatter per expert, no loop over tokens).
    Padded tokens are neither computed nor counted in the load-balancing loss; their output is 0.

    Parameters
    ----------
    dim : int
        Token width.
    hidden : int
        Inner width of every expert.
    n_experts : int
        Routed experts ``E``.
    top_k : int
        Experts per token.
    shared_expert : bool
        Add the always-on shared expert.
    """

    def __init__(self, dim: int, hidden: int, n_experts: int, top_k: int, shared_expert: bool = True) -> None:
        super().__init__()
        self.n_experts = n_experts
        self.top_k = top_k
        self.gate = nn.Linear(dim, n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(dim, hidden) for _ in range(n_experts))
        self.shared = SwiGLU(dim, hidden) if shared_expert else None
        self.fused: nn.ModuleDict | None = None

    def fuse_experts(self) -> None:
        """Evaluation only: compute every expert on every token with two matrix products.

        The routed experts (and the shared one, with weight 1) are stacked into one input and one
        output :class:`~torch.nn.Linear`; each token's unchosen experts get weight 0, so the result
        equals the sparse routing up to floating-point rounding, for ``(E + 1) / (k + 1)`` times the
        expert FLOPs but no gather/scatter per expert (faster on a CPU at this width). Training mode
        always takes the sparse path; the copies do not follow later changes of the experts' weights
        (call again after loading new weights).
        """
        experts = list(self.experts) + ([self.shared] if self.shared is not None else [])
        dim, hidden = experts[0].w2.weight.shape
        w_in = nn.Linear(dim, 2 * hidden * len(experts), bias=False)
        w_out = nn.Linear(hidden * len(experts), dim, bias=False)
        with torch.no_grad():
            w_in.weight.copy_(torch.cat([e.w13.weight for e in experts], 0))
            w_out.weight.copy_(torch.cat([e.w2.weight for e in experts], 1))
        for w in (w_in.weight, w_out.weight):  # evaluation-only copies, not parameters to train
            w.requires_grad_(False)
        self.fused = nn.ModuleDict({"w_in": w_in, "w_out": w_out}).to(experts[0].w2.weight.device)

    def _forward_fused(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        _, top_i, top_w = self.route(flat)
        gate = torch.zeros(flat.shape[0], self.n_experts, device=flat.device, dtype=top_w.dtype).scatter(1, top_i, top_w)
        if self.shared is not None:
            gate = torch.cat([gate, gate.new_ones(gate.shape[0], 1)], 1)
        h = self.fused["w_in"](flat).unflatten(-1, (gate.shape[1], 2, -1))
        h = F.silu(h[:, :, 0]) * h[:, :, 1] * gate.unsqueeze(-1).to(h.dtype)
        out = self.fused["w_out"](h.flatten(1))
        if mask is not None:
            out = out * mask.reshape(-1, 1).to(out.dtype)
        return out.reshape(shape), flat.new_zeros((), dtype=torch.float32)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gate probabilities ``(T, E)``, chosen experts ``(T, k)`` and their weights ``(T, k)``."""
        probs = torch.softmax(self.gate(x).float(), dim=-1)
        top_w, top_i = probs.topk(self.top_k, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        return probs, top_i, top_w

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the mixture.

        Parameters
        ----------
        x : torch.Tensor
            ``(..., dim)`` tokens.
        mask : torch.Tensor, optional
            ``x.shape[:-1]`` bool, True for real tokens; None means all real.

        Returns
        -------
        out : torch.Tensor
            Same shape as ``x``; zero at padded tokens.
        aux : torch.Tensor
            Scalar load-balancing loss over the real tokens (0 on the fused evaluation path,
            :meth:`fuse_experts`).
        """
        if self.fused is not None and not self.training:
            return self._forward_fused(x, mask)
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if mask is None:
            idx = None
            tokens = flat
        else:
            idx = mask.reshape(-1).nonzero(as_tuple=True)[0]
            tokens = flat.index_select(0, idx)
        probs, top_i, top_w = self.route(tokens)
        y = self.shared(tokens) if self.shared is not None else torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            tok, slot = (top_i == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            h = expert(tokens.index_select(0, tok)) * top_w[tok, slot].unsqueeze(-1).to(tokens.dtype)
            y = y.index_add(0, tok, h.to(y.dtype))
        aux = load_balancing_loss(probs, top_i, self.n_experts)
        if idx is None:
            return y.reshape(shape), aux
        out = flat.new_zeros(flat.shape).index_copy(0, idx, y.to(flat.dtype))
        return out.reshape(shape), aux
