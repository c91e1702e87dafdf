"""Causal depthwise conv1d over int8 inputs with an int8 output (reference twin).

Dequantize the input (and the conv state, which holds past inputs on the same
grid) and the weight, run ``causal_conv1d_ref`` (fp32 math, bias, SiLU), and
quantize the result with the per-tensor ``out_scale``. The new state is the
last ``width - 1`` int8 inputs, unchanged (no requantization).
"""

from __future__ import annotations

import torch

from .causal_conv1d_ref import causal_conv1d_ref
from .quantize_ref import quantize_ref

__all__ = ["causal_conv1d_int8_ref"]


def causal_conv1d_int8_ref(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state_q: torch.Tensor | None,
    out_scale: torch.Tensor,
    exact: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_q: (batch, seqlen, dim) int8; x_scale: per-tensor; w_q: (dim, width) int8;
    w_scale: per-tensor or (dim,); bias: (dim,) or None; conv_state_q:
    (batch, dim, width - 1) int8 or None (zeros); out_scale: per-tensor.
    Returns u_q (batch, seqlen, dim) int8 = quantize(silu(conv(x) + bias)) and the
    new state (batch, dim, width - 1) int8. exact: dequantized exactly and computed in fp64,
    rounded once to fp32 before the quantization (kernels/numerics.py)."""
    dim, width = w_q.shape
    acc = torch.float64 if exact else torch.float32
    x = x_q.to(acc) * x_scale.to(acc)
    ws = w_scale.to(acc)
    w = w_q.to(acc) * (ws.reshape(dim, 1) if ws.numel() > 1 else ws)
    state = None if conv_state_q is None else conv_state_q.to(acc) * x_scale.to(acc)
    u, _ = causal_conv1d_ref(x, w, bias, state, activation="silu", compute_dtype=acc)
    batch, seqlen, _ = x_q.shape
    if conv_state_q is None:
        conv_state_q = x_q.new_zeros(batch, dim, width - 1)
    full = torch.cat([conv_state_q, x_q.transpose(1, 2)], dim=2)
    new_state = full[:, :, full.shape[2] - (width - 1):].contiguous()
    return quantize_ref(u, out_scale.float()), new_state
