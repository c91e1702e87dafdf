"""Fused residual add + RMSNorm + int8 quantization, one row per program.

Twin of ``quamba.kernels.rmsnorm_quant_ref.rmsnorm_quant_ref``: one read of
hidden (and residual), one fp32 write of the new residual, one int8 write.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_device, check_dtype, check_shape, next_pow2, quantize_int8, scalar_scale

__all__ = ["rmsnorm_quant"]


@triton.jit
def _rmsnorm_quant_kernel(
    h_ptr, r_ptr, w_ptr, xq_ptr, ro_ptr, scale_ptr,
    M, D, eps,
    stride_hm, stride_rm, stride_xm, stride_om,
    HAS_RESIDUAL: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_m = pid * ROWS + tl.arange(0, ROWS)
    offs_d = tl.arange(0, BLOCK_D)
    mm = offs_m < M
    mask = mm[:, None] & (offs_d < D)[None, :]
    r = tl.load(h_ptr + offs_m[:, None] * stride_hm + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r += tl.load(r_ptr + offs_m[:, None] * stride_rm + offs_d[None, :], mask=mask,
                     other=0.0).to(tl.float32)
    tl.store(ro_ptr + offs_m[:, None] * stride_om + offs_d[None, :], r, mask=mask)
    var = tl.sum(r * r, axis=1) / D
    rstd = tl.math.div_rn(tl.full(var.shape, 1.0, tl.float32), tl.sqrt_rn(var + eps))
    w = tl.load(w_ptr + offs_d, mask=offs_d < D, other=0.0).to(tl.float32)
    x = r * rstd[:, None] * w[None, :]
    q = quantize_int8(x, tl.load(scale_ptr))
    tl.store(xq_ptr + offs_m[:, None] * stride_xm + offs_d[None, :], q, mask=mask)


def rmsnorm_quant(
    hidden: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    scale: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden: (..., d) float; residual: (..., d) float or None; weight: (d,);
    eps: float; scale: per-tensor fp32.
    Returns x_q (..., d) int8 = quantize(rmsnorm(hidden + residual) * weight, scale)
    and residual_out (..., d) fp32 = hidden + residual."""
    op = "rmsnorm_quant"
    check_device(op, hidden, residual, weight, scale)
    floats = (torch.float16, torch.bfloat16, torch.float32)
    check_dtype(op, "hidden", hidden, floats)
    d = hidden.shape[-1]
    check_shape(op, "weight", weight, (d,))
    if residual is not None:
        check_dtype(op, "residual", residual, floats)
        check_shape(op, "residual", residual, tuple(hidden.shape))
    s = scalar_scale(op, "scale", scale)
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
    x_q = torch.empty(M, d, dtype=torch.int8, device=hidden.device)
    r_out = torch.empty(M, d, dtype=torch.float32, device=hidden.device)
    block_d = next_pow2(d)
    if M <= 8:
        # Decode: a handful of rows, latency-bound. One row a program and enough
        # warps that each thread holds a few elements (short serial chains).
        rows = 1
        num_warps = max(4, min(16, block_d // 256))
    else:
        rows = max(1, min(16, 4096 // block_d))
        num_warps = 4 if block_d * rows <= 4096 else 8
    rr = r2 if r2 is not None else h2
    _rmsnorm_quant_kernel[(triton.cdiv(M, rows),)](
        h2, rr, weight.contiguous(), x_q, r_out, s,
        M, d, float(eps),
        h2.stride(0), rr.stride(0), x_q.stride(0), r_out.stride(0),
        HAS_RESIDUAL=residual is not None, BLOCK_D=block_d, ROWS=rows, num_warps=num_warps,
    )
    return x_q.reshape(*lead, d), r_out.reshape(*lead, d)
