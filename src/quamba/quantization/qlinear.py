"""W8A8 linear layer: int8 weight with its scale, and the static scale of its int8 input.

State dict (compressed-tensors naming): ``weight`` int8 (out, in), ``weight_scale``
fp32 () per-tensor or (out,) per-channel, ``input_scale`` fp32 () (absent for
dynamic activations), ``bias`` fp32 (out,) if any.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from quamba.kernels.quantize_ref import QMAX, quantize_ref

__all__ = ["QLinear", "quantize_weight", "dequantize_weight"]


def quantize_weight(weight: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 weight: per-tensor scale () or per-output-channel scale (out,)."""
    w = weight.detach().float()
    if granularity == "channel":
        amax = w.abs().reshape(w.shape[0], -1).amax(1)
        scale = (amax / QMAX).clamp_min(1e-8)
        q = quantize_ref(w, scale.view(-1, *([1] * (w.dim() - 1))))
    else:
        scale = (w.abs().amax() / QMAX).clamp_min(1e-8)
        q = quantize_ref(w, scale)
    return q, scale


def dequantize_weight(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """int8 (out, ...) weight times its per-tensor () or per-output-channel (out,) scale, in ``dtype``."""
    scale = scale.to(dtype)
    return weight.to(dtype) * (scale.view(-1, *([1] * (weight.dim() - 1))) if scale.dim() else scale)


class QLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool, per_channel: bool,
                 static_input: bool, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features if per_channel else (), device=device))
        if static_input:
            self.register_buffer("input_scale", torch.ones((), device=device))
        else:
            self.input_scale = None
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, device=device))
        else:
            self.bias = None

    @classmethod
    def from_float(cls, linear: nn.Linear, input_scale: torch.Tensor | None, granularity: str) -> "QLinear":
        q = cls(linear.in_features, linear.out_features, linear.bias is not None,
                granularity == "channel", input_scale is not None, device=linear.weight.device)
        q.weight, q.weight_scale = (t.to(linear.weight.device) for t in quantize_weight(linear.weight, granularity))
        if input_scale is not None:
            q.input_scale = input_scale.float().to(linear.weight.device)
        if linear.bias is not None:
            q.bias = linear.bias.detach().float()
        return q

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_weight(self.weight, self.weight_scale)

    def extra_repr(self) -> str:
        gran = "channel" if self.weight_scale.dim() else "tensor"
        act = "static" if self.input_scale is not None else "dynamic"
        return f"{self.in_features} -> {self.out_features}, int8 weight per-{gran}, {act} int8 input"
