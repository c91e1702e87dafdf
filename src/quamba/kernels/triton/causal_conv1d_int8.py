"""Causal depthwise conv1d on int8 activations, fused bias + SiLU + int8 requantize.

Twin of ``quamba.kernels.causal_conv1d_int8_ref.causal_conv1d_int8_ref``. The
kernel (tiling, state handling) is shared with the float conv: see causal_conv1d.py.
"""

from __future__ import annotations

import torch

from ._common import check_device, check_dtype, check_shape, scalar_scale
from .causal_conv1d import launch_causal_conv1d

__all__ = ["causal_conv1d_int8"]


def causal_conv1d_int8(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state_q: torch.Tensor | None,
    out_scale: torch.Tensor,
    state_out: torch.Tensor | None = None,
    exact: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_q: (batch, seqlen, dim) int8 (any strides); x_scale: per-tensor fp32;
    w_q: (dim, width) int8; w_scale: per-tensor or (dim,) fp32; bias: (dim,) or None;
    conv_state_q: (batch, dim, width - 1) int8 or None (zeros); out_scale: per-tensor.
    Returns u_q (batch, seqlen, dim) int8 = quantize(silu(conv(x) + bias), out_scale)
    and the new conv state (batch, dim, width - 1) int8: a new tensor, or ``state_out``
    when given (it may be ``conv_state_q`` itself: the state is updated in place).
    exact: dequantize, bias and SiLU in fp64, rounded once to fp32 (kernels/numerics.py)."""
    op = "causal_conv1d_int8"
    check_device(op, x_q, x_scale, w_q, w_scale, bias, conv_state_q, out_scale)
    check_dtype(op, "x_q", x_q, (torch.int8,))
    check_dtype(op, "w_q", w_q, (torch.int8,))
    if x_q.dim() != 3:
        raise ValueError(f"{op}: x_q must be (batch, seqlen, dim), got shape {tuple(x_q.shape)}")
    batch, seqlen, dim = x_q.shape
    if w_q.dim() != 2 or w_q.shape[0] != dim or w_q.shape[1] < 2:
        raise ValueError(f"{op}: w_q must be (dim={dim}, width>=2), got shape {tuple(w_q.shape)}")
    width = w_q.shape[1]
    if conv_state_q is not None:
        check_dtype(op, "conv_state_q", conv_state_q, (torch.int8,))
        check_shape(op, "conv_state_q", conv_state_q, (batch, dim, width - 1))
    if bias is not None:
        check_shape(op, "bias", bias, (dim,))
    xs = scalar_scale(op, "x_scale", x_scale)
    os_ = scalar_scale(op, "out_scale", out_scale)
    if w_scale.numel() == 1:
        wsc = w_scale.reshape(()).float()
    elif w_scale.numel() == dim:
        wsc = w_scale.reshape(dim).float().contiguous()
    else:
        raise ValueError(f"{op}: w_scale must be per-tensor or ({dim},), got shape {tuple(w_scale.shape)}")

    out = torch.empty(batch, seqlen, dim, dtype=torch.int8, device=x_q.device)
    if state_out is not None:
        check_dtype(op, "state_out", state_out, (torch.int8,))
        check_shape(op, "state_out", state_out, (batch, dim, width - 1))
        new_state = state_out
    else:
        new_state = torch.empty(batch, dim, width - 1, dtype=torch.int8, device=x_q.device)
    launch_causal_conv1d(x_q, w_q, bias, conv_state_q, out, new_state, True, (xs, wsc, os_), exact)
    return out, new_state
