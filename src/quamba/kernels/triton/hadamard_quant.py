"""Hadamard rotation fused with int8 quantization: one read, one int8 write.

Twin of ``quamba.kernels.hadamard_quant_ref.hadamard_quant_ref(y, scale, R)``
with R = hadamard_matrix(n) = (H_m ⊗ H_{2^k}) / √n. Viewing a row of y as an
(m, 2^k) matrix Y (row-major), y @ (A ⊗ B) = vec(Aᵀ Y B): the Sylvester factor
B (symmetric) acts along each length-2^k chunk, the small factor A (Paley, not
symmetric, hence the transpose) mixes the m chunks.

The 2^k part is a fast Walsh–Hadamard transform in the constant-geometry form:
each of the k stages pairs neighbours (x[2i], x[2i+1]) and writes their sum to
position i and their difference to position 2^(k-1) + i; after k stages that
is exactly Sylvester's H_{2^k} in natural order. In Triton a stage is a
reshape/split/join/permute of the register tile, no memory traffic. The m part
accumulates m rank-1 updates, out[i, :] += A[j, i] * FWHT(Y[j, :]) (m·m·2^k
multiply-adds a row: 20·20·256 for mamba-2.8b's d_inner 5120).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import (check_device, check_dtype, next_pow2, pdl_launch_options, pdl_wait, quantize_int8,
                      scalar_scale)

__all__ = ["hadamard_quant"]


@triton.jit
def _fwht(x, ROWS: tl.constexpr, K: tl.constexpr, LOG_K: tl.constexpr):
    """Unnormalized Walsh–Hadamard transform (Sylvester order) along axis 1 of (ROWS, K)."""
    for _ in tl.static_range(LOG_K):
        a, b = tl.split(tl.reshape(x, (ROWS, K // 2, 2)))
        x = tl.reshape(tl.permute(tl.join(a + b, a - b), (0, 2, 1)), (ROWS, K))
    return x


@triton.jit
def _hadamard_quant_kernel(
    y_ptr, hm_ptr, out_ptr, scale_ptr,
    M, norm,
    stride_ym, stride_om,
    M_FACTOR: tl.constexpr, M_PAD: tl.constexpr, K: tl.constexpr, LOG_K: tl.constexpr,
    ROWS: tl.constexpr, MIX: tl.constexpr, USE_PDL: tl.constexpr,
):
    """MIX 0: the m chunks are loaded and transformed one at a time and mixed by
    rank-1 updates (any K). MIX 1 / 2: the whole (ROWS, M_PAD, K) tile is
    transformed at once and mixed by a (M_PAD, M_PAD) @ (M_PAD, K) dot in fp32
    ("ieee", CUDA cores) or "tf32x3" (tensor cores; A is ±1, exact in tf32, and
    the 3-pass split keeps the fp32 operand to ~2^-22); needs K >= 16."""
    pid = tl.program_id(0)
    offs_r = pid * ROWS + tl.arange(0, ROWS)
    offs_c = tl.arange(0, K)
    rm = offs_r < M
    pdl_wait(USE_PDL)
    scale = tl.load(scale_ptr)
    if M_FACTOR == 1:
        y = tl.load(y_ptr + offs_r[:, None] * stride_ym + offs_c[None, :], mask=rm[:, None],
                    other=0.0).to(tl.float32)
        out = _fwht(y, ROWS, K, LOG_K) * norm
        q = quantize_int8(out, scale)
        tl.store(out_ptr + offs_r[:, None] * stride_om + offs_c[None, :], q, mask=rm[:, None])
    else:
        offs_i = tl.arange(0, M_PAD)
        im = offs_i < M_FACTOR
        if MIX == 0:
            acc = tl.zeros((ROWS, M_PAD, K), dtype=tl.float32)
            for j in range(0, M_FACTOR):
                yj = tl.load(y_ptr + offs_r[:, None] * stride_ym + (j * K + offs_c)[None, :],
                             mask=rm[:, None], other=0.0).to(tl.float32)
                fj = _fwht(yj, ROWS, K, LOG_K)
                a_j = tl.load(hm_ptr + j * M_FACTOR + offs_i, mask=im, other=0.0)   # row j of A
                acc += a_j[None, :, None] * fj[:, None, :]
        else:
            tile = (offs_i[:, None] * K + offs_c[None, :])[None, :, :]
            y = tl.load(y_ptr + offs_r[:, None, None] * stride_ym + tile,
                        mask=rm[:, None, None] & im[None, :, None], other=0.0).to(tl.float32)
            f = tl.reshape(_fwht(tl.reshape(y, (ROWS * M_PAD, K)), ROWS * M_PAD, K, LOG_K),
                           (ROWS, M_PAD, K))
            # at[i, j] = A[j, i], zero-padded to (M_PAD, M_PAD)
            at = tl.load(hm_ptr + offs_i[None, :] * M_FACTOR + offs_i[:, None],
                         mask=im[None, :] & im[:, None], other=0.0)
            if ROWS == 1:
                acc = tl.reshape(tl.dot(at, tl.reshape(f, (M_PAD, K)),
                                        input_precision="ieee" if MIX == 1 else "tf32x3"),
                                 (1, M_PAD, K))
            else:
                acc = tl.dot(tl.broadcast_to(at[None, :, :], (ROWS, M_PAD, M_PAD)), f,
                             input_precision="ieee" if MIX == 1 else "tf32x3")
        q = quantize_int8(acc * norm, scale)
        o_ptrs = out_ptr + offs_r[:, None, None] * stride_om + (offs_i[:, None] * K + offs_c[None, :])[None, :, :]
        tl.store(o_ptrs, q, mask=rm[:, None, None] & im[None, :, None])


_FACTORS: dict[tuple[int, torch.device], tuple[int, int, torch.Tensor]] = {}


def _factor(n: int, device: torch.device) -> tuple[int, int, torch.Tensor]:
    """(m, 2^k, A) with A the library's ±1 factor H_m as an fp32 (m, m) tensor."""
    key = (n, device)
    if key not in _FACTORS:
        from quamba.quantization.hadamard import hadamard_factors, hadamard_matrix
        m, p = hadamard_factors(n)
        A = torch.round(hadamard_matrix(m) * math.sqrt(m)).to(torch.float32)
        _FACTORS[key] = (m, p, A.contiguous().to(device))
    return _FACTORS[key]


def hadamard_quant(y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """y: (..., n) fp16/bf16/fp32 with n = m·2^k, m in {1, 12, 20, 28} (see
    ``quamba.quantization.hadamard.hadamard_factors``); scale: per-tensor fp32.
    Returns (..., n) int8 = quantize_ref(y @ hadamard_matrix(n), scale)."""
    op = "hadamard_quant"
    check_device(op, y, scale)
    check_dtype(op, "y", y, (torch.float16, torch.bfloat16, torch.float32))
    s = scalar_scale(op, "scale", scale)
    n = y.shape[-1]
    try:
        m, p, A = _factor(n, y.device)
    except Exception as exc:  # QuambaError from hadamard_factors
        raise ValueError(f"{op}: {exc}") from exc
    lead = y.shape[:-1]
    y2 = y.reshape(-1, n)
    if y2.stride(-1) != 1:
        y2 = y2.contiguous()
    M = y2.shape[0]
    out = torch.empty(M, n, dtype=torch.int8, device=y.device)
    if M == 0:
        return out.reshape(*lead, n)
    return _launch(y2, s, m, p, A, out, _DEFAULT_MIX).reshape(*lead, n)


# Chosen from benchmarks/kernels_gpu.py (see docs/kernels.md).
_DEFAULT_MIX = 2


def _launch(y2, s, m, p, A, out, mix, rows=None, num_warps=None):
    M, n = y2.shape
    m_pad = next_pow2(m) if m > 1 else 1
    if m == 1 or p < 16:
        mix = 0
    tile = m_pad * p
    if rows is None:
        rows = max(1, min(16, 2048 // tile))
    if num_warps is None:
        num_warps = 8 if tile * rows >= 4096 else 4
        if M <= 64 and tile * rows >= 8192:
            # Decode (a few rows, one program each) is latency-bound: more threads per row
            # shorten it (H100, d_inner 5120, graph-timed: 7.5 -> 6.9 µs for one row,
            # 8.3 -> 7.8 µs for 64; docs/sweeps/decode_sweep_h100.json).
            num_warps = 16
    _hadamard_quant_kernel[(triton.cdiv(M, rows),)](
        y2, A, out, s,
        M, 1.0 / math.sqrt(n),
        y2.stride(0), out.stride(0),
        M_FACTOR=m, M_PAD=m_pad, K=p, LOG_K=p.bit_length() - 1, ROWS=rows, MIX=mix,
        num_warps=num_warps, **pdl_launch_options(y2.device),
    )
    return out
