"""Residual add + RMSNorm, with a float or an int8 output (reference twins).

residual_out = hidden + residual in fp32 (kept in fp32 for the next block: the
residual stream of a deep Mamba grows large and fp16 would round it);
x = residual_out * rsqrt(mean(residual_out^2) + eps) * weight in fp32, then cast
(``add_rmsnorm_ref``, what ``models.mamba.Block`` computes) or quantized
(``rmsnorm_quant_ref``).
"""

from __future__ import annotations

import torch

from .numerics import fp32_eps
from .quantize_ref import quantize_ref

__all__ = ["add_rmsnorm_ref", "rmsnorm_exact", "rmsnorm_quant_ref"]


def rmsnorm_exact(r: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of fp32 r in exact numerics (kernels/numerics.py): fp64, rounded once to fp32;
    eps as the kernels see it (fp32)."""
    r64 = r.float().double()
    rstd = 1.0 / torch.sqrt(r64.pow(2).mean(dim=-1, keepdim=True) + fp32_eps(eps))
    return (r64 * rstd * weight.double()).float()


def _add_rmsnorm_fp32(hidden, residual, weight, eps, exact=False) -> tuple[torch.Tensor, torch.Tensor]:
    r = hidden.float() if residual is None else hidden.float() + residual.float()
    if exact:
        return rmsnorm_exact(r, weight, eps), r
    return r * torch.rsqrt(r.pow(2).mean(dim=-1, keepdim=True) + eps) * weight.float(), r


def add_rmsnorm_ref(
    hidden: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden: (..., d); residual: (..., d) or None; weight: (d,); out_dtype: default hidden's.
    Returns normed (..., d) in out_dtype and residual_out (..., d) fp32."""
    x, r = _add_rmsnorm_fp32(hidden, residual, weight, eps)
    return x.to(hidden.dtype if out_dtype is None else out_dtype), r


def rmsnorm_quant_ref(
    hidden: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    scale: torch.Tensor,
    exact: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden: (..., d); residual: (..., d) or None; weight: (d,); scale: per-tensor;
    exact: the norm in fp64 (kernels/numerics.py).
    Returns x_q (..., d) int8 and residual_out (..., d) fp32."""
    x, r = _add_rmsnorm_fp32(hidden, residual, weight, eps, exact)
    return quantize_ref(x, scale), r
