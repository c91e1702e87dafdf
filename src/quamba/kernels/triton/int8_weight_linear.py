"""Weight-only int8 linear layer: fp16/bf16 activations times int8 weight rows, one fp32
scale per row (twin: ``int8_weight_linear_ref``). The LM head of an ``--int8-embedding``
model: at one token it reads half the bytes of the fp16 head, and the table is never
dequantized into a temporary (the reference's ``F.linear`` on a dequantized copy would
write and read the whole table in fp16 on every call).

Each program computes a (BLOCK_M, BLOCK_N) tile of out: the int8 weight tile is converted
to the activation dtype in registers (exact: |w| <= 127) and multiplied on the tensor
cores with fp32 accumulation; the row scale multiplies the fp32 sum. Programs walk the
M blocks fastest, so the programs that share a weight tile run together and the table
is read from memory about once even when the tokens take several M blocks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_device, check_dtype, interpret_mode, next_pow2

__all__ = ["int8_weight_linear"]


@triton.jit
def _int8_weight_linear_kernel(
    x_ptr, w_ptr, scale_ptr, out_ptr, M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_om, stride_on,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, FP32_DOT: tl.constexpr,
):
    """FP32_DOT: the product in fp32 (the interpreter, whose bf16 ``tl.dot`` is wrong)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    # int64 rows: a perplexity batch's full logits pass 2**31 elements (43k tokens x 50280).
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        km = (k0 + offs_k) < K
        x = tl.load(x_ptrs, mask=(offs_m[:, None] < M) & km[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=(offs_n[:, None] < N) & km[None, :], other=0)
        # Through fp32 (exact either way): the interpreter's direct int8 -> bf16 cast is wrong.
        w = w.to(tl.float32)
        if FP32_DOT:
            acc = tl.dot(x.to(tl.float32), tl.trans(w), acc)
        else:
            acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    scale = tl.load(scale_ptr + offs_n, mask=offs_n < N, other=0.0)
    out = acc * scale[None, :]
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on,
             out.to(out_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def _config(M: int) -> dict:
    """Decode (up to 64 tokens): every token in one program; more tokens: square tiles.
    From a graph-timed sweep of the 2.8b head (50280 x 2560) on an H100
    (docs/sweeps/int8_head_tiles_h100.json, cold weights): one token, 32 x 256 tiles 48.9 µs
    (2.6 TB/s; 64 x 256 with 4 stages, the first choice, 54.6); 64 tokens, 128 x 128 with 8
    warps 72.9 µs (64 x 256: 110); 2048 tokens, 128 x 128 x 64 1177 µs, the best of nine
    (cuBLAS fp16 on the fp16 table: 730)."""
    if interpret_mode():
        return dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_warps=4, num_stages=1)
    if M <= 16:
        return dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=256, num_warps=4, num_stages=3)
    if M <= 64:
        return dict(BLOCK_M=next_pow2(M), BLOCK_N=128, BLOCK_K=128, num_warps=8, num_stages=3)
    return dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)


def int8_weight_linear(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """x: (..., K) fp16 or bf16; w_q: (N, K) int8; w_scale: (N,) fp32 (one scale a row).
    Returns (x @ w_q^T) * w_scale as (..., N) in x.dtype."""
    op = "int8_weight_linear"
    check_device(op, x, w_q, w_scale)
    check_dtype(op, "x", x, (torch.float16, torch.bfloat16))
    check_dtype(op, "w_q", w_q, (torch.int8,))
    if w_q.dim() != 2:
        raise ValueError(f"{op}: w_q must be (N, K), got shape {tuple(w_q.shape)}")
    N, K = w_q.shape
    if x.shape[-1] != K:
        raise ValueError(f"{op}: x must be (..., K={K}) to match w_q {tuple(w_q.shape)}, got shape {tuple(x.shape)}")
    if w_scale.numel() != N or not w_scale.is_floating_point():
        raise ValueError(f"{op}: w_scale must be one float scale a row ({N},), got {str(w_scale.dtype)[6:]} "
                         f"of shape {tuple(w_scale.shape)}")
    if K == 0:
        raise ValueError(f"{op}: w_q has no columns (K = 0)")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, K)
    M = x2.shape[0]
    out = torch.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return out.reshape(*lead, N)
    scale = w_scale.reshape(N).float().contiguous()
    cfg = _config(M)
    grid = (triton.cdiv(M, cfg["BLOCK_M"]), triton.cdiv(N, cfg["BLOCK_N"]))
    _int8_weight_linear_kernel[grid](x2, w_q, scale, out, M, N, K, x2.stride(0), x2.stride(1), w_q.stride(0),
                                     w_q.stride(1), out.stride(0), out.stride(1),
                                     FP32_DOT=interpret_mode() and x.dtype == torch.bfloat16, **cfg)
    return out.reshape(*lead, N)
