"""Hadamard rotation + int8 quantization of a few rows (decode), split over the chunks.

Same result as ``hadamard_quant`` (twin: ``hadamard_quant_ref``), for n = m·2^k
with m > 1. The one-program-a-row kernel there is latency-bound at decode: a
single program walks 8 butterfly stages over the whole (m, 2^k) row (~7 µs for
mamba-2.8b's 5120 on an H100). Here each row gets m programs: program j
transforms chunk j alone (a 2^k butterfly, m times less work per program) and
writes it to a workspace; the last program of the row to finish (a counter per
row, reset after use, as in the split-K GEMV) mixes the m chunks with the m×m
factor on the tensor cores, quantizes and stores. Every program runs the same
per-chunk arithmetic and the mix is the same product as in ``hadamard_quant``,
so the int8 output is the same.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import pdl_launch_options, pdl_wait, quantize_int8
from .hadamard_quant import _fwht

__all__ = ["hadamard_quant_split"]


@triton.jit
def _hadamard_quant_split_kernel(
    y_ptr, hm_ptr, ws_ptr, count_ptr, out_ptr, scale_ptr,
    norm, stride_ym, stride_om,
    M_FACTOR: tl.constexpr, M_PAD: tl.constexpr, K: tl.constexpr, LOG_K: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    row = tl.program_id(0)
    j = tl.program_id(1)
    offs_c = tl.arange(0, K)
    ws_row = ws_ptr + row * (M_PAD * K)
    pdl_wait(USE_PDL)
    y = tl.load(y_ptr + row * stride_ym + j * K + offs_c[None, :]).to(tl.float32)
    tl.store(ws_row + j * K + offs_c[None, :], _fwht(y, 1, K, LOG_K))
    # Every thread's workspace store happens before the counter moves (barrier,
    # then a release at GPU scope); the last arrival acquires and reads them all.
    tl.debug_barrier()
    arrived = tl.atomic_add(count_ptr + row, 1, sem="acq_rel", scope="gpu")
    if arrived == M_FACTOR - 1:
        offs_i = tl.arange(0, M_PAD)
        im = offs_i < M_FACTOR
        f = tl.load(ws_row + offs_i[:, None] * K + offs_c[None, :], mask=im[:, None], other=0.0,
                    cache_modifier=".cg")
        # at[i, j] = A[j, i], zero-padded; A is ±1 (exact in tf32), tf32x3 keeps f to ~2^-22
        at = tl.load(hm_ptr + offs_i[None, :] * M_FACTOR + offs_i[:, None], mask=im[None, :] & im[:, None],
                     other=0.0)
        acc = tl.dot(at, f, input_precision="tf32x3")
        q = quantize_int8(acc * norm, tl.load(scale_ptr))
        tl.store(out_ptr + row * stride_om + offs_i[:, None] * K + offs_c[None, :], q, mask=im[:, None])
        tl.atomic_xchg(count_ptr + row, 0)                 # ready for the next launch


# Per-device zeroed counters, one per row; every launch leaves them at zero.
_COUNTERS: dict[torch.device, torch.Tensor] = {}


def _counters(device: torch.device, rows: int) -> torch.Tensor:
    buf = _COUNTERS.get(device)
    if buf is None or buf.numel() < rows:
        buf = _COUNTERS[device] = torch.zeros(max(rows, 256), dtype=torch.int32, device=device)
    return buf


def hadamard_quant_split(y2: torch.Tensor, scale: torch.Tensor, m: int, p: int, A: torch.Tensor,
                         out: torch.Tensor) -> torch.Tensor:
    """y2: (M, m·p) float rows with unit stride; scale: 0-dim fp32; (m, p, A) from
    ``hadamard_quant._factor`` with m > 1 and p >= 16 (tensor-core dot shapes);
    out: (M, m·p) int8, written and returned."""
    M, n = y2.shape
    m_pad = max(16, triton.next_power_of_2(m))
    ws = torch.empty(M, m_pad, p, dtype=torch.float32, device=y2.device)
    _hadamard_quant_split_kernel[(M, m)](
        y2, A, ws, _counters(y2.device, M), out, scale,
        1.0 / math.sqrt(n), y2.stride(0), out.stride(0),
        M_FACTOR=m, M_PAD=m_pad, K=p, LOG_K=p.bit_length() - 1, num_warps=4 if p <= 512 else 8,
        **pdl_launch_options(y2.device),
    )
    return out
