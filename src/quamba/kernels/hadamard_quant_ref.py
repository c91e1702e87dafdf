"""Hadamard rotation fused with int8 quantization (reference twin).

quantize_ref(y @ R, scale) with R the orthonormal (n, n) Hadamard matrix of
``quamba.quantization.hadamard.hadamard_matrix``; the product in fp32.
"""

from __future__ import annotations

import math

import torch

from .quantize_ref import quantize_ref

__all__ = ["hadamard_exact", "hadamard_quant_ref"]


def hadamard_exact(y: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """y @ R in exact numerics (kernels/numerics.py), fp32: signs is the unnormalized ±1 matrix
    (R·√n) in fp64; y fp16, as the scan emits it. Sums of up to 8192 fp16 values are exact in
    fp64 (2^-24 to 2^29: 53 bits) in any order, so y @ signs is the
    kernel's sum bit for bit, and one fp64 product with 1/√n (computed as the kernel computes
    it) is then the kernel's value too."""
    return ((y.double() @ signs) * (1.0 / math.sqrt(y.shape[-1]))).float()


def hadamard_quant_ref(y: torch.Tensor, scale: torch.Tensor, R: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """y: (..., n) float; scale: per-tensor (or broadcastable per-token (..., 1));
    R: (n, n). Returns (..., n) int8 = quantize_ref(y.float() @ R, scale); exact: the product
    as ``hadamard_exact`` computes it (fp16 y; kernels/numerics.py)."""
    if exact:
        signs = torch.round(R.to(device=y.device, dtype=torch.float64) * math.sqrt(y.shape[-1]))
        return quantize_ref(hadamard_exact(y, signs), scale)
    return quantize_ref(y.float() @ R.to(device=y.device, dtype=torch.float32), scale)
