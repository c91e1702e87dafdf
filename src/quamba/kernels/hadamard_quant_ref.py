"""Hadamard rotation fused with int8 quantization (reference twin).

quantize_ref(y @ R, scale) with R the orthonormal (n, n) Hadamard matrix of
``quamba.quantization.hadamard.hadamard_matrix``; the product in fp32.
"""

from __future__ import annotations

import torch

from .quantize_ref import quantize_ref

__all__ = ["hadamard_quant_ref"]


def hadamard_quant_ref(y: torch.Tensor, scale: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """y: (..., n) float; scale: per-tensor (or broadcastable per-token (..., 1));
    R: (n, n). Returns (..., n) int8 = quantize_ref(y.float() @ R, scale)."""
    return quantize_ref(y.float() @ R.to(device=y.device, dtype=torch.float32), scale)
