"""Selective scan (Mamba-1 SSM) in Triton: int8 inputs (W8A8 path) or float inputs.

Twins: ``selective_scan_int8`` of ``selective_scan_int8_ref`` and
``selective_scan`` of ``selective_scan_ref``; one kernel serves both (IS_INT8).

Parallel over (batch, blocks of channels); sequential over time, with the
(BLOCK_D, dstate) state in fp32 registers for the whole sequence (never
rounded between steps). Each step: dt = softplus(dt + dt_bias),
h = exp(dt * A) * h + dt * u * B, y = <h, C> + D * u, y *= silu(z). Inputs come in
chunks of timesteps, the next chunk loaded while this one is computed, so load
latency overlaps the recurrence (see the kernel's comments). seqlen 1 (a decode step) is one launch.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._common import check_device, check_dtype, check_shape, interpret_mode, next_pow2, scalar_scale

__all__ = ["selective_scan_int8", "selective_scan"]


@triton.jit
def _softplus(x):
    # torch's softplus (threshold 20); log1p(e) via log(1+e) * e / ((1+e) - 1),
    # which stays accurate where e is tiny.
    e = tl.exp(x)
    u = 1.0 + e
    lp = tl.where(u == 1.0, e, tl.log(u) * (e / (u - 1.0)))
    return tl.where(x > 20.0, x, lp)


@triton.jit
def _selective_scan_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, h0_ptr, y_ptr, hT_ptr,
    u_scale_ptr, dt_scale_ptr, B_scale_ptr, C_scale_ptr, z_scale_ptr,
    L, DIM, NSTATE,
    stride_ub, stride_ul, stride_ud,
    stride_tb, stride_tl, stride_td,
    stride_ad, stride_an,
    stride_bb, stride_bl, stride_bn,
    stride_cb, stride_cl, stride_cn,
    stride_zb, stride_zl, stride_zd,
    stride_hb, stride_hd, stride_hn,
    stride_yb, stride_yl, stride_yd,
    stride_fb, stride_fd, stride_fn,
    IS_INT8: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr,
    HAS_H0: tl.constexpr, DT_SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    dm = offs_d < DIM
    nm = offs_n < NSTATE
    dn_mask = dm[:, None] & nm[None, :]

    # Padded state columns get A = 0 and B = 0, so they stay exactly zero.
    A = tl.load(A_ptr + offs_d[:, None] * stride_ad + offs_n[None, :] * stride_an,
                mask=dn_mask, other=0.0).to(tl.float32)
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * stride_hb + offs_d[:, None] * stride_hd + offs_n[None, :] * stride_hn,
                    mask=dn_mask, other=0.0).to(tl.float32)
    else:
        h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=dm, other=0.0).to(tl.float32)
    if HAS_DT_BIAS:
        dtb = tl.load(dt_bias_ptr + offs_d, mask=dm, other=0.0).to(tl.float32)
    if IS_INT8:
        u_s = tl.load(u_scale_ptr)
        dt_s = tl.load(dt_scale_ptr)
        B_s = tl.load(B_scale_ptr)
        C_s = tl.load(C_scale_ptr)
        if HAS_Z:
            z_s = tl.load(z_scale_ptr)

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
    t_n = tl.load(t_p, mask=dt_mask, other=0)
    b_n = tl.load(b_p, mask=tn_mask, other=0)
    c_n = tl.load(c_p, mask=tn_mask, other=0)
    if HAS_Z:
        z_n = tl.load(z_p, mask=dt_mask, other=0)
    for t0 in range(0, L, CHUNK):
        u = u_n.to(tl.float32)
        dt = t_n.to(tl.float32)
        Bc = b_n.to(tl.float32)
        Cc = c_n.to(tl.float32)
        if HAS_Z:
            z = z_n.to(tl.float32)
        t1 = t0 + CHUNK
        nd_mask = dm[:, None] & ((t1 + offs_t) < L)[None, :]
        nn_mask = ((t1 + offs_t) < L)[:, None] & nm[None, :]
        u_n = tl.load(u_p + t1 * stride_ul, mask=nd_mask, other=0)
        t_n = tl.load(t_p + t1 * stride_tl, mask=nd_mask, other=0)
        b_n = tl.load(b_p + t1 * stride_bl, mask=nn_mask, other=0)
        c_n = tl.load(c_p + t1 * stride_cl, mask=nn_mask, other=0)
        if HAS_Z:
            z_n = tl.load(z_p + t1 * stride_zl, mask=nd_mask, other=0)

        if IS_INT8:
            u = u * u_s
            dt = dt * dt_s
            Bc = Bc * B_s
            Cc = Cc * C_s
            if HAS_Z:
                z = z * z_s
        if HAS_DT_BIAS:
            dt = dt + dtb[:, None]
        if DT_SOFTPLUS:
            dt = _softplus(dt)
        du = dt * u                                               # (BLOCK_D, CHUNK)
        y = tl.zeros((BLOCK_D, CHUNK), dtype=tl.float32)
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
            y = y * (z / (1.0 + tl.exp(-z)))
        tl.store(y_p + t0 * stride_yl, y.to(y_ptr.dtype.element_ty),
                 mask=dm[:, None] & ((t0 + offs_t) < L)[None, :])

    tl.debug_barrier()   # hT may alias h0 (in-place state update): all reads of h0 first
    tl.store(hT_ptr + pid_b * stride_fb + offs_d[:, None] * stride_fd + offs_n[None, :] * stride_fn,
             h, mask=dn_mask)


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


# Set by benchmarks/kernels_gpu.py to sweep the channel block; None in normal use.
_BLOCK_D_OVERRIDE: int | None = None
_CHUNK = 8


def _launch(op, u, dt, A, B, C, D, z, dt_bias, initial_state, scales, delta_softplus, y_dtype,
            state_out=None):
    if u.dim() != 3:
        raise ValueError(f"{op}: u must be (batch, seqlen, dim), got shape {tuple(u.shape)}")
    batch, seqlen, dim = u.shape
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
        check_dtype(op, "state_out", state_out, (torch.float32,))
        check_shape(op, "state_out", state_out, (batch, dim, dstate))
        final = state_out
    else:
        final = torch.empty(batch, dim, dstate, dtype=torch.float32, device=u.device)
    block_n = next_pow2(dstate)
    # Prefill: 16 channels x 8-step chunks a program, one warp (the best of the
    # block/chunk sweep in docs/kernels.md: many short independent latency
    # chains beat fewer wide ones). Decode (one step): wider blocks, enough
    # programs to fill the GPU.
    if seqlen > 1:
        block_d, chunk = 16, _CHUNK
    else:
        block_d, chunk = 64, 1
        while block_d > 16 and batch * triton.cdiv(dim, block_d) < 4 * _num_sms(u.device):
            block_d //= 2
    if _BLOCK_D_OVERRIDE is not None:
        block_d = _BLOCK_D_OVERRIDE
    if interpret_mode():
        block_d = min(block_d, next_pow2(dim))
    # Enough threads that the state and the chunk tiles stay in registers
    # (fewer spill: checked in the SASS).
    num_warps = max(1, min(4, max(block_d * block_n // 256, block_d * chunk // 128)))
    dummy = final
    h0 = initial_state if initial_state is not None else final
    zz = z if z is not None else u
    grid = (batch, triton.cdiv(dim, block_d))
    _selective_scan_kernel[grid](
        u, dt, A, B, C, D if D is not None else dummy, zz,
        dt_bias if dt_bias is not None else dummy, h0, y, final,
        *scales,
        seqlen, dim, dstate,
        u.stride(0), u.stride(1), u.stride(2),
        dt.stride(0), dt.stride(1), dt.stride(2),
        A.stride(0), A.stride(1),
        B.stride(0), B.stride(1), B.stride(2),
        C.stride(0), C.stride(1), C.stride(2),
        zz.stride(0), zz.stride(1), zz.stride(2),
        h0.stride(0), h0.stride(1), h0.stride(2),
        y.stride(0), y.stride(1), y.stride(2),
        final.stride(0), final.stride(1), final.stride(2),
        IS_INT8=u.dtype == torch.int8, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_DT_BIAS=dt_bias is not None, HAS_H0=initial_state is not None,
        DT_SOFTPLUS=delta_softplus,
        BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=chunk, num_warps=num_warps,
    )
    return y, final


def selective_scan_int8(
    u_q: torch.Tensor, u_scale: torch.Tensor,
    dt_q: torch.Tensor, dt_scale: torch.Tensor,
    A: torch.Tensor,
    B_q: torch.Tensor, B_scale: torch.Tensor,
    C_q: torch.Tensor, C_scale: torch.Tensor,
    D: torch.Tensor | None,
    z_q: torch.Tensor | None, z_scale: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    initial_state: torch.Tensor | None = None,
    state_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """u_q, dt_q, z_q: (batch, seqlen, dim) int8 (any strides); B_q, C_q:
    (batch, seqlen, dstate) int8; scales: per-tensor fp32; A: (dim, dstate) fp32;
    D, dt_bias: (dim,) or None; initial_state: (batch, dim, dstate) fp32 or None.
    Softplus is always applied to dt + dt_bias.
    Returns y (batch, seqlen, dim) fp16 and the final state (batch, dim, dstate) fp32,
    written to ``state_out`` when given (may be ``initial_state``: in place)."""
    op = "selective_scan_int8"
    check_device(op, u_q, u_scale, dt_q, dt_scale, A, B_q, B_scale, C_q, C_scale, D, z_q, z_scale,
                 dt_bias, initial_state)
    for name, t in (("u_q", u_q), ("dt_q", dt_q), ("B_q", B_q), ("C_q", C_q)):
        check_dtype(op, name, t, (torch.int8,))
    if z_q is not None:
        check_dtype(op, "z_q", z_q, (torch.int8,))
        if z_scale is None:
            raise ValueError(f"{op}: z_scale is required when z_q is given")
    check_dtype(op, "A", A, (torch.float32,))
    if initial_state is not None:
        check_dtype(op, "initial_state", initial_state, (torch.float32,))
    scales = [scalar_scale(op, "u_scale", u_scale), scalar_scale(op, "dt_scale", dt_scale),
              scalar_scale(op, "B_scale", B_scale), scalar_scale(op, "C_scale", C_scale)]
    scales.append(scalar_scale(op, "z_scale", z_scale) if z_q is not None else scales[0])
    return _launch(op, u_q, dt_q, A, B_q, C_q, D, z_q, dt_bias, initial_state, scales, True,
                   torch.float16, state_out)


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
    (batch, dim, dstate) fp32 or None. Math in fp32.
    Returns y (batch, seqlen, dim) in u's dtype and the final state fp32 (in
    ``state_out`` when given, which may be ``initial_state``)."""
    op = "selective_scan"
    check_device(op, u, delta, A, B, C, D, z, delta_bias, initial_state)
    floats = (torch.float16, torch.bfloat16, torch.float32)
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        check_dtype(op, name, t, floats)
    if z is not None:
        check_dtype(op, "z", z, floats)
    if initial_state is not None:
        check_dtype(op, "initial_state", initial_state, (torch.float32,))
    s = A  # scales are unused on the float path; any pointer will do
    return _launch(op, u, delta, A, B, C, D, z, delta_bias, initial_state, [s] * 5,
                   delta_softplus, u.dtype, state_out)
