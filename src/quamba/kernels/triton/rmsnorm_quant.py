"""Fused residual add + RMSNorm, one row per program: int8 or float output.

Twins: ``rmsnorm_quant`` of ``quamba.kernels.rmsnorm_quant_ref.rmsnorm_quant_ref``
(int8 output, the W8A8 block) and ``add_rmsnorm`` of ``add_rmsnorm_ref`` (float
output, the fp block); one kernel serves both (QUANT). One read of hidden (and
residual), one fp32 write of the new residual, one write of the normed row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (check_device, check_dtype, check_shape, next_pow2, pdl_launch_options, pdl_wait,
                      quantize_int8, scalar_scale)

__all__ = ["rmsnorm_quant", "add_rmsnorm"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _add_rmsnorm_kernel(
    h_ptr, r_ptr, w_ptr, x_ptr, ro_ptr, scale_ptr,
    M, D, eps,
    stride_hm, stride_rm, stride_xm, stride_om,
    HAS_RESIDUAL: tl.constexpr, QUANT: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
    EARLY_RESIDUAL: tl.constexpr, USE_PDL: tl.constexpr, EARLY_TRIGGER: tl.constexpr = False,
    EXACT: tl.constexpr = False,
):
    # One pass over whole rows (BLOCK_D >= D), every load before any store, and nothing
    # written before pdl_wait: what lets residual_out be the residual itself (the prefill
    # graphs update their buffer pair in place). A variant that splits D must keep that.
    # The weight (no kernel writes it), and the residual with EARLY_RESIDUAL (the caller's
    # promise that no kernel that may still run writes it), load before pdl_wait, while the
    # kernel before still runs.
    pid = tl.program_id(0)
    offs_m = pid * ROWS + tl.arange(0, ROWS)
    offs_d = tl.arange(0, BLOCK_D)
    mm = offs_m < M
    mask = mm[:, None] & (offs_d < D)[None, :]
    w = tl.load(w_ptr + offs_d, mask=offs_d < D, other=0.0).to(tl.float32)
    r_p = r_ptr + offs_m[:, None] * stride_rm + offs_d[None, :]
    if HAS_RESIDUAL and EARLY_RESIDUAL:
        res = tl.load(r_p, mask=mask, other=0.0).to(tl.float32)
    pdl_wait(USE_PDL, EARLY_TRIGGER)
    r = tl.load(h_ptr + offs_m[:, None] * stride_hm + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        if not EARLY_RESIDUAL:
            res = tl.load(r_p, mask=mask, other=0.0).to(tl.float32)
        r += res
    tl.store(ro_ptr + offs_m[:, None] * stride_om + offs_d[None, :], r, mask=mask)
    if EXACT:
        # Exact numerics (kernels/numerics.py): fp64 from the fp32 residual, rounded once to fp32.
        r64 = r.to(tl.float64)
        rstd = 1.0 / tl.sqrt(tl.sum(r64 * r64, axis=1) / D + eps)   # fp64: IEEE sqrt and division
        x = (r64 * rstd[:, None] * w.to(tl.float64)[None, :]).to(tl.float32)
    else:
        var = tl.sum(r * r, axis=1) / D
        rstd = tl.math.div_rn(tl.full(var.shape, 1.0, tl.float32), tl.sqrt_rn(var + eps))
        x = r * rstd[:, None] * w[None, :]
    if QUANT:
        x = quantize_int8(x, tl.load(scale_ptr))
    tl.store(x_ptr + offs_m[:, None] * stride_xm + offs_d[None, :], x.to(x_ptr.dtype.element_ty), mask=mask)


def rmsnorm_quant(
    hidden: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    scale: torch.Tensor,
    residual_out: torch.Tensor | None = None,
    early_residual: bool = False,
    early_trigger: bool = False,
    exact: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden: (..., d) float; residual: (..., d) float or None; weight: (d,);
    eps: float; scale: per-tensor fp32; exact: the norm in fp64 (kernels/numerics.py).
    Returns x_q (..., d) int8 = quantize(rmsnorm(hidden + residual) * weight, scale)
    and residual_out (..., d) fp32 = hidden + residual (written to ``residual_out``
    when given: a contiguous fp32 tensor of hidden's shape; it may be ``residual``
    itself, updated in place, as each row is read before it is written).
    early_residual: the caller promises that no kernel that may still be running when this one
    starts writes ``residual`` (under programmatic dependent launch: the kernel just before,
    or, behind trigger-first kernels, every kernel back to the last one that triggered after
    its wait; see ``pdl_wait``), so the residual is loaded before waiting for it. A layer stack
    keeps it: the residual's writer, the previous layer's norm, finished before that layer's
    in_proj passed its wait.
    early_trigger: the caller promises that the kernel launched after this one reads, before
    its own PDL wait, nothing that a kernel still running writes. The next kernel may then
    start as soon as this one does (``pdl_wait``'s TRIGGER_FIRST). A decode step's in_proj
    keeps it (before its wait it reads its weights and its own layer's conv state) and loads
    them while the previous layer's kernels still run."""
    op = "rmsnorm_quant"
    check_device(op, hidden, residual, weight, scale, residual_out)
    _check(op, hidden, residual, weight)
    return _launch(op, hidden, residual, weight, eps, torch.int8, scalar_scale(op, "scale", scale), residual_out,
                   early_residual=early_residual, early_trigger=early_trigger, exact=exact)


def add_rmsnorm(
    hidden: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype | None = None,
    residual_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden: (..., d) float; residual: (..., d) float or None; weight: (d,);
    out_dtype: fp16/bf16/fp32 (default: hidden's dtype).
    Returns normed (..., d) = rmsnorm(hidden + residual) * weight computed in fp32
    and cast to out_dtype, and residual_out (..., d) fp32 = hidden + residual (into
    ``residual_out`` when given, as in ``rmsnorm_quant``)."""
    op = "add_rmsnorm"
    check_device(op, hidden, residual, weight, residual_out)
    _check(op, hidden, residual, weight)
    out_dtype = hidden.dtype if out_dtype is None else out_dtype
    if out_dtype not in _FLOATS:
        raise ValueError(f"{op}: out_dtype must be float16, bfloat16 or float32, got {out_dtype}")
    return _launch(op, hidden, residual, weight, eps, out_dtype, None, residual_out)


def _check(op, hidden, residual, weight) -> None:
    check_dtype(op, "hidden", hidden, _FLOATS)
    check_shape(op, "weight", weight, (hidden.shape[-1],))
    if residual is not None:
        check_dtype(op, "residual", residual, _FLOATS)
        check_shape(op, "residual", residual, tuple(hidden.shape))


def _launch(op, hidden, residual, weight, eps, out_dtype, scale, residual_out=None, rows=None, num_warps=None,
            early_residual=False, early_trigger=False, exact=False):
    """scale: the per-tensor int8 scale (QUANT), or None for a float output.
    rows, num_warps: override the heuristic (benchmarks/small_kernels_sweep.py)."""
    d = hidden.shape[-1]
    lead = hidden.shape[:-1]
    h2 = hidden.reshape(-1, d)
    if h2.stride(-1) != 1:
        h2 = h2.contiguous()
    r2 = None
    if residual is not None:
        r2 = residual.reshape(-1, d)
        if r2.stride(-1) != 1:
            r2 = r2.contiguous()
    M = h2.shape[0]
    x = torch.empty(M, d, dtype=out_dtype, device=hidden.device)
    if residual_out is None:
        r_out = torch.empty(M, d, dtype=torch.float32, device=hidden.device)
    else:
        check_dtype(op, "residual_out", residual_out, (torch.float32,))
        check_shape(op, "residual_out", residual_out, tuple(hidden.shape))
        if not residual_out.is_contiguous():
            raise ValueError(f"{op}: residual_out must be contiguous")
        r_out = residual_out.view(M, d)
    block_d = next_pow2(d)
    if M <= 64:
        # Decode: up to 64 rows, latency-bound. One row a program and enough warps that
        # each thread holds a few elements (short serial chains). H100, d 2560,
        # graph-timed at 1, 8 and 64 rows (docs/sweeps/small_kernels_h100.json): at 64
        # rows 4.0 µs against 5.8 for four warps; equal at 1 and 8.
        default_rows, default_warps = 1, max(4, min(16, block_d // 256))
    else:
        default_rows = max(1, min(16, 4096 // block_d))
        default_warps = 4 if block_d * default_rows <= 4096 else 8
    rows = default_rows if rows is None else rows
    num_warps = default_warps if num_warps is None else num_warps
    rr = r2 if r2 is not None else h2
    _add_rmsnorm_kernel[(triton.cdiv(M, rows),)](
        h2, rr, weight.contiguous(), x, r_out, scale if scale is not None else r_out,
        M, d, float(eps),
        h2.stride(0), rr.stride(0), x.stride(0), r_out.stride(0),
        HAS_RESIDUAL=residual is not None, QUANT=scale is not None, BLOCK_D=block_d, ROWS=rows,
        EARLY_RESIDUAL=early_residual, EARLY_TRIGGER=early_trigger, EXACT=exact, num_warps=num_warps,
        **pdl_launch_options(hidden.device),
    )
    return x.reshape(*lead, d), r_out.reshape(*lead, d)
