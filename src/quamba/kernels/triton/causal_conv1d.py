"""Causal depthwise conv1d + bias + SiLU over float or int8 activations.

Twins: ``causal_conv1d`` of ``quamba.kernels.causal_conv1d_ref.causal_conv1d_ref``
(fp16/bf16/fp32 in and out, fp32 math) and ``causal_conv1d_int8`` (in
causal_conv1d_int8.py) of ``causal_conv1d_int8_ref``; one kernel serves both (IS_INT8).

One program computes a (BLOCK_L timesteps, BLOCK_D channels) tile; channels are
the contiguous axis of the token-major input, so every load is coalesced. Tap k
of output t reads input t + k - (width - 1), which comes from the conv state
when negative: continuing from a state and single-token decode (seqlen 1) are
the same code path. Programs of the first time block also write the new state
(the last width - 1 inputs), which may be the input state itself (in place).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_device, check_dtype, check_shape, next_pow2, pdl_launch_options, pdl_wait, quantize_int8

__all__ = ["causal_conv1d"]


@triton.jit
def _conv_output(acc, offs_d, d_mask, x_scale_ptr, w_scale_ptr, bias_ptr, IS_INT8: tl.constexpr,
                 W_PER_CHANNEL: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                 ACC: tl.constexpr = tl.float32):
    """The conv's fp32 sum over taps (acc: (rows, channels)) -> its fp32 output: dequantized
    (int8), + bias, SiLU. Shared by the conv kernel and the conv step in in_proj's epilogue,
    so the two round alike. ACC fp64 (exact numerics, kernels/numerics.py; int8 only, where
    the sum over taps is an exact integer): all of it in fp64, rounded once to fp32."""
    acc = acc.to(ACC)
    if IS_INT8:
        if W_PER_CHANNEL:
            w_scale = tl.load(w_scale_ptr + offs_d, mask=d_mask, other=0.0)
        else:
            w_scale = tl.load(w_scale_ptr)
        # The exact integer sum of x_q * w_q times x_scale * w_scale; the reference sums the
        # products of the dequantized values instead: equal to the last bits of ACC.
        acc = acc * (tl.load(x_scale_ptr).to(ACC) * w_scale.to(ACC))
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(ACC)[None, :]
    if SILU:
        acc = acc / (1.0 + tl.exp(-acc))
    return acc.to(tl.float32)


@triton.jit
def _causal_conv1d_kernel(
    x_ptr, w_ptr, bias_ptr, state_ptr, out_ptr, new_state_ptr,
    x_scale_ptr, w_scale_ptr, out_scale_ptr,
    L, D,
    stride_xb, stride_xl, stride_xd,
    stride_wd, stride_wk,
    stride_sb, stride_sd, stride_sk,
    stride_ob, stride_ol, stride_od,
    stride_nb, stride_nd, stride_nk,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_STATE: tl.constexpr, SILU: tl.constexpr,
    IS_INT8: tl.constexpr, W_PER_CHANNEL: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, USE_PDL: tl.constexpr,
    ACC: tl.constexpr = tl.float32,
):
    pid_b = tl.program_id(0)
    pid_l = tl.program_id(1)
    pid_d = tl.program_id(2)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = offs_d < D
    x_base = x_ptr + pid_b * stride_xb
    s_base = state_ptr + pid_b * stride_sb
    pdl_wait(USE_PDL)
    # The state holds past inputs; the reference concatenates it to x in x's
    # dtype, so a wider state (an fp32 cache beside fp16 activations) is rounded
    # to x's dtype first.
    x_ty = x_ptr.dtype.element_ty

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
            xv = tl.where(xm[:, None], xv, sv.to(x_ty))
        acc += xv.to(tl.float32) * w_k[None, :]
    acc = _conv_output(acc, offs_d, d_mask, x_scale_ptr, w_scale_ptr, bias_ptr, IS_INT8, W_PER_CHANNEL,
                       HAS_BIAS, SILU, ACC)
    if IS_INT8:
        res = quantize_int8(acc, tl.load(out_scale_ptr))
    else:
        res = acc.to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + pid_b * stride_ob + offs_l[:, None] * stride_ol + offs_d[None, :] * stride_od,
             res, mask=(offs_l < L)[:, None] & d_mask[None, :])

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
            nv = tl.where(xm_j[:, None], nv, sv_j.to(x_ty))
        # new_state may alias state (in-place update): every thread's reads of
        # the old state come before any write.
        tl.debug_barrier()
        tl.store(new_state_ptr + pid_b * stride_nb + offs_d[None, :] * stride_nd
                 + offs_j[:, None] * stride_nk, nv.to(new_state_ptr.dtype.element_ty),
                 mask=jm[:, None] & d_mask[None, :])


# Widths up to which a decode step of the conv can run in another kernel's epilogue
# (its taps are held as separate register tiles; every Mamba checkpoint has width 4).
CONV_STEP_MAX_WIDTH = 4


@triton.jit
def _tap_or_zeros(ptr, mask, k: tl.constexpr, LIMIT: tl.constexpr):
    """Entry k of a tap vector (ptr + k, masked) when k < LIMIT, else zeros (a tap the width lacks)."""
    if k < LIMIT:
        return tl.load(ptr + k, mask=mask, other=0)
    return tl.zeros(mask.shape, dtype=ptr.dtype.element_ty)


@triton.jit
def conv_step_load(state_ptr, w_ptr, offs_m, offs_n, M, D, WIDTH: tl.constexpr):
    """First half of one decode step of the int8 conv (WIDTH <= 4), for a (sequences,
    channels) tile of another kernel (in_proj's GEMV, whose epilogue produces the conv's
    input): the loads of the int8 state (contiguous (M, D, WIDTH - 1)) and of the weight
    (contiguous (D, WIDTH)). They are issued early (before that kernel's ``pdl_wait`` and
    main loop) and used only in ``conv_step_finish``, so their latency hides behind the
    kernel's own work. Returns the state taps s0..s2 as (rows, channels) tiles and the
    weight taps w0..w3 as (BLOCK_N,) vectors, zeros beyond the width. Columns n >= D load
    nothing."""
    cm = offs_n < D
    mm = (offs_m[:, None] < M) & cm[None, :]
    s_base = state_ptr + offs_m[:, None] * (D * (WIDTH - 1)) + offs_n[None, :] * (WIDTH - 1)
    w_base = w_ptr + offs_n * WIDTH
    return (_tap_or_zeros(s_base, mm, 0, WIDTH - 1), _tap_or_zeros(s_base, mm, 1, WIDTH - 1),
            _tap_or_zeros(s_base, mm, 2, WIDTH - 1),
            _tap_or_zeros(w_base, cm, 0, WIDTH), _tap_or_zeros(w_base, cm, 1, WIDTH),
            _tap_or_zeros(w_base, cm, 2, WIDTH), _tap_or_zeros(w_base, cm, 3, WIDTH))


@triton.jit
def conv_step_finish(x_q, taps, offs_m, offs_n, M, D, state_ptr,
                     x_scale_ptr, w_scale_ptr, bias_ptr, out_scale_ptr,
                     WIDTH: tl.constexpr, W_PER_CHANNEL: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Second half: x_q (rows, channels) int8 is the step's new input, taps what
    ``conv_step_load`` returned. The taps are summed in the conv kernel's order (state
    entries oldest first, then x_q), then ``_conv_output`` and the int8 quantization, as
    ``_causal_conv1d_kernel`` does. The state moves one step in place
    (x_q its newest entry). Returns the tile with columns n < D replaced by the conv's
    int8 output u (columns n >= D keep x_q)."""
    s0, s1, s2, w0, w1, w2, w3 = taps
    cm = offs_n < D
    mm = (offs_m[:, None] < M) & cm[None, :]
    acc = tl.zeros(x_q.shape, dtype=tl.float32)
    acc += s0.to(tl.float32) * w0.to(tl.float32)[None, :]
    if WIDTH > 2:
        acc += s1.to(tl.float32) * w1.to(tl.float32)[None, :]
    if WIDTH > 3:
        acc += s2.to(tl.float32) * w2.to(tl.float32)[None, :]
    if WIDTH == 2:
        w_last = w1
    elif WIDTH == 3:
        w_last = w2
    else:
        w_last = w3
    acc += x_q.to(tl.float32) * w_last.to(tl.float32)[None, :]
    acc = _conv_output(acc, offs_n, cm, x_scale_ptr, w_scale_ptr, bias_ptr, True, W_PER_CHANNEL, HAS_BIAS, True)
    u = quantize_int8(acc, tl.load(out_scale_ptr))
    # Every thread has its state entries (loaded at the start) before any is overwritten:
    # a tile element may live in several threads.
    tl.debug_barrier()
    s_base = state_ptr + offs_m[:, None] * (D * (WIDTH - 1)) + offs_n[None, :] * (WIDTH - 1)
    if WIDTH > 2:
        tl.store(s_base, s1, mask=mm)
    if WIDTH > 3:
        tl.store(s_base + 1, s2, mask=mm)
    tl.store(s_base + (WIDTH - 2), x_q, mask=mm)
    return tl.where(cm[None, :], u, x_q)


# Set by benchmarks/small_kernels_sweep.py to sweep a decode step's tile; None in normal use.
_DECODE_OVERRIDE: dict | None = None


def launch_causal_conv1d(x, weight, bias, conv_state, out, new_state, silu, int8_scales=None, exact=False):
    """Launches the kernel on checked arguments (shared by both wrappers).
    int8_scales: (x_scale, w_scale, out_scale) fp32 for int8 activations, else None.
    exact: the output in fp64 (int8 only; kernels/numerics.py)."""
    batch, seqlen, dim = x.shape
    width = weight.shape[1]
    st = conv_state if conv_state is not None else new_state   # dummy pointer when absent
    if int8_scales is None:
        xs = ws = os_ = out           # unused on the float path; any pointer will do
        per_ch = False
    else:
        xs, ws, os_ = int8_scales
        per_ch = ws.numel() > 1
    # Tiles sized to stay in registers (larger ones spill: checked in the SASS).
    num_warps = 4
    if seqlen == 1:   # a decode step: no masked-off time rows, more programs
        block_l, block_d = 1, 128
        if _DECODE_OVERRIDE:
            block_d, num_warps = _DECODE_OVERRIDE["BLOCK_D"], _DECODE_OVERRIDE["num_warps"]
    else:
        block_l = min(32, max(8, next_pow2(seqlen)))
        block_d = 128 if block_l > 8 else 256
    grid = (batch, triton.cdiv(max(seqlen, 1), block_l), triton.cdiv(dim, block_d))
    _causal_conv1d_kernel[grid](
        x, weight, bias if bias is not None else weight, st, out, new_state,
        xs, ws, os_,
        seqlen, dim,
        x.stride(0), x.stride(1), x.stride(2),
        weight.stride(0), weight.stride(1),
        st.stride(0), st.stride(1), st.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        new_state.stride(0), new_state.stride(1), new_state.stride(2),
        WIDTH=width, HAS_BIAS=bias is not None, HAS_STATE=conv_state is not None, SILU=silu,
        IS_INT8=int8_scales is not None, W_PER_CHANNEL=per_ch,
        BLOCK_L=block_l, BLOCK_D=block_d, BLOCK_S=next_pow2(width - 1), ACC=tl.float64 if exact else tl.float32,
        num_warps=num_warps, **pdl_launch_options(x.device),
    )


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    conv_state: torch.Tensor | None = None,
    activation: str | None = "silu",
    state_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (batch, seqlen, dim) fp16/bf16/fp32 (any strides: the x half of in_proj's
    output is read in place); weight: (dim, width); bias: (dim,) or None;
    conv_state: (batch, dim, width - 1) of past inputs, or None (zeros);
    activation: "silu" or None. Math in fp32.
    Returns out (batch, seqlen, dim) in x's dtype and the new state (batch, dim,
    width - 1): a new tensor in x's dtype, or ``state_out`` when given (any float
    dtype; it may be ``conv_state`` itself: the state is updated in place)."""
    op = "causal_conv1d"
    check_device(op, x, weight, bias, conv_state, state_out)
    floats = (torch.float16, torch.bfloat16, torch.float32)
    check_dtype(op, "x", x, floats)
    check_dtype(op, "weight", weight, floats)
    if activation not in ("silu", None):
        raise ValueError(f"{op}: unsupported activation {activation!r} (silu or None)")
    if x.dim() != 3:
        raise ValueError(f"{op}: x must be (batch, seqlen, dim), got shape {tuple(x.shape)}")
    batch, seqlen, dim = x.shape
    if weight.dim() != 2 or weight.shape[0] != dim or weight.shape[1] < 2:
        raise ValueError(f"{op}: weight must be (dim={dim}, width>=2), got shape {tuple(weight.shape)}")
    width = weight.shape[1]
    if conv_state is not None:
        check_dtype(op, "conv_state", conv_state, floats)
        check_shape(op, "conv_state", conv_state, (batch, dim, width - 1))
    if bias is not None:
        check_shape(op, "bias", bias, (dim,))
    if state_out is not None:
        check_dtype(op, "state_out", state_out, floats)
        check_shape(op, "state_out", state_out, (batch, dim, width - 1))
        new_state = state_out
    else:
        new_state = torch.empty(batch, dim, width - 1, dtype=x.dtype, device=x.device)
    out = torch.empty(batch, seqlen, dim, dtype=x.dtype, device=x.device)
    launch_causal_conv1d(x, weight, bias, conv_state, out, new_state, activation == "silu")
    return out, new_state
