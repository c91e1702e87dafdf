"""Causal depthwise conv1d over int8 inputs with an int8 output (reference twin).

Dequantize the input (and the conv state, which holds past inputs on the same
grid) and the weight, run ``causal_conv1d_ref`` (fp32 math, bias, SiLU), and
quantize the result with the per-tensor ``out_scale``. The new state is the
last ``width - 1`` int8 inputs, unchanged (no requantization).
"""

from __future__ import annotations

import torch

from .causal_conv1d_ref import causal_conv1d_ref
from .quantize_ref import dequantize_ref, quantize_ref

__all__ = ["causal_conv1d_int8_ref"]


def causal_conv1d_int8_ref(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state_q: torch.Tensor | None,
    out_scale: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_q: (batch, seqlen, dim) int8; x_scale: per-tensor; w_q: (dim, width) int8;
    w_scale: per-tensor or (dim,); bias: (dim,) or None; conv_state_q:
    (batch, dim, width - 1) int8 or None (zeros); out_scale: per-tensor.
    Returns u_q (batch, seqlen, dim) int8 = quantize(silu(conv(x) + bias)) and the
    new state (batch, dim, width - 1) int8."""
    dim, width = w_q.shape
    x = dequantize_ref(x_q, x_scale.float())
    ws = w_scale.float()
    w = w_q.float() * (ws.reshape(dim, 1) if ws.numel() > 1 else ws)
    state = None if conv_state_q is None else dequantize_ref(conv_state_q, x_scale.float())
    u, _ = causal_conv1d_ref(x, w, bias, state, activation="silu")
    batch, seqlen, _ = x_q.shape
    if conv_state_q is None:
        conv_state_q = x_q.new_zeros(batch, dim, width - 1)
    full = torch.cat([conv_state_q, x_q.transpose(1, 2)], dim=2)
    new_state = full[:, :, full.shape[2] - (width - 1):].contiguous()
    return quantize_ref(u, out_scale.float()), new_state
