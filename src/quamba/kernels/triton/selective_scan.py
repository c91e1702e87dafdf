"""Selective scan (Mamba-1 SSM) in Triton: int8 inputs (W8A8 path) or float inputs.

Twins: ``selective_scan_int8`` of ``selective_scan_int8_ref`` and
``selective_scan`` of ``selective_scan_ref``; each kernel serves both (IS_INT8).

Each step: dt = softplus(dt + dt_bias), h = exp(dt * A) * h + dt * u * B,
y = <h, C> + D * u, y *= silu(z). Programs are (batch, block of channels); each
walks the sequence in chunks of timesteps, the state in fp32 registers for the
whole sequence (never rounded), the next chunk's inputs loading while this one
is computed. Everything that does not depend on the state (dequant, softplus,
dt * u, SiLU(z), D * u) is done for a whole chunk at once. Two kernels:

* ``_selective_scan_chunked_kernel`` (prefill): a chunk of steps at once. The
  steps are affine maps of the state, h -> a_t * h + b_t with a_t = exp(dt_t A)
  and b_t = dt_t u_t B_t, built as (chunk, state, channel) tiles and composed
  along time by ``tl.associative_scan`` into h_t = cumA_t * h_in + cumB_t; the
  carried state enters once per chunk. The layout keeps each thread's
  timesteps in its registers (see the kernel's docstring).
* ``_selective_scan_kernel`` (a decode step, seqlen 1, in one launch; and
  prefill when ``_PREFILL_IMPL = "serial"``): an unrolled loop, one step after
  another.

The int8 scan can also compute dt itself from dt_proj's int8 input and weight
(``dt_low_q``, ``dt_w_q``): an exact int32 product per channel, dequantized and
requantized as ``int8_linear_quant``'s epilogue does, so dt, y and the state are
bit-identical to running dt_proj as its own launch, minus the launch.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from ._common import (check_device, check_dtype, check_shape, interpret_mode, next_pow2, pdl_launch_options,
                      pdl_wait, quantize_int8, scalar_scale, wide_interpreter_tiles)
from ._scan_math import output_gate, step_dt
from .int8_linear import int8_linear_quant
from .selective_scan_segments import combine_segments, correct_segments

__all__ = ["selective_scan_int8", "selective_scan"]


@triton.jit
def _compose_steps(a_first, b_first, a_then, b_then):
    # Two affine maps of the state, applied in time order: h -> a_then * (a_first * h + b_first) + b_then.
    return a_first * a_then, a_then * b_first + b_then


@triton.jit
def _states_in_order(dA, dBu, offs_t, CHUNK: tl.constexpr):
    """The running offset of tl.associative_scan((dA, dBu), axis=0, _compose_steps), as the
    interpreter computes it: one step after another, each the combine's own expression
    (a_then * b_first + b_then), so the same values. The running product of dA is not
    needed (the carried state is folded into the first step's offset). The interpreter runs
    associative_scan one element at a time in Python; here each step is a few whole-tile
    numpy operations."""
    acc = tl.zeros((1, dA.shape[1], dA.shape[2], dA.shape[3]), tl.float32)
    states = tl.zeros(dA.shape, tl.float32)
    for j in tl.static_range(CHUNK):
        sel = (offs_t == j)[:, None, None, None]
        a_j = tl.sum(tl.where(sel, dA, 0.0), axis=0, keep_dims=True)     # exact: adds zeros only
        b_j = tl.sum(tl.where(sel, dBu, 0.0), axis=0, keep_dims=True)
        acc = a_j * acc + b_j                                            # after zero: b_0 exactly
        states = tl.where(sel, acc, states)
    return states


@triton.jit
def _dt_requant(acc, lw_scale, dt_s):
    """dt_proj's int32 sums -> int8 dt, as int8_linear_quant's epilogue does it:
    acc.to(fp32) * (x_scale * w_scale), then quantize_int8 with dt's scale. The
    int32 sums are exact, so the result equals that kernel's output bit for bit."""
    return quantize_int8(acc.to(tl.float32) * lw_scale, dt_s)


@triton.jit
def _dt_proj_quant(lq_p, w_p, t0, L, R, offs_t, offs_d, dm,
                   stride_ll, stride_lr, stride_wd, stride_wr, lw_scale, dt_s,
                   T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr):
    """int8 dt for timesteps t0 + offs_t and channels offs_d, a (T, BLOCK_D) tile,
    from dt_proj's int8 input rows lq and weight rows W: a broadcast product
    over K blocks of BLOCK_R (small tiles: a decode step)."""
    offs_r = tl.arange(0, BLOCK_R)
    tm = (t0 + offs_t) < L
    acc = tl.zeros((T, BLOCK_D), dtype=tl.int32)
    for r0 in range(0, R, BLOCK_R):
        rr = r0 + offs_r
        rm = rr < R
        x = tl.load(lq_p + (t0 + offs_t)[:, None] * stride_ll + rr[None, :] * stride_lr,
                    mask=tm[:, None] & rm[None, :], other=0)
        w = tl.load(w_p + offs_d[:, None] * stride_wd + rr[None, :] * stride_wr,
                    mask=dm[:, None] & rm[None, :], other=0)
        acc += tl.sum(x.to(tl.int32)[:, None, :] * w.to(tl.int32)[None, :, :], axis=2)
    return _dt_requant(acc, lw_scale, dt_s)


@triton.jit
def _chunk_inputs(u, dt, Bc, Cc, z, dt_bias, u_s, dt_s, B_s, C_s, z_s,
                  IS_INT8: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr,
                  DT_SOFTPLUS: tl.constexpr, ACC: tl.constexpr = tl.float32):
    """A chunk's raw input tiles -> u, dt (bias added, softplus applied), B, C, and the
    output gate SiLU(z) (u, unused, without z), in ACC (fp32; fp64 in exact numerics, where
    the int8 inputs times their fp32 scales are exact). dt_bias comes broadcastable against dt."""
    u = u.to(ACC)
    Bc = Bc.to(ACC)
    Cc = Cc.to(ACC)
    if IS_INT8:
        u = u * u_s.to(ACC)
        Bc = Bc * B_s.to(ACC)
        Cc = Cc * C_s.to(ACC)
    gate = u
    if HAS_Z:
        gate = output_gate(z, z_s, IS_INT8, ACC)
    return u, step_dt(dt, dt_bias, dt_s, IS_INT8, HAS_DT_BIAS, DT_SOFTPLUS, ACC), Bc, Cc, gate


@triton.jit
def _selective_scan_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, h0_ptr, y_ptr, hT_ptr,
    lq_ptr, dtw_ptr,
    u_scale_ptr, dt_scale_ptr, B_scale_ptr, C_scale_ptr, z_scale_ptr, lq_scale_ptr, dtw_scale_ptr,
    L, DIM, NSTATE, R,
    stride_ub, stride_ul, stride_ud,
    stride_tb, stride_tl, stride_td,
    stride_ad, stride_an,
    stride_bb, stride_bl, stride_bn,
    stride_cb, stride_cl, stride_cn,
    stride_zb, stride_zl, stride_zd,
    stride_hb, stride_hd, stride_hn,
    stride_yb, stride_yl, stride_yd,
    stride_fb, stride_fd, stride_fn,
    stride_lb, stride_ll, stride_lr,
    stride_wd, stride_wr,
    IS_INT8: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr,
    HAS_H0: tl.constexpr, DT_SOFTPLUS: tl.constexpr,
    FUSED_DT: tl.constexpr, DTW_PER_CHANNEL: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr, EARLY_STATE: tl.constexpr,
    USE_PDL: tl.constexpr, DTW_EARLY: tl.constexpr = False, ACC: tl.constexpr = tl.float32,
    TRIGGER_FIRST: tl.constexpr = False,
):
    """The serial scan: one timestep after another, the state (BLOCK_D, BLOCK_N).

    ACC: the arithmetic's dtype, fp32, or fp64 in exact numerics (kernels/numerics.py; A then
    comes in fp64): y and the state are rounded to fp32, then to their dtypes (as the reference's
    fp32 results are cast).

    DTW_EARLY (FUSED_DT, BLOCK_R >= R): the program's dt_proj weight rows are loaded
    whole before ``pdl_wait`` (no kernel writes a weight), so dt_proj after the wait is one
    load of dt_low and one product instead of a loop of dependent loads."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    dm = offs_d < DIM
    nm = offs_n < NSTATE
    dn_mask = dm[:, None] & nm[None, :]
    # The model's parameters (A, D, dt_bias, the scales) are read before pdl_wait: no kernel
    # writes them, so they load while the kernel before still runs. So is the initial state
    # with EARLY_STATE (the caller's promise that no kernel that may still run writes it: in a
    # decode step, x_proj and in_proj; the state's writer is this scan a token earlier).
    # Padded state columns get A = 0 and B = 0, so they stay exactly zero.
    A = tl.load(A_ptr + offs_d[:, None] * stride_ad + offs_n[None, :] * stride_an,
                mask=dn_mask, other=0.0).to(ACC)
    h_p = h0_ptr + pid_b * stride_hb + offs_d[:, None] * stride_hd + offs_n[None, :] * stride_hn
    if HAS_H0 and EARLY_STATE:
        h = tl.load(h_p, mask=dn_mask, other=0.0).to(ACC)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=dm, other=0.0).to(ACC)
    dtb = tl.zeros((BLOCK_D, 1), dtype=ACC)
    if HAS_DT_BIAS:
        dtb = tl.load(dt_bias_ptr + offs_d, mask=dm, other=0.0).to(ACC)[:, None]
    # Unused on the float path (they point at A there).
    u_s, dt_s = tl.load(u_scale_ptr), tl.load(dt_scale_ptr)
    B_s, C_s, z_s = tl.load(B_scale_ptr), tl.load(C_scale_ptr), tl.load(z_scale_ptr)
    if FUSED_DT:
        lq_p = lq_ptr + pid_b * stride_lb
        if DTW_EARLY:
            offs_r = tl.arange(0, BLOCK_R)
            dtw = tl.load(dtw_ptr + offs_d[:, None] * stride_wd + offs_r[None, :] * stride_wr,
                          mask=dm[:, None] & (offs_r < R)[None, :], other=0)
        if DTW_PER_CHANNEL:
            lw_s = tl.load(lq_scale_ptr) * tl.load(dtw_scale_ptr + offs_d, mask=dm, other=0.0)[None, :]
        else:
            lw_s = tl.load(lq_scale_ptr) * tl.load(dtw_scale_ptr)
    pdl_wait(USE_PDL, TRIGGER_FIRST)
    if HAS_H0 and not EARLY_STATE:
        h = tl.load(h_p, mask=dn_mask, other=0.0).to(ACC)
    if not HAS_H0:
        h = tl.zeros((BLOCK_D, BLOCK_N), dtype=ACC)

    # Inputs are read in chunks of CHUNK timesteps as (BLOCK_D, CHUNK) tiles, the
    # next chunk's loads issued before this chunk's arithmetic (a prefetch
    # distance of CHUNK steps). Everything that does not depend on the state
    # (dequant, softplus, dt*u, silu(z), D*u) is computed for the whole chunk at
    # once; the unrolled inner loop then carries only h = dA*h + dBu and <h, C>.
    offs_t = tl.arange(0, CHUNK)
    u_p = u_ptr + pid_b * stride_ub + offs_d[:, None] * stride_ud + offs_t[None, :] * stride_ul
    t_p = dt_ptr + pid_b * stride_tb + offs_d[:, None] * stride_td + offs_t[None, :] * stride_tl
    z_p = z_ptr + pid_b * stride_zb + offs_d[:, None] * stride_zd + offs_t[None, :] * stride_zl
    y_p = y_ptr + pid_b * stride_yb + offs_d[:, None] * stride_yd + offs_t[None, :] * stride_yl
    b_p = B_ptr + pid_b * stride_bb + offs_t[:, None] * stride_bl + offs_n[None, :] * stride_bn
    c_p = C_ptr + pid_b * stride_cb + offs_t[:, None] * stride_cl + offs_n[None, :] * stride_cn

    dt_mask = dm[:, None] & (offs_t < L)[None, :]
    tn_mask = (offs_t < L)[:, None] & nm[None, :]
    u_n = tl.load(u_p, mask=dt_mask, other=0)
    if not FUSED_DT:
        t_n = tl.load(t_p, mask=dt_mask, other=0)
    b_n = tl.load(b_p, mask=tn_mask, other=0)
    c_n = tl.load(c_p, mask=tn_mask, other=0)
    z_n = u_n
    if HAS_Z:
        z_n = tl.load(z_p, mask=dt_mask, other=0)
    for t0 in range(0, L, CHUNK):
        if FUSED_DT and DTW_EARLY:
            lq = tl.load(lq_p + (t0 + offs_t)[:, None] * stride_ll + offs_r[None, :] * stride_lr,
                         mask=((t0 + offs_t) < L)[:, None] & (offs_r < R)[None, :], other=0)
            prod = tl.sum(lq.to(tl.int32)[:, None, :] * dtw.to(tl.int32)[None, :, :], axis=2)
            t_n = tl.trans(_dt_requant(prod, lw_s, dt_s))
        elif FUSED_DT:
            t_n = tl.trans(_dt_proj_quant(lq_p, dtw_ptr, t0, L, R, offs_t, offs_d, dm,
                                          stride_ll, stride_lr, stride_wd, stride_wr, lw_s, dt_s,
                                          CHUNK, BLOCK_D, BLOCK_R))
        u, dt, Bc, Cc, gate = _chunk_inputs(u_n, t_n, b_n, c_n, z_n, dtb, u_s, dt_s, B_s, C_s, z_s,
                                            IS_INT8, HAS_Z, HAS_DT_BIAS, DT_SOFTPLUS, ACC)
        t1 = t0 + CHUNK
        nd_mask = dm[:, None] & ((t1 + offs_t) < L)[None, :]
        nn_mask = ((t1 + offs_t) < L)[:, None] & nm[None, :]
        u_n = tl.load(u_p + t1 * stride_ul, mask=nd_mask, other=0)
        if not FUSED_DT:
            t_n = tl.load(t_p + t1 * stride_tl, mask=nd_mask, other=0)
        b_n = tl.load(b_p + t1 * stride_bl, mask=nn_mask, other=0)
        c_n = tl.load(c_p + t1 * stride_cl, mask=nn_mask, other=0)
        if HAS_Z:
            z_n = tl.load(z_p + t1 * stride_zl, mask=nd_mask, other=0)

        du = dt * u                                               # (BLOCK_D, CHUNK)
        y = tl.zeros((BLOCK_D, CHUNK), dtype=ACC)
        for j in tl.static_range(CHUNK):
            # Column / row j of the chunk tiles, by an exact masked sum.
            sel_t = offs_t == j
            dt_j = tl.sum(tl.where(sel_t[None, :], dt, 0.0), axis=1)     # (BLOCK_D,)
            du_j = tl.sum(tl.where(sel_t[None, :], du, 0.0), axis=1)
            B_j = tl.sum(tl.where(sel_t[:, None], Bc, 0.0), axis=0)      # (BLOCK_N,)
            C_j = tl.sum(tl.where(sel_t[:, None], Cc, 0.0), axis=0)
            h_new = tl.exp(dt_j[:, None] * A) * h + du_j[:, None] * B_j[None, :]
            h = tl.where(t0 + j < L, h_new, h)                   # past the end: keep the state
            y_j = tl.sum(h * C_j[None, :], axis=1)
            y = tl.where(sel_t[None, :], y_j[:, None], y)
        if HAS_D:
            y = y + u * Dv[:, None]
        if HAS_Z:
            y = y * gate
        tl.store(y_p + t0 * stride_yl, y.to(tl.float32).to(y_ptr.dtype.element_ty),
                 mask=dm[:, None] & ((t0 + offs_t) < L)[None, :])

    tl.debug_barrier()   # hT may alias h0 (in-place state update): all reads of h0 first
    tl.store(hT_ptr + pid_b * stride_fb + offs_d[:, None] * stride_fd + offs_n[None, :] * stride_fn,
             h.to(tl.float32).to(hT_ptr.dtype.element_ty), mask=dn_mask)


@triton.jit
def _selective_scan_chunked_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, h0_ptr, y_ptr, hT_ptr,
    lq_ptr, dtw_ptr, dtsum_ptr,
    u_scale_ptr, dt_scale_ptr, B_scale_ptr, C_scale_ptr, z_scale_ptr, lq_scale_ptr, dtw_scale_ptr,
    L, DIM, NSTATE, R, L_TOTAL, DTSUM_BLOCKS,
    stride_ub, stride_ul, stride_ud,
    stride_tb, stride_tl, stride_td,
    stride_ad, stride_an,
    stride_bb, stride_bl, stride_bn,
    stride_cb, stride_cl, stride_cn,
    stride_zb, stride_zl, stride_zd,
    stride_hb, stride_hd, stride_hn,
    stride_yb, stride_yl, stride_yd,
    stride_fb, stride_fd, stride_fn,
    stride_lb, stride_ll, stride_lr,
    stride_wd, stride_wr,
    IS_INT8: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr,
    HAS_H0: tl.constexpr, DT_SOFTPLUS: tl.constexpr,
    FUSED_DT: tl.constexpr, DTW_PER_CHANNEL: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr, STATE_ROWS: tl.constexpr,
    SCAN_IN_ORDER: tl.constexpr, USE_PDL: tl.constexpr, SEGMENTED: tl.constexpr = False,
    DTSUM_EVERY: tl.constexpr = 64,
):
    """The chunked scan: a chunk of CHUNK timesteps at a time, by an associative scan.

    SEGMENTED: the batch rows are the L-step segments of one sequence of L_TOTAL steps (the
    last one shorter), each scanned from a zero state (the first from h0); hT gets each
    segment's last state, and dtsum (segments, DTSUM_BLOCKS + 1, DIM) the segment's sums of
    dt before each DTSUM_EVERY-step block and in all, for ``selective_scan_segments``.

    The state index n is split as n = row * COLS + col, and the state is held as
    a (STATE_ROWS, BLOCK_D, COLS) tile; a chunk's steps are (CHUNK, STATE_ROWS,
    BLOCK_D, COLS) tiles. With time and rows as the leading axes, Triton's
    default layout puts lanes and warps on channels and columns (when BLOCK_D *
    COLS >= 32 * num_warps) and keeps time and rows in each thread's registers:
    the scan along time then needs no shuffles or shared memory, and the sum
    over the state for y starts in registers (more rows: fewer shuffles, but
    fewer threads)."""
    COLS: tl.constexpr = BLOCK_N // STATE_ROWS
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dm = offs_d < DIM
    n_rc = tl.arange(0, STATE_ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :]   # (ROWS, COLS)
    nm_rc = n_rc < NSTATE
    n3 = n_rc[:, None, :]                                                            # (ROWS, 1, COLS)
    d3 = offs_d[None, :, None]
    st_mask = nm_rc[:, None, :] & dm[None, :, None]
    if SEGMENTED:
        L = tl.minimum(L, L_TOTAL - pid_b * L)
    pdl_wait(USE_PDL)

    # Padded state entries get A = 0 and B = 0, so they stay exactly zero. A is
    # scaled by log2(e) once here, so each step's decay is a single exp2.
    A = tl.load(A_ptr + d3 * stride_ad + n3 * stride_an, mask=st_mask, other=0.0).to(tl.float32)
    A = A * 1.4426950408889634
    # The state is carried as (1, ROWS, BLOCK_D, COLS), its shape within the step
    # tiles, so the loop keeps it in their layout (a 3-D state was converted to
    # and from that layout through shared memory every chunk).
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * stride_hb + d3 * stride_hd + n3 * stride_hn,
                    mask=st_mask, other=0.0).to(tl.float32)[None, :, :, :]
        if SEGMENTED:   # the segments after the first start from zero (all read h0: stride_hb = 0)
            h = tl.where(pid_b == 0, h, 0.0)
    else:
        h = tl.zeros((1, STATE_ROWS, BLOCK_D, COLS), dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=dm, other=0.0).to(tl.float32)
    dt_total = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dtb = tl.zeros((1, BLOCK_D), dtype=tl.float32)
    if HAS_DT_BIAS:
        dtb = tl.load(dt_bias_ptr + offs_d, mask=dm, other=0.0).to(tl.float32)[None, :]
    # Unused on the float path (they point at A there).
    u_s, dt_s = tl.load(u_scale_ptr), tl.load(dt_scale_ptr)
    B_s, C_s, z_s = tl.load(B_scale_ptr), tl.load(C_scale_ptr), tl.load(z_scale_ptr)
    offs_t = tl.arange(0, CHUNK)
    if FUSED_DT:
        if DTW_PER_CHANNEL:
            lw_s = tl.load(lq_scale_ptr) * tl.load(dtw_scale_ptr + offs_d, mask=dm, other=0.0)[None, :]
        else:
            lw_s = tl.load(lq_scale_ptr) * tl.load(dtw_scale_ptr)
        # dt_proj's weight rows for this block of channels, loaded once as the
        # (BLOCK_R >= R, BLOCK_D) right operand of a tensor-core product per chunk.
        offs_r = tl.arange(0, BLOCK_R)
        dtw = tl.load(dtw_ptr + offs_r[:, None] * stride_wr + offs_d[None, :] * stride_wd,
                      mask=(offs_r < R)[:, None] & dm[None, :], other=0)
        l_p = lq_ptr + pid_b * stride_lb + offs_t[:, None] * stride_ll + offs_r[None, :] * stride_lr

    # (CHUNK, BLOCK_D) tiles of u, dt, z, y and (CHUNK, ROWS, COLS) tiles of B,
    # C; the next chunk's loads are issued before this chunk's arithmetic.
    t2 = offs_t[:, None]
    u_p = u_ptr + pid_b * stride_ub + t2 * stride_ul + offs_d[None, :] * stride_ud
    t_p = dt_ptr + pid_b * stride_tb + t2 * stride_tl + offs_d[None, :] * stride_td
    z_p = z_ptr + pid_b * stride_zb + t2 * stride_zl + offs_d[None, :] * stride_zd
    y_p = y_ptr + pid_b * stride_yb + t2 * stride_yl + offs_d[None, :] * stride_yd
    t3 = offs_t[:, None, None]
    b_p = B_ptr + pid_b * stride_bb + t3 * stride_bl + n_rc[None, :, :] * stride_bn
    c_p = C_ptr + pid_b * stride_cb + t3 * stride_cl + n_rc[None, :, :] * stride_cn

    td_mask = (offs_t < L)[:, None] & dm[None, :]
    tn_mask = (offs_t < L)[:, None, None] & nm_rc[None, :, :]
    u_n = tl.load(u_p, mask=td_mask, other=0)
    if FUSED_DT:
        l_n = tl.load(l_p, mask=(offs_t < L)[:, None] & (offs_r < R)[None, :], other=0)
    else:
        t_n = tl.load(t_p, mask=td_mask, other=0)
    b_n = tl.load(b_p, mask=tn_mask, other=0)
    c_n = tl.load(c_p, mask=tn_mask, other=0)
    z_n = u_n
    if HAS_Z:
        z_n = tl.load(z_p, mask=td_mask, other=0)
    for t0 in range(0, L, CHUNK):
        if FUSED_DT:
            t_n = _dt_requant(tl.dot(l_n, dtw, out_dtype=tl.int32), lw_s, dt_s)   # (CHUNK, BLOCK_D)
        u, dt, Bc, Cc, gate = _chunk_inputs(u_n, t_n, b_n, c_n, z_n, dtb, u_s, dt_s, B_s, C_s, z_s,
                                            IS_INT8, HAS_Z, HAS_DT_BIAS, DT_SOFTPLUS)
        t1 = t0 + CHUNK
        nd_mask = ((t1 + offs_t) < L)[:, None] & dm[None, :]
        nn_mask = ((t1 + offs_t) < L)[:, None, None] & nm_rc[None, :, :]
        u_n = tl.load(u_p + t1 * stride_ul, mask=nd_mask, other=0)
        if FUSED_DT:
            l_n = tl.load(l_p + t1 * stride_ll, mask=((t1 + offs_t) < L)[:, None] & (offs_r < R)[None, :],
                          other=0)
        else:
            t_n = tl.load(t_p + t1 * stride_tl, mask=nd_mask, other=0)
        b_n = tl.load(b_p + t1 * stride_bl, mask=nn_mask, other=0)
        c_n = tl.load(c_p + t1 * stride_cl, mask=nn_mask, other=0)
        if HAS_Z:
            z_n = tl.load(z_p + t1 * stride_zl, mask=nd_mask, other=0)

        # Steps past the end get dt = 0 (u and B load as 0): the identity map,
        # so the chunk's last step is the state after step L - 1.
        dt = tl.where(((t0 + offs_t) < L)[:, None], dt, 0.0)
        if SEGMENTED:
            if t0 % DTSUM_EVERY == 0:
                tl.store(dtsum_ptr + (pid_b * (DTSUM_BLOCKS + 1) + t0 // DTSUM_EVERY) * DIM + offs_d, dt_total,
                         mask=dm)
            dt_total += tl.sum(dt, axis=0)
        dA = tl.exp2(dt[:, None, :, None] * A[None, :, :, :])        # (CHUNK, ROWS, BLOCK_D, COLS)
        dBu = (dt * u)[:, None, :, None] * Bc[:, :, None, :]
        # The carried state enters as the first step's offset (h -> dA_0 * h + dBu_0 applied to
        # it), so composing the steps in order yields the states themselves: h_t is the running
        # offset, the running product of dA goes unused and the compiler drops it. The masked
        # select is resolved at compile time (each register's timestep is known).
        dBu = tl.where((offs_t == 0)[:, None, None, None], dA * h + dBu, dBu)
        if SCAN_IN_ORDER:
            hs = _states_in_order(dA, dBu, offs_t, CHUNK)
        else:
            _, hs = tl.associative_scan((dA, dBu), axis=0, combine_fn=_compose_steps)
        y = tl.sum(tl.sum(hs * Cc[:, :, None, :], axis=1), axis=2)    # (CHUNK, BLOCK_D)
        # The last step's state, by an exact masked sum (adds zeros only).
        h = tl.sum(tl.where((offs_t == CHUNK - 1)[:, None, None, None], hs, 0.0), axis=0, keep_dims=True)
        if HAS_D:
            y = y + u * Dv[None, :]
        if HAS_Z:
            y = y * gate
        tl.store(y_p + t0 * stride_yl, y.to(y_ptr.dtype.element_ty),
                 mask=((t0 + offs_t) < L)[:, None] & dm[None, :])

    tl.debug_barrier()   # hT may alias h0 (in-place state update): all reads of h0 first
    tl.store(hT_ptr + pid_b * stride_fb + d3 * stride_fd + n3 * stride_fn,
             tl.reshape(h, (STATE_ROWS, BLOCK_D, COLS)).to(hT_ptr.dtype.element_ty), mask=st_mask)
    if SEGMENTED:
        tl.store(dtsum_ptr + (pid_b * (DTSUM_BLOCKS + 1) + DTSUM_BLOCKS) * DIM + offs_d, dt_total, mask=dm)


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


# Prefill kernel: "chunked" (an associative scan over each chunk of time) or
# "serial" (one step at a time: the fallback, should the chunked kernel not
# compile with some Triton version).
_PREFILL_IMPL = "chunked"
# (BLOCK_D, CHUNK, num_warps, STATE_ROWS) of the chunked kernel. A thread holds
# CHUNK * STATE_ROWS entries of each (CHUNK, ROWS, BLOCK_D, COLS) step tile,
# 16 here; with about five such tiles live it compiles to 72 registers and no
# spills for sm_90 (Triton 3.6 and 3.9). STATE_ROWS trades threads for
# shuffles: at batch 1 and dim 5120 there are 81920 / STATE_ROWS threads, and
# y's sum over the state takes log2(COLS) shuffle rounds. BLOCK_D * COLS should
# be at least 32 * num_warps (otherwise warps land on the time axis).
# benchmarks/scan_sweep.py times the alternatives on the GPU.
_CHUNKED_CONFIG = (16, 8, 4, 2)
# Where there are programs enough, wider tiles: 32 channels a program and 4 state rows a
# thread (32 state entries; half the threads, one shuffle round fewer in y's sum). Below
# about two programs an SM the threads are too few and it is slower. H100, int8, graph-timed
# (benchmarks/scan_config_check.py, docs/sweeps/scan_config_h100.json), µs narrow -> wide:
# dim 5120 batch 1 x 2048 195 -> 236 (160 wide programs), 2 x 2048 370 -> 294 (320),
# 4 x 2048 565 -> 456, 64 x 128 533 -> 413; dim 2048 3 x 1024 100 -> 120 (192 programs),
# 4 x 512 86 -> 62 (256), 16 x 512 226 -> 182. Int8 inputs only: with an fp16 model's inputs
# the wide tiles are slower at most shapes measured, all of dim 5120's (docs/sweeps/scan_config_fp16_h100.json:
# dim 5120 8 x 1024 514 -> 573, 64 x 128 493 -> 536). None for the interpreter (CI's small
# shapes still run it through the layout test). _CHUNKED_CONFIG_WIDE = None turns it off.
_CHUNKED_CONFIG_WIDE: tuple[int, int, int, int] | None = (32, 8, 4, 4)
_WIDE_MIN_PROGRAMS_PER_SM = 1.75
# Where there are few programs, smaller ones: 8 channels and 16-step chunks a program of two
# warps (int8 inputs, 16 state entries: the only size measured), while batch * cdiv(dim, 8)
# programs (segments count as sequences) stay within _FEW_MAX_PROGRAMS_PER_SM an SM: 1.4b's
# d_inner 4096 at one sequence (512 programs), 130m and 370m below 2048 tokens (up to two
# segments: 384 and 512 programs), 790m below 1024 (one segment). Not 2.8b's 5120 (640 programs: 245 against 192 µs)
# nor float inputs (4096: 201 against 177 µs); programs of one warp and 4 channels were slower
# than these tiles at every shape (docs/sweeps/scan_config_small_ctas_h100.json).
# H100, int8, graph-timed through the real dispatch (first of two rounds; the second within
# 1%), µs default -> these tiles
# (benchmarks/scan_few_programs_ab.py, docs/sweeps/scan_few_programs_ab_h100.json): d_inner 4096
# at 1024 / 2048 / 4096 steps 83.9 -> 78.6, 167.2 -> 152.5, 329.5 -> 300.2; 512 steps at 3072 /
# 2048 / 1536: 41.2 -> 34.0, 35.7 -> 27.8, 34.9 -> 26.5. Whole W8A8 prefills, A/B twice
# (benchmarks/prefill_ab.py, docs/sweeps/scan_few_programs_prefill_ab_*_h100.json), ms: 1.4b
# 9.41 / 16.84 / 32.29 -> 9.39 / 16.63 / 31.23 at 1024 / 2048 / 4096 tokens; 512 tokens: 130m
# 1.95 -> 1.72, 370m 4.07 -> 3.69, 790m 5.29 -> 4.94; 1024: 130m 2.93 -> 2.74, 370m 6.06 ->
# 5.69, 790m the same (8.66, its rows cut in two segments: 768 programs). None turns it off.
_CHUNKED_CONFIG_FEW: tuple[int, int, int, int] | None = (8, 16, 2, 2)
_FEW_MAX_PROGRAMS_PER_SM = 4.0
# A prefill of one sequence cut into segments scanned in parallel, then corrected
# (selective_scan_segments.py): None = by _segment_count's rule, an int forces the count
# (1: never; tests and sweeps). It pays where the whole sequence leaves the GPU short of
# programs, for the narrower models; the correction (an exp per state entry and step of every
# segment after the first) costs more than it saves from 1.4b's d_inner up, and cuts of a
# 512-step sequence were slower. The rule is a compromise: more, shorter segments are faster
# at some shapes (int8, d_inner 2048, 2048 steps: 8 segments 103 µs against this rule's 4, 126). H100, batch 1, graph-timed (benchmarks/scan_segments_sweep.py), µs
# whole -> this rule's cut, int8 / fp16 inputs, 2048 steps (docs/sweeps/scan_segments_sweep_h100.json):
# d_inner 3072 163 -> 148 / 173 -> 164 (2 segments), 2048 153 -> 126 / 166 -> 117 (4),
# 1536 149 -> 89 / 161 -> 90 (4); 4096 steps: 2048 306 -> 251 / 330 -> 235, 1536 301 -> 165 /
# 325 -> 184. d_inner 5120 at 2048 steps: 192 whole, 253-339 cut; d_inner 4096: 167, 188-257
# (docs/sweeps/scan_segments_correct_configs_h100.json).
_PREFILL_SEGMENTS: int | None = None
_SEGMENT_BELOW_PROGRAMS_PER_SM = 1.5
_SEGMENT_PROGRAMS_PER_SM = 1.4
_MIN_SEGMENT_LEN = 512
# In whole fp16 models the two launches a cut adds (the combination, the correction) cost more
# than a cut of 1024 steps saves (docs/sweeps/prefill_segments_ab_h100.json: 130m 2.63-2.68
# -> 2.77-2.80 ms, 370m 5.80-6.14 -> 6.22-6.42); W8A8 models gain there (130m 3.37 -> 3.16).
_MIN_FLOAT_CUT_LEN = 2048
# The segments' sums of dt are kept every _DTSUM_EVERY steps (a multiple of every chunked config's
# chunk: 8, and 16 for _CHUNKED_CONFIG_FEW): the correction runs that many steps a program, all
# blocks in parallel.
_DTSUM_EVERY = 64
# Given dt_proj's input (dt_low_q, ...), dt is computed inside the scan kernel
# ("fused") or by int8_linear_quant first ("launch"); the int8 dt is the same.
# H100, mamba-2.8b shapes (docs/sweeps/scan_sweep_h100.json, scan_decode_batches_h100.json):
# a decode step of up to 4 tokens is faster fused (batch 1: 3.3 vs 4.5 µs, 2: 3.7 vs
# 4.8, 4: 4.6 vs 5.6: the launch is the cost), from 8 on it is not (8: 7.6 vs 5.6;
# 64: 36 vs 16 µs: every channel block redoes the rank-160 products on CUDA cores),
# nor is a 2048-token prefill (0.57 ms fused vs 0.34 + 0.10 ms).
_PREFILL_DT_PROJ = "launch"
_FUSED_DT_MAX_DECODE_ROWS = 4
# Under the interpreter, the chunked kernel composes a chunk's steps "in_order"
# (bit-identical to "associative", which the interpreter runs one element at a
# time in Python: tens of seconds for a small model's forward).
_INTERPRETER_SCAN = "in_order"
# Set by benchmarks/kernels_gpu.py to sweep the serial kernel's channel block and
# chunk (decode steps, and prefill when _PREFILL_IMPL is "serial"); None / 8 in
# normal use.
_BLOCK_D_OVERRIDE: int | None = None
_CHUNK = 8
_DTW_EARLY_MAX_PER_THREAD = 128
# The recurrent state in memory (between calls); inside the kernels it is always fp32.
_STATE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _decode_dt_weight() -> str:
    """How a decode step's scan reads dt_proj's weight (QUAMBA_SCAN_DTW, for A/B runs):
    "early" (default: the program's rows whole, before pdl_wait, then one product) or
    "loop" (in K blocks after pdl_wait, each a dependent load: the earlier code). Decode
    A/B on an H100, logits bit-identical (docs/sweeps/scan_dtw*_ab_*_h100.json): 2.8b
    batch 1 2.00 -> 1.87 ms, batch 2 2.25 -> 2.13; 1.4b batch 1 1.15 -> 1.09."""
    value = os.environ.get("QUAMBA_SCAN_DTW", "early")
    if value not in ("early", "loop"):
        raise ValueError(f"QUAMBA_SCAN_DTW={value!r}: use early or loop")
    return value


def _segment_count(batch: int, seqlen: int, dim: int, device: torch.device, is_int8: bool = True) -> int:
    """Into how many segments a prefill of one sequence is cut (selective_scan_segments):
    _PREFILL_SEGMENTS when set; else, where the whole sequence gives the chunked kernel fewer
    than _SEGMENT_BELOW_PROGRAMS_PER_SM programs an SM, the fewest (a power of two) that make
    _SEGMENT_PROGRAMS_PER_SM programs of 32 channels, of about _MIN_SEGMENT_LEN steps or more (the
    last may be shorter; float inputs: sequences of _MIN_FLOAT_CUT_LEN steps or more); 1 otherwise."""
    if batch != 1:
        return 1
    if _PREFILL_SEGMENTS is not None:
        return max(1, min(_PREFILL_SEGMENTS, seqlen))
    sms = _num_sms(device)
    if interpret_mode() or triton.cdiv(dim, _CHUNKED_CONFIG[0]) >= _SEGMENT_BELOW_PROGRAMS_PER_SM * sms:
        return 1
    if not is_int8 and seqlen < _MIN_FLOAT_CUT_LEN:
        return 1
    segments = 2
    while segments * triton.cdiv(dim, 32) < _SEGMENT_PROGRAMS_PER_SM * sms and seqlen // (2 * segments) >= _MIN_SEGMENT_LEN:
        segments *= 2
    return segments if seqlen // segments >= _MIN_SEGMENT_LEN else 1


def _chunked_config(batch: int, dim: int, block_n: int, device: torch.device,
                    is_int8: bool) -> tuple[int, int, int, int]:
    """(BLOCK_D, CHUNK, num_warps, STATE_ROWS) of the chunked prefill kernel for this shape."""
    wide = _CHUNKED_CONFIG_WIDE
    if wide is not None and is_int8 and not interpret_mode() and block_n // wide[3] * wide[0] >= 32 * wide[2]:
        if batch * triton.cdiv(dim, wide[0]) >= _WIDE_MIN_PROGRAMS_PER_SM * _num_sms(device):
            return wide
    few = _CHUNKED_CONFIG_FEW
    if few is not None and is_int8 and not interpret_mode() and block_n == 16:
        if batch * triton.cdiv(dim, few[0]) <= _FEW_MAX_PROGRAMS_PER_SM * _num_sms(device):
            return few
    block_d, chunk, num_warps, state_rows = _CHUNKED_CONFIG
    return block_d, chunk, num_warps, min(state_rows, block_n)   # both powers of two: rows divide the state


def _launch(op, u, dt, A, B, C, D, z, dt_bias, initial_state, scales, delta_softplus, y_dtype,
            state_out=None, dt_proj=None, early_state=False, exact=False, early_trigger=False):
    """dt_proj: None, or (lq, w, w_per_channel) to compute dt from dt_proj's int8
    input lq (batch, seqlen, R) and weight w (dim, R); dt is then None.
    exact: the serial kernel in fp64 (kernels/numerics.py); A must be fp64 then."""
    if u.dim() != 3:
        raise ValueError(f"{op}: u must be (batch, seqlen, dim), got shape {tuple(u.shape)}")
    batch, seqlen, dim = u.shape
    if dt is not None:
        check_shape(op, "delta", dt, (batch, seqlen, dim))
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"{op}: A must be (dim={dim}, dstate), got shape {tuple(A.shape)}")
    dstate = A.shape[1]
    check_shape(op, "B", B, (batch, seqlen, dstate))
    check_shape(op, "C", C, (batch, seqlen, dstate))
    if z is not None:
        check_shape(op, "z", z, (batch, seqlen, dim))
    if D is not None:
        check_shape(op, "D", D, (dim,))
    if dt_bias is not None:
        check_shape(op, "dt_bias", dt_bias, (dim,))
    if initial_state is not None:
        check_shape(op, "initial_state", initial_state, (batch, dim, dstate))
    y = torch.empty(batch, seqlen, dim, dtype=y_dtype, device=u.device)
    if state_out is not None:
        check_dtype(op, "state_out", state_out, _STATE_DTYPES)
        check_shape(op, "state_out", state_out, (batch, dim, dstate))
        final = state_out
    else:
        final = torch.empty(batch, dim, dstate, dtype=torch.float32, device=u.device)
    block_n = next_pow2(dstate)
    # Exact numerics take the serial kernel: one step after another, as the reference.
    time_parallel = seqlen > 1 and _PREFILL_IMPL == "chunked" and not exact
    is_int8 = u.dtype == torch.int8
    # One long sequence: scanned as segments in parallel, then corrected (selective_scan_segments).
    segments = _segment_count(batch, seqlen, dim, u.device, is_int8) if time_parallel and dt_proj is None else 1
    seg_len = triton.cdiv(seqlen, segments)
    segments = triton.cdiv(seqlen, seg_len)
    if time_parallel:
        block_d, chunk, num_warps, state_rows = _chunked_config(batch * segments, dim, block_n, u.device, is_int8)
    else:
        # Serial prefill: 16 channels x 8-step chunks a program, one warp (the
        # best of the block/chunk sweep in docs/kernels.md: many short
        # independent latency chains beat fewer wide ones). Decode (one step):
        # wider blocks, enough programs to fill the GPU.
        if seqlen > 1:
            block_d, chunk = 16, _CHUNK
        else:
            block_d, chunk = 64, 1
            while block_d > 16 and batch * triton.cdiv(dim, block_d) < 4 * _num_sms(u.device):
                block_d //= 2
        if _BLOCK_D_OVERRIDE is not None:
            block_d = _BLOCK_D_OVERRIDE
        # Enough threads that the state and the chunk tiles stay in registers
        # (fewer spill: checked in the SASS).
        num_warps = max(1, min(4, max(block_d * block_n // 256, block_d * chunk // 128)))
    gpu_block_d = block_d   # what the register budget below is reckoned for
    if wide_interpreter_tiles():
        # All channels in one program: the interpreter's cost is per program and per op, not
        # per element, and channels are independent, so the bits are the same as in tiles.
        block_d = next_pow2(dim)
    elif interpret_mode():
        # No fully masked tiles for the (slow) interpreter, and the serial kernel's channels in
        # one program (its cost is per program there; channels are independent: the same bits).
        block_d = min(block_d, next_pow2(dim)) if time_parallel else next_pow2(dim)
    dummy = final
    dtw_early = False
    if dt_proj is not None:
        lq, dtw, dtw_per_channel = dt_proj
        rank = lq.shape[2]
        if time_parallel:
            # All of K in one tensor-core product (int8 MMAs take K in 32s).
            block_r = max(32, next_pow2(rank))
        else:
            # A broadcast product, its K block sized to about 16 int32 a thread.
            block_r = min(max(8, 16 * 32 * num_warps // (block_d * chunk)), next_pow2(rank))
            # A decode step: the weight rows whole, loaded before pdl_wait (DTW_EARLY), where
            # they are at most 128 int8 a thread (mamba's ranks up to 256 at 16 channels a warp;
            # 2.8b's batch 1 compiles to 255 registers there); larger ranks keep the loop.
            fits = gpu_block_d * next_pow2(rank) <= _DTW_EARLY_MAX_PER_THREAD * 32 * num_warps
            if seqlen == 1 and _decode_dt_weight() == "early" and fits:
                block_r, dtw_early = next_pow2(rank), True
        dt, lq_strides, w_strides = u, lq.stride(), dtw.stride()
    else:
        lq = dtw = dummy
        rank, dtw_per_channel, block_r = 0, False, 1
        lq_strides, w_strides = (0, 0, 0), (0, 0)
    h0 = initial_state if initial_state is not None else final
    zz = z if z is not None else u
    tensors, length, segment_args = (u, dt, B, C, zz, y), seqlen, ()
    if segments > 1:
        # The segments are the batch rows of the chunked kernel: a row's stride is a segment's
        # steps; each row's last state and sum of dt go to scratch for the combination.
        h_end = torch.empty(segments, dim, dstate, dtype=torch.float32, device=u.device)
        if _DTSUM_EVERY % chunk:   # the kernel stores the dt sums at chunk starts only
            raise ValueError(f"{op}: _DTSUM_EVERY={_DTSUM_EVERY} must be a multiple of the chunk ({chunk})")
        dt_blocks = triton.cdiv(seg_len, _DTSUM_EVERY)
        dt_sum = torch.empty(segments, dt_blocks + 1, dim, dtype=torch.float32, device=u.device)
        # (the views are one step long, to stay within the storage: the kernel reads strides only)
        tensors, length = [t.as_strided((segments, 1, t.shape[2]), (seg_len * t.stride(1),) + t.stride()[1:])
                           for t in tensors], seg_len
        final_kernel, segment_args = h_end, (dt_sum,)
    else:
        final_kernel = final
    su, sdt, sB, sC, sz, sy = tensors
    grid = (batch * segments, triton.cdiv(dim, block_d))
    if time_parallel:
        kernel = _selective_scan_chunked_kernel
        layout = dict(STATE_ROWS=state_rows, SCAN_IN_ORDER=interpret_mode() and _INTERPRETER_SCAN == "in_order",
                      SEGMENTED=segments > 1, DTSUM_EVERY=_DTSUM_EVERY)
        segment_args = segment_args or (dummy,)
    else:
        kernel, layout = _selective_scan_kernel, dict(EARLY_STATE=early_state and initial_state is not None,
                                                      DTW_EARLY=dtw_early, TRIGGER_FIRST=early_trigger,
                                                      ACC=tl.float64 if exact else tl.float32)
    kernel[grid](
        u, dt, A, B, C, D if D is not None else dummy, zz,
        dt_bias if dt_bias is not None else dummy, h0, y, final_kernel, lq, dtw, *segment_args,
        *scales,
        length, dim, dstate, rank, *((seqlen, dt_blocks if segments > 1 else 0) if time_parallel else ()),
        su.stride(0), su.stride(1), su.stride(2),
        sdt.stride(0), sdt.stride(1), sdt.stride(2),
        A.stride(0), A.stride(1),
        sB.stride(0), sB.stride(1), sB.stride(2),
        sC.stride(0), sC.stride(1), sC.stride(2),
        sz.stride(0), sz.stride(1), sz.stride(2),
        h0.stride(0) if segments == 1 else 0, h0.stride(1), h0.stride(2),
        sy.stride(0), sy.stride(1), sy.stride(2),
        final_kernel.stride(0), final_kernel.stride(1), final_kernel.stride(2),
        *lq_strides, *w_strides,
        IS_INT8=u.dtype == torch.int8, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_DT_BIAS=dt_bias is not None, HAS_H0=initial_state is not None,
        DT_SOFTPLUS=delta_softplus,
        FUSED_DT=dt_proj is not None, DTW_PER_CHANNEL=dtw_per_channel, BLOCK_R=block_r,
        BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=chunk, num_warps=num_warps, **layout,
        **pdl_launch_options(u.device),
    )
    if segments > 1:
        combine_segments(h_end, dt_sum, A, final[0])
        correct_segments(y[0], dt[0], z[0] if z is not None else None, C[0], A, dt_bias, h_end, dt_sum,
                         (scales[1], scales[3], scales[4]), seg_len, _DTSUM_EVERY, is_int8, delta_softplus)
    return y, final


def selective_scan_int8(
    u_q: torch.Tensor, u_scale: torch.Tensor,
    dt_q: torch.Tensor | None, dt_scale: torch.Tensor,
    A: torch.Tensor,
    B_q: torch.Tensor, B_scale: torch.Tensor,
    C_q: torch.Tensor, C_scale: torch.Tensor,
    D: torch.Tensor | None,
    z_q: torch.Tensor | None, z_scale: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    initial_state: torch.Tensor | None = None,
    state_out: torch.Tensor | None = None,
    dt_low_q: torch.Tensor | None = None, dt_low_scale: torch.Tensor | None = None,
    dt_w_q: torch.Tensor | None = None, dt_w_scale: torch.Tensor | None = None,
    early_state: bool = False,
    exact: bool = False,
    early_trigger: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """u_q, dt_q, z_q: (batch, seqlen, dim) int8 (any strides); B_q, C_q:
    (batch, seqlen, dstate) int8; scales: per-tensor fp32; A: (dim, dstate) fp32;
    D, dt_bias: (dim,) or None; initial_state: (batch, dim, dstate) fp32/fp16/bf16 or None.
    Softplus is always applied to dt + dt_bias.

    With dt_q None, dt is dt_proj computed in the kernel, equal bit for bit to
    ``int8_linear_quant(dt_low_q, dt_w_q, dt_low_scale, dt_w_scale, None, dt_scale)``:
    dt_low_q (batch, seqlen, R) int8 (any strides), dt_low_scale per-tensor,
    dt_w_q (dim, R) int8, dt_w_scale per-tensor or (dim,).

    Returns y (batch, seqlen, dim) fp16 and the final state (batch, dim, dstate) fp32,
    or written to ``state_out`` when given (fp32/fp16/bf16, rounded once on the store;
    may be ``initial_state``: in place). The state is fp32 inside the kernel.

    early_state: the caller promises that no kernel that may still be running when this one
    starts writes ``initial_state`` (under programmatic dependent launch: the kernel just
    before, or, behind trigger-first kernels, every kernel back to the last one that triggered
    after its wait; see ``pdl_wait``): a decode step then loads the state before waiting for
    it. A model's decode step keeps that promise (x_proj and in_proj may still run; the
    state's last writer is this layer's scan of the token before); back-to-back scans on one
    state do not.
    early_trigger: the caller promises that the kernel launched after this one reads, before
    its own PDL wait, nothing a kernel still running may write; a decode step (the serial
    kernel) then lets it start as soon as this one does.

    exact: exact numerics (kernels/numerics.py): A fp64 (-exp(A_log) in fp64), the serial
    scan with all its arithmetic in fp64, y and the state rounded to fp32, then to fp16 / their dtype."""
    op = "selective_scan_int8"
    check_device(op, u_q, u_scale, dt_q, dt_scale, A, B_q, B_scale, C_q, C_scale, D, z_q, z_scale,
                 dt_bias, initial_state, dt_low_q, dt_low_scale, dt_w_q, dt_w_scale)
    for name, t in (("u_q", u_q), ("B_q", B_q), ("C_q", C_q)):
        check_dtype(op, name, t, (torch.int8,))
    dt_proj = None
    low_rank = (dt_low_q, dt_low_scale, dt_w_q, dt_w_scale)
    if dt_q is not None:
        check_dtype(op, "dt_q", dt_q, (torch.int8,))
        if any(t is not None for t in low_rank):
            raise ValueError(f"{op}: give either dt_q or dt_low_q/dt_w_q (dt_proj fused), not both")
        lq_scale = dtw_scale = u_scale
    else:
        if any(t is None for t in low_rank):
            raise ValueError(f"{op}: without dt_q, dt_low_q, dt_low_scale, dt_w_q and dt_w_scale "
                             "are all required (dt_proj is then computed in the kernel)")
        check_dtype(op, "dt_low_q", dt_low_q, (torch.int8,))
        check_dtype(op, "dt_w_q", dt_w_q, (torch.int8,))
        if dt_low_q.dim() != 3 or tuple(dt_low_q.shape[:2]) != tuple(u_q.shape[:2]):
            raise ValueError(f"{op}: dt_low_q must be (batch, seqlen, dt_rank) matching u_q "
                             f"{tuple(u_q.shape)}, got shape {tuple(dt_low_q.shape)}")
        check_shape(op, "dt_w_q", dt_w_q, (u_q.shape[2], dt_low_q.shape[2]))
        lq_scale = scalar_scale(op, "dt_low_scale", dt_low_scale)
        if not isinstance(dt_w_scale, torch.Tensor):
            raise ValueError(f"{op}: dt_w_scale must be an fp32 tensor")
        per_channel = dt_w_scale.numel() != 1
        if per_channel and dt_w_scale.numel() != u_q.shape[2]:
            raise ValueError(f"{op}: dt_w_scale must be per-tensor (one element) or per-channel "
                             f"({u_q.shape[2]},), got shape {tuple(dt_w_scale.shape)}")
        dtw_scale = dt_w_scale.reshape(-1).float().contiguous() if per_channel else dt_w_scale.reshape(()).float()
        batch, seqlen = u_q.shape[:2]
        if (_PREFILL_DT_PROJ == "launch") if seqlen > 1 else batch > _FUSED_DT_MAX_DECODE_ROWS:
            dt_q = int8_linear_quant(dt_low_q, dt_w_q, dt_low_scale, dt_w_scale, None, dt_scale)
        else:
            dt_proj = (dt_low_q, dt_w_q, per_channel)
    if z_q is not None:
        check_dtype(op, "z_q", z_q, (torch.int8,))
        if z_scale is None:
            raise ValueError(f"{op}: z_scale is required when z_q is given")
    check_dtype(op, "A", A, (torch.float64,) if exact else (torch.float32,))
    if initial_state is not None:
        check_dtype(op, "initial_state", initial_state, _STATE_DTYPES)
    scales = [scalar_scale(op, "u_scale", u_scale), scalar_scale(op, "dt_scale", dt_scale),
              scalar_scale(op, "B_scale", B_scale), scalar_scale(op, "C_scale", C_scale)]
    scales.append(scalar_scale(op, "z_scale", z_scale) if z_q is not None else scales[0])
    scales += [lq_scale, dtw_scale]
    return _launch(op, u_q, dt_q, A, B_q, C_q, D, z_q, dt_bias, initial_state, scales, True,
                   torch.float16, state_out, dt_proj, early_state, exact, early_trigger)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
    state_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float twin of ``selective_scan_ref`` (same signature, minus chunk_size):
    u, delta, z: (batch, seqlen, dim) fp16/bf16/fp32; A: (dim, dstate);
    B, C: (batch, seqlen, dstate); D, delta_bias: (dim,); initial_state:
    (batch, dim, dstate) fp32/fp16/bf16 or None. Math in fp32.
    Returns y (batch, seqlen, dim) in u's dtype and the final state fp32 (in
    ``state_out`` when given, fp32/fp16/bf16, which may be ``initial_state``)."""
    op = "selective_scan"
    check_device(op, u, delta, A, B, C, D, z, delta_bias, initial_state)
    floats = (torch.float16, torch.bfloat16, torch.float32)
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        check_dtype(op, name, t, floats)
    if z is not None:
        check_dtype(op, "z", z, floats)
    if initial_state is not None:
        check_dtype(op, "initial_state", initial_state, _STATE_DTYPES)
    s = A  # scales are unused on the float path; any pointer will do
    return _launch(op, u, delta, A, B, C, D, z, delta_bias, initial_state, [s] * 7,
                   delta_softplus, u.dtype, state_out)
