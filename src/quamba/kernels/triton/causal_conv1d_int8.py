"""Causal depthwise conv1d on int8 activations, fused bias + SiLU + int8 requantize.

Twin of ``quamba.kernels.causal_conv1d_int8_ref.causal_conv1d_int8_ref``.
One program computes a (BLOCK_L timesteps, BLOCK_D channels) tile; channels are
the contiguous axis of the token-major input, so every load is coalesced. Tap k
of output t reads input t + k - (width - 1), which comes from the conv state
when negative: continuing from a state and single-token decode (seqlen 1) are
the same code path. Programs of the first time block also write the new state
(the last width - 1 inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_device, check_dtype, check_shape, next_pow2, quantize_int8, scalar_scale

__all__ = ["causal_conv1d_int8"]


@triton.jit
def _causal_conv1d_int8_kernel(
    x_ptr, w_ptr, bias_ptr, state_ptr, out_ptr, new_state_ptr,
    x_scale_ptr, w_scale_ptr, out_scale_ptr,
    L, D,
    stride_xb, stride_xl, stride_xd,
    stride_wd, stride_wk,
    stride_sb, stride_sd, stride_sk,
    stride_ob, stride_ol, stride_od,
    stride_nb, stride_nd, stride_nk,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_STATE: tl.constexpr,
    W_PER_CHANNEL: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_l = tl.program_id(1)
    pid_d = tl.program_id(2)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = offs_d < D
    x_scale = tl.load(x_scale_ptr)
    if W_PER_CHANNEL:
        w_scale = tl.load(w_scale_ptr + offs_d, mask=d_mask, other=0.0)
    else:
        w_scale = tl.load(w_scale_ptr)
    x_base = x_ptr + pid_b * stride_xb
    s_base = state_ptr + pid_b * stride_sb

    acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
    for k in tl.static_range(WIDTH):
        w_k = tl.load(w_ptr + offs_d * stride_wd + k * stride_wk, mask=d_mask, other=0).to(tl.float32)
        src = offs_l + (k - (WIDTH - 1))                           # input time of this tap
        xm = (src >= 0) & (src < L)
        xv = tl.load(x_base + src[:, None] * stride_xl + offs_d[None, :] * stride_xd,
                     mask=xm[:, None] & d_mask[None, :], other=0)
        if HAS_STATE:
            sm = (src < 0) & (offs_l < L)
            sv = tl.load(s_base + offs_d[None, :] * stride_sd + (src + (WIDTH - 1))[:, None] * stride_sk,
                         mask=sm[:, None] & d_mask[None, :], other=0)
            xv = tl.where(xm[:, None], xv, sv)
        acc += xv.to(tl.float32) * w_k[None, :]
    # Same association as the reference: conv of (x_q*x_scale) with (w_q*w_scale).
    acc = acc * (x_scale * w_scale)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    acc = acc / (1.0 + tl.exp(-acc))                               # SiLU
    q = quantize_int8(acc, tl.load(out_scale_ptr))
    tl.store(out_ptr + pid_b * stride_ob + offs_l[:, None] * stride_ol + offs_d[None, :] * stride_od,
             q, mask=(offs_l < L)[:, None] & d_mask[None, :])

    if pid_l == 0:
        # new_state[j] = full[L + j], full = state ++ x, j in [0, WIDTH - 1)
        offs_j = tl.arange(0, BLOCK_S)
        src_j = L + offs_j - (WIDTH - 1)
        jm = offs_j < WIDTH - 1
        xm_j = (src_j >= 0) & jm
        nv = tl.load(x_base + src_j[:, None] * stride_xl + offs_d[None, :] * stride_xd,
                     mask=xm_j[:, None] & d_mask[None, :], other=0)
        if HAS_STATE:
            sm_j = (src_j < 0) & jm
            sv_j = tl.load(s_base + offs_d[None, :] * stride_sd + (src_j + (WIDTH - 1))[:, None] * stride_sk,
                         mask=sm_j[:, None] & d_mask[None, :], other=0)
            nv = tl.where(xm_j[:, None], nv, sv_j)
        # new_state may alias state (in-place update): every thread's reads of
        # the old state come before any write.
        tl.debug_barrier()
        tl.store(new_state_ptr + pid_b * stride_nb + offs_d[None, :] * stride_nd
                 + offs_j[:, None] * stride_nk, nv, mask=jm[:, None] & d_mask[None, :])


def causal_conv1d_int8(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state_q: torch.Tensor | None,
    out_scale: torch.Tensor,
    state_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_q: (batch, seqlen, dim) int8 (any strides); x_scale: per-tensor fp32;
    w_q: (dim, width) int8; w_scale: per-tensor or (dim,) fp32; bias: (dim,) or None;
    conv_state_q: (batch, dim, width - 1) int8 or None (zeros); out_scale: per-tensor.
    Returns u_q (batch, seqlen, dim) int8 = quantize(silu(conv(x) + bias), out_scale)
    and the new conv state (batch, dim, width - 1) int8: a new tensor, or ``state_out``
    when given (it may be ``conv_state_q`` itself: the state is updated in place)."""
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
        wsc, per_ch = w_scale.reshape(()).float(), False
    elif w_scale.numel() == dim:
        wsc, per_ch = w_scale.reshape(dim).float().contiguous(), True
    else:
        raise ValueError(f"{op}: w_scale must be per-tensor or ({dim},), got shape {tuple(w_scale.shape)}")

    out = torch.empty(batch, seqlen, dim, dtype=torch.int8, device=x_q.device)
    if state_out is not None:
        check_dtype(op, "state_out", state_out, (torch.int8,))
        check_shape(op, "state_out", state_out, (batch, dim, width - 1))
        new_state = state_out
    else:
        new_state = torch.empty(batch, dim, width - 1, dtype=torch.int8, device=x_q.device)
    st = conv_state_q if conv_state_q is not None else new_state   # dummy pointer when absent
    # Tiles sized to stay in registers (larger ones spill: checked in the SASS).
    if seqlen == 1:   # a decode step: no masked-off time rows, more programs
        block_l, block_d = 1, 128
    else:
        block_l = min(32, max(8, next_pow2(seqlen)))
        block_d = 128 if block_l > 8 else 256
    grid = (batch, triton.cdiv(max(seqlen, 1), block_l), triton.cdiv(dim, block_d))
    _causal_conv1d_int8_kernel[grid](
        x_q, w_q, bias if bias is not None else xs, st, out, new_state,
        xs, wsc, os_,
        seqlen, dim,
        x_q.stride(0), x_q.stride(1), x_q.stride(2),
        w_q.stride(0), w_q.stride(1),
        st.stride(0), st.stride(1), st.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        new_state.stride(0), new_state.stride(1), new_state.stride(2),
        WIDTH=width, HAS_BIAS=bias is not None, HAS_STATE=conv_state_q is not None,
        W_PER_CHANNEL=per_ch,
        BLOCK_L=block_l, BLOCK_D=block_d, BLOCK_S=next_pow2(width - 1),
        num_warps=4,
    )
    return out, new_state
