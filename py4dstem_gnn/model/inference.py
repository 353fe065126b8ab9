"""Inference preparation: the speed choices that need no retraining, applied to a trained model.

:func:`prepare_for_inference` returns an evaluation-mode copy of a :class:`~py4dstem_gnn.model.PEAGGMoE`
with the choices measured by ``benchmarks/bench_speed_choices.py`` (table in
``benchmarks/results/speed_choices.md``: patterns/s on 64-spot zone-axis patterns and the accuracy
cost of each choice on the Bloch-wave validation set):

* ``precision`` — ``"fp32"``; ``"bf16"`` (autocast); ``"int8"`` (dynamic int8 quantisation of the
  ``Linear`` layers, CPU only); ``"auto"``: bf16 on a CPU with native bfloat16 (AVX512-BF16 or
  AMX; measured 1.35x the fp32 throughput on the 2-core development machine at -0.05 points of
  crystal-system accuracy, 99.3 % identical argmaxes), fp32 elsewhere (CUDA not measured yet);
  int8 was slower than bf16 and cost 0.6 points;
* ``fuse_moe`` — every mixture-of-experts block computes all its experts with two matrix products
  (:meth:`~py4dstem_gnn.model.moe.MixtureOfExperts.fuse_experts`); same function, measured *slower*
  on the CPU (5/3 of the expert FLOPs), so off by default;
* ``attention="sdpa"`` — the Graphormer layers use ``F.scaled_dot_product_attention``; same function,
  no gain measured on the CPU, so off by default.

The copy answers for the network's attributes (``config``, read by the batching code for
``max_spots``; ``card``, read by the confidence calibration) and the original is left as it was
(still trainable, its state dict unchanged).
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch
from torch import nn

from .attention import MultiHeadAttention
from .moe import MixtureOfExperts

__all__ = ["AUTO_PRECISION", "InferenceModel", "cpu_has_native_bf16", "prepare_for_inference"]

logger = logging.getLogger(__name__)

#: ``precision="auto"`` per device type (``"cpu"``: bf16 only where the CPU has native bfloat16);
#: chosen from benchmarks/results/speed_choices.md.
AUTO_PRECISION: dict[str, str] = {"cpu": "bf16", "cuda": "fp32"}
_PRECISIONS = ("auto", "fp32", "bf16", "int8")


class InferenceModel(nn.Module):
    """A prepared model: forwards to ``net``, under bfloat16 autocast if asked.

    Parameters
    ----------
    net : torch.nn.Module
        The prepared (evaluation-mode) network.
    autocast_dtype : torch.dtype, optional
        Run the forward pass under autocast to this dtype (``None``: as is).
    """

    def __init__(self, net: nn.Module, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.net = net
        self.autocast_dtype = autocast_dtype

    def __getattr__(self, name: str):
        """Attributes the wrapper lacks are the network's (``config``, ``card``, ``num_parameters``...)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "net":
                raise
            return getattr(self._modules["net"], name)

    def forward(self, spots: torch.Tensor, mask: torch.Tensor, lattice: torch.Tensor | None = None):
        """As the wrapped network's ``forward``."""
        if self.autocast_dtype is None:
            return self.net(spots, mask, lattice)
        with torch.autocast(device_type=spots.device.type, dtype=self.autocast_dtype):
            return self.net(spots, mask, lattice)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX; oneDNN's own check)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - older or unusual builds
        return False


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def prepare_for_inference(
    model: nn.Module,
    precision: str = "auto",
    *,
    fuse_moe: bool = False,
    attention: str = "explicit",
    compile: bool = False,
) -> InferenceModel:
    """An evaluation-mode copy of ``model`` set up for fast inference.

    Parameters
    ----------
    model : torch.nn.Module
        A trained :class:`~py4dstem_gnn.model.PEAGGMoE` (or an :class:`InferenceModel`, returned
        unchanged).
    precision : {"auto", "fp32", "bf16", "int8"}
        Arithmetic of the forward pass; ``"auto"``: :data:`AUTO_PRECISION` for the model's device.
        ``"int8"`` quantises the ``Linear`` layers dynamically and runs on the CPU only.
        ``"bf16"`` and ``"int8"`` change a few predictions (see the module docstring).
    fuse_moe : bool
        Compute the mixture-of-experts blocks densely (two matrix products per block).
    attention : {"sdpa", "explicit"}
        Attention of the Graphormer layers (the attention-graph blocks need the weights and keep
        the explicit softmax).
    compile : bool
        Wrap the network in ``torch.compile`` (slow first call per input shape).

    Returns
    -------
    InferenceModel
        Has ``config`` and the network's ``forward`` signature.
    """
    if isinstance(model, InferenceModel):
        return model
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if attention not in ("sdpa", "explicit"):
        raise ValueError(f"attention must be 'sdpa' or 'explicit', got {attention!r}")
    device = _device(model)
    if precision == "auto":
        precision = AUTO_PRECISION.get(device.type, "fp32")
        if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            precision = "fp32"
    if precision == "int8" and device.type != "cpu":
        raise ValueError("int8 dynamic quantisation runs on the CPU only")
    net = copy.deepcopy(model).eval()
    for module in net.modules():
        if isinstance(module, MixtureOfExperts) and fuse_moe:
            module.fuse_experts()
        if isinstance(module, MultiHeadAttention):
            module.sdpa = attention == "sdpa"
    if precision == "int8":
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch 2.13 announces the quantised tensor API's deprecation
            warnings.simplefilter("ignore", UserWarning)
            net = _keep_config(quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8), net)
    if compile:
        net = _keep_config(torch.compile(net, dynamic=True), net)
    logger.debug("prepared for inference: precision %s, fused MoE %s, attention %s, compile %s", precision, fuse_moe,
                 attention, compile)
    return InferenceModel(net, torch.bfloat16 if precision == "bf16" else None).eval()


def _keep_config(new: nn.Module, old: nn.Module) -> nn.Module:
    if not hasattr(new, "config") and hasattr(old, "config"):
        new.config = old.config
    return new
