"""Residual add + RMSNorm + int8 quantization (reference twin).

residual_out = hidden + residual in fp32 (kept in fp32 for the next block: the
residual stream of a deep Mamba grows large and fp16 would round it);
x = residual_out * rsqrt(mean(residual_out^2) + eps) * weight, then quantized.
"""

from __future__ import annotations

import torch

from .quantize_ref import quantize_ref

__all__ = ["rmsnorm_quant_ref"]


def rmsnorm_quant_ref(
    hidden: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    scale: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden: (..., d); residual: (..., d) or None; weight: (d,); scale: per-tensor.
    Returns x_q (..., d) int8 and residual_out (..., d) fp32."""
    r = hidden.float() if residual is None else hidden.float() + residual.float()
    x = r * torch.rsqrt(r.pow(2).mean(dim=-1, keepdim=True) + eps) * weight.float()
    return quantize_ref(x, scale), r
