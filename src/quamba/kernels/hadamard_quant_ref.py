"""Hadamard rotation fused with int8 quantization (reference twin).

quantize_ref(y @ R, scale) with R the orthonormal (n, n) Hadamard matrix of
``quamba.quantization.hadamard.hadamard_matrix``; the product in fp32.
"""

from __future__ import annotations

import torch

from .quantize_ref import quantize_ref

__all__ = ["hadamard_quant_ref"]


def hadamard_quant_ref(y: torch.Tensor, scale: torch.Tensor, R: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """y: (..., n) float; scale: per-tensor (or broadcastable per-token (..., 1));
    R: (n, n). Returns (..., n) int8 = quantize_ref(y.float() @ R, scale); exact: the product
    in fp64 (R should then be the fp64 matrix), rounded once to fp32 (kernels/numerics.py)."""
    acc = torch.float64 if exact else torch.float32
    return quantize_ref((y.to(acc) @ R.to(device=y.device, dtype=acc)).float(), scale)
