"""Symmetric int8 quantization primitives (reference twins of the fused kernels).

Symmetric, zero-point free, clamped to [-127, 127] so that negation never
overflows and the grid is the same on both sides of zero.
"""

from __future__ import annotations

import torch

__all__ = ["QMAX", "quantize_ref", "dequantize_ref", "absmax_scale"]

QMAX = 127


def quantize_ref(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """round(x / scale) clamped to int8. ``scale`` broadcasts against x
    (a scalar for per-tensor, (..., 1) for per-token)."""
    return torch.clamp(torch.round(x.float() / scale), -QMAX, QMAX).to(torch.int8)


def dequantize_ref(q: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    return q.float() * scale


def absmax_scale(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Scale that maps the abs-max (of the whole tensor, or along ``dim``) to 127."""
    amax = x.abs().amax() if dim is None else x.abs().amax(dim=dim, keepdim=True)
    return (amax.float() / QMAX).clamp_min(1e-8)
