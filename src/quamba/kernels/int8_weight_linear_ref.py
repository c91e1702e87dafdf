"""Weight-only int8 linear layer (reference twin): float activations, int8 weight rows.

out = (x @ w_q^T) * w_scale, w_scale one fp32 scale per output row. The product runs in
fp32 on the int8 values (exact as floats) and the scale comes after the sum, as in the
kernel: the weights are never materialized in the activation dtype. Used for the LM head
of a model quantized with ``--int8-embedding`` (logits keep float activations).
"""

from __future__ import annotations

import torch

__all__ = ["int8_weight_linear_ref"]


def int8_weight_linear_ref(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """x: (..., K) float; w_q: (N, K) int8; w_scale: (N,) fp32. Returns (..., N) in x.dtype."""
    return (torch.nn.functional.linear(x.float(), w_q.float()) * w_scale.float()).to(x.dtype)
