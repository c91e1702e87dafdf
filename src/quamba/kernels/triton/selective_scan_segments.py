"""One long sequence scanned as parallel segments, then corrected.

At one sequence the chunked prefill scan has too few programs for the GPU on the narrower
models (mamba-130m: 96 of 16 channels; with more programs its loop runs faster per token, see
docs/kernels.md). So ``selective_scan.py`` may cut a sequence of L steps into S segments of
``seg_len`` steps and scan them as S rows of one batch, each from a zero state (the first from
the given h0), recording each segment's last state ``h_end[s]`` and its sum of dt
``dt_sum[s]``. The state is affine in its start, so the true state entering segment s is

    H_1 = h_end[0],   H_{s+1} = exp(A * dt_sum[s]) * H_s + h_end[s]

(``_combine_kernel``: a short sequential loop per state entry; its last value is the final
state), and the true output of step t in segment s >= 1 adds what H_s contributes:

    y_t += gate_t * sum_n C_tn * exp(A_n * (dt_1 + ... + dt_t)) * H_sn

(``_correct_kernel``, the sum of dt running from the segment's start). The correction costs
an exp per state entry and step, like the scan, but no sequential chain; the scan's segments
are exactly as in a batch. Twin: the same reference as the whole scan
(``selective_scan_ref``/``selective_scan_int8_ref``); y is rounded to its dtype twice
(after the segment's scan and after the correction).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import next_pow2
from ._scan_math import output_gate, step_dt

__all__ = ["combine_segments", "correct_segments"]

# (BLOCK_D, CHUNK, num_warps) of the correction kernel.
_CORRECT_CONFIG = (32, 8, 4)


@triton.jit
def _combine_kernel(h_end_ptr, dt_sum_ptr, A_ptr, final_ptr, SEGMENTS, DIM, NSTATE, DT_BLOCKS,
                    stride_ad, stride_an, stride_fd, stride_fn, BLOCK: tl.constexpr):
    """h_end (S, DIM, NSTATE) fp32 in, the state entering each segment out (in place: entry
    s >= 1 becomes H_s); the final state into final (any float dtype). A segment's sum of dt
    is dt_sum[s, DT_BLOCKS]."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < DIM * NSTATE
    d, n = offs // NSTATE, offs % NSTATE
    A = tl.load(A_ptr + d * stride_ad + n * stride_an, mask=mask, other=0.0).to(tl.float32) * 1.4426950408889634
    h = tl.load(h_end_ptr + offs, mask=mask, other=0.0)
    for s in range(1, SEGMENTS):
        decay = tl.exp2(A * tl.load(dt_sum_ptr + (s * (DT_BLOCKS + 1) + DT_BLOCKS) * DIM + d, mask=mask, other=0.0))
        h_end = tl.load(h_end_ptr + s * DIM * NSTATE + offs, mask=mask, other=0.0)
        tl.store(h_end_ptr + s * DIM * NSTATE + offs, h, mask=mask)
        h = decay * h + h_end
    tl.store(final_ptr + d * stride_fd + n * stride_fn, h.to(final_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _correct_kernel(y_ptr, dt_ptr, z_ptr, C_ptr, A_ptr, dt_bias_ptr, h_in_ptr, dt_sum_ptr,
                    dt_scale_ptr, C_scale_ptr, z_scale_ptr,
                    L, SEG_LEN, DIM, NSTATE, DT_BLOCKS,
                    stride_yl, stride_yd, stride_tl, stride_td, stride_zl, stride_zd, stride_cl, stride_cn,
                    stride_ad, stride_an,
                    IS_INT8: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr,
                    DT_SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                    CHUNK: tl.constexpr, DT_EVERY: tl.constexpr):
    """Adds segment (program_id(0) + 1)'s start state's contribution to its y, for a block of
    BLOCK_D channels and the DT_EVERY steps of block program_id(2) (where the segment's sum
    of dt so far is dt_sum[segment, block]), CHUNK steps at a time (time, channel, state) tiles."""
    seg = tl.program_id(0) + 1
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, CHUNK)
    dm, nm = offs_d < DIM, offs_n < NSTATE
    # (state, channel) tiles: with the state as the leading axis of the (state, time, channel)
    # products, each thread holds all of a (time, channel)'s state entries and sums them in
    # its registers (state last put lanes on it: a shuffle tree per output, 5x slower).
    sd_mask = nm[:, None] & dm[None, :]
    A = tl.load(A_ptr + offs_d[None, :] * stride_ad + offs_n[:, None] * stride_an,
                mask=sd_mask, other=0.0).to(tl.float32) * 1.4426950408889634
    h_in = tl.load(h_in_ptr + seg * DIM * NSTATE + offs_d[None, :] * NSTATE + offs_n[:, None], mask=sd_mask, other=0.0)
    dtb = tl.zeros((1, BLOCK_D), dtype=tl.float32)
    if HAS_DT_BIAS:
        dtb = tl.load(dt_bias_ptr + offs_d, mask=dm, other=0.0).to(tl.float32)[None, :]
    dt_s, C_s, z_s = tl.load(dt_scale_ptr), tl.load(C_scale_ptr), tl.load(z_scale_ptr)
    block = tl.program_id(2)
    t_start = seg * SEG_LEN + block * DT_EVERY
    t_stop = tl.minimum(tl.minimum(t_start + DT_EVERY, seg * SEG_LEN + SEG_LEN), L)
    # The sum of dt since the segment's start, as the scan's pass left it before this block.
    dt_run = tl.load(dt_sum_ptr + (seg * (DT_BLOCKS + 1) + block) * DIM + offs_d, mask=dm, other=0.0)
    for t0 in range(t_start, t_stop, CHUNK):
        t = t0 + offs_t
        tm = t < t_stop
        td = tm[:, None] & dm[None, :]
        dt = step_dt(tl.load(dt_ptr + t[:, None] * stride_tl + offs_d[None, :] * stride_td, mask=td, other=0),
                     dtb, dt_s, IS_INT8, HAS_DT_BIAS, DT_SOFTPLUS)
        dt = tl.where(td, dt, 0.0)
        cum = dt_run[None, :] + tl.cumsum(dt, axis=0)                                # (CHUNK, BLOCK_D)
        dt_run = tl.sum(tl.where((offs_t == CHUNK - 1)[:, None], cum, 0.0), axis=0)  # exact: adds zeros
        Cc = tl.load(C_ptr + t[None, :] * stride_cl + offs_n[:, None] * stride_cn,
                     mask=nm[:, None] & tm[None, :], other=0).to(tl.float32)         # (BLOCK_N, CHUNK)
        if IS_INT8:
            Cc = Cc * C_s
        decay = tl.exp2(cum[None, :, :] * A[:, None, :])                             # (BLOCK_N, CHUNK, BLOCK_D)
        corr = tl.sum(decay * h_in[:, None, :] * Cc[:, :, None], axis=0)
        if HAS_Z:
            corr = corr * output_gate(tl.load(z_ptr + t[:, None] * stride_zl + offs_d[None, :] * stride_zd,
                                              mask=td, other=0), z_s, IS_INT8)
        y_p = y_ptr + t[:, None] * stride_yl + offs_d[None, :] * stride_yd
        y = tl.load(y_p, mask=td, other=0.0).to(tl.float32) + corr
        tl.store(y_p, y.to(y_ptr.dtype.element_ty), mask=td)


def combine_segments(h_end: torch.Tensor, dt_sum: torch.Tensor, A: torch.Tensor, final: torch.Tensor) -> None:
    """h_end (S, D, N) fp32 -> in place, entry s >= 1 the state entering segment s; the
    state after the last segment into ``final`` (D, N). dt_sum: (S, blocks + 1, D), the
    segments' whole sums last."""
    segments, dim, nstate = h_end.shape
    block = 256
    _combine_kernel[(triton.cdiv(dim * nstate, block),)](
        h_end, dt_sum, A, final, segments, dim, nstate, dt_sum.shape[1] - 1, A.stride(0), A.stride(1),
        final.stride(0), final.stride(1), BLOCK=block)


def correct_segments(y, dt, z, C, A, dt_bias, h_in, dt_sum, scales, seg_len: int, dt_every: int, is_int8: bool,
                     delta_softplus: bool) -> None:
    """Adds to y (L, D) what each segment's start state h_in[s] (s >= 1) contributes. dt, z:
    (L, D); C: (L, N); dt_sum: (S, blocks + 1, D), each segment's sums of dt before each
    dt_every-step block; scales: (dt_scale, C_scale, z_scale) (any pointers on the float path)."""
    length, dim = y.shape
    segments, nstate = h_in.shape[0], A.shape[1]
    if segments < 2:
        return
    zz = z if z is not None else dt
    block_d, chunk, num_warps = _CORRECT_CONFIG
    blocks = dt_sum.shape[1] - 1
    _correct_kernel[(segments - 1, triton.cdiv(dim, block_d), blocks)](
        y, dt, zz, C, A, dt_bias if dt_bias is not None else A, h_in, dt_sum, *scales,
        length, seg_len, dim, nstate, blocks,
        y.stride(0), y.stride(1), dt.stride(0), dt.stride(1), zz.stride(0), zz.stride(1), C.stride(0), C.stride(1),
        A.stride(0), A.stride(1),
        IS_INT8=is_int8, HAS_Z=z is not None, HAS_DT_BIAS=dt_bias is not None, DT_SOFTPLUS=delta_softplus,
        BLOCK_D=block_d, BLOCK_N=next_pow2(nstate), CHUNK=chunk, DT_EVERY=dt_every, num_warps=num_warps)
