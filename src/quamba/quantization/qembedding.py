"""Optional int8 embedding table and LM head (weight-only, one scale per vocabulary row).

In real Mamba checkpoints the embedding is a few percent of the weights (mamba-2.8b:
129M of 2.8B), but in small-vocabulary or small models it is not (17% of
mamba1-ref-31m), and then it decides whether the checkpoint halves. Rows are
quantized independently so that rare tokens with small embeddings keep their
precision; the head keeps float activations (logits are where 8-bit activations would
hurt most) and multiplies them with the int8 rows directly, the row scale after the sum
(``int8_weight_linear``: the Triton kernel for fp16/bf16 on CUDA, else its reference
twin), so the table is never dequantized into a temporary.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from quamba.kernels.dispatch import use_triton
from quamba.kernels.int8_weight_linear_ref import int8_weight_linear_ref
from quamba.kernels.numerics import exact_linear, exact_numerics
from quamba.quantization.qlinear import quantize_weight

__all__ = ["QEmbedding", "QLMHead"]


class QEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, dim: int, out_dtype: torch.dtype, device=None):
        super().__init__()
        self.out_dtype = out_dtype
        self.register_buffer("weight", torch.zeros(num_embeddings, dim, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(num_embeddings, device=device))

    @classmethod
    def from_float(cls, weight: torch.Tensor) -> "QEmbedding":
        q = cls(*weight.shape, out_dtype=weight.dtype, device=weight.device)
        q.weight, q.weight_scale = quantize_weight(weight, "channel")
        return q

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return (self.weight[ids].float() * self.weight_scale[ids].unsqueeze(-1)).to(self.out_dtype)


class QLMHead(nn.Module):
    """logits = h · Eᵀ with E an int8 table: the embedding's own (tied) or a separate one."""

    def __init__(self, table: QEmbedding, tied: bool):
        super().__init__()
        if tied:
            object.__setattr__(self, "_table", table)  # not a submodule: stored once, as the embedding
        else:
            self.table = table

    @property
    def source(self) -> QEmbedding:
        return self.__dict__.get("_table") or self.table

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        table = self.source
        if exact_numerics():
            # The long dot products in fp64 and the row scale after them, rounded once (kernels/numerics.py).
            return exact_linear(hidden, table.weight, table.weight_scale).to(hidden.dtype)
        if hidden.dtype in (torch.float16, torch.bfloat16) and use_triton(hidden):
            from quamba.kernels.triton import int8_weight_linear

            return int8_weight_linear(hidden, table.weight, table.weight_scale)
        return int8_weight_linear_ref(hidden, table.weight, table.weight_scale)
