"""Optional int8 embedding table and LM head (weight-only, one scale per vocabulary row).

In real Mamba checkpoints the embedding is a few percent of the weights (mamba-2.8b:
129M of 2.8B), but in small-vocabulary or small models it is not (17% of
mamba1-ref-31m), and then it decides whether the checkpoint halves. Rows are
quantized independently so that rare tokens with small embeddings keep their
precision; the head dequantizes the table to the activation dtype and stays a
floating-point matmul (logits are where 8-bit activations would hurt most).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

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

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return (self.weight.float() * self.weight_scale.unsqueeze(1)).to(dtype)

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
        return F.linear(hidden, self.source.dequantized(hidden.dtype))
