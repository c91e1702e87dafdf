"""W8A8 linear layer: int8 x int8 -> int32 on the tensor cores, fused dequant epilogue.

Twin of ``quamba.kernels.int8_linear_ref.int8_linear_ref``::

    out = (x_q @ w_q^T) * (x_scale * w_scale) + bias

Three kernels, chosen by M (the number of tokens) and the weight's shape:

* prefill (M > 64): a tiled GEMM, (BLOCK_M, BLOCK_N) output tiles, K loop with
  software pipelining, grouped tile order for L2 reuse, autotuned per
  (M bucket, N, K, descriptors given). On Hopper the autotuner also tries a
  persistent variant whose tiles come in through TMA descriptors (faster for the
  wide in_proj).
* decode (M <= 64): memory-bound on the weight. Computed transposed,
  out^T = W @ x^T, so the weight rows fill the MMA's large M side and the few
  tokens (padded to 16/32/64) the small N side; every weight byte is read once.
  When N alone gives too few programs to keep HBM busy, K is split across
  programs; partial int32 sums go to a workspace and the last program of each
  column block (a counter per block, reset after use) reduces them and runs the
  epilogue, so one launch does it all. int32 sums are exact, so the result does
  not depend on arrival order.
* one or two tokens (QUAMBA_GEMV_ROWS_MAX_M) and N <= K (out_proj, x_proj): a CUDA-core
  dot product per output row and token, one row per program (its weight rows loaded once,
  for every token), no tensor cores. Rows that are whole, aligned int32 words (every Mamba
  shape) are read four int8 a word and multiplied by ``dp4a``, four rows a program
  (``_int8_gemv_words_kernel``: a quarter of the registers, 2.8b's out_proj 7.4 ->
  6.2 µs; QUAMBA_GEMV_WORDS). The int8 version, measured in a CUDA graph on cold
  weights (benchmarks/gemv_rows_experiment.py, H100, mamba-2.8b shapes), beats the
  tensor-core kernel where the weight is narrow: out_proj 7.2 vs 8.9 µs, x_proj 2.7 vs
  4.8 µs; for the wide in_proj the tensor-core kernel stays ahead (11.7 vs 12.3 µs,
  and on words too: docs/benchmarks.md). Thousands of tiny programs balance the SMs and keep HBM busy without a K split. For a model's weights
  (``static_weight=True``) the whole row is loaded before ``pdl_wait``, so under
  programmatic dependent launch it streams while the kernel before still runs
  (QUAMBA_GEMV_ROWS picks other routings for A/B runs: docs/benchmarks.md).

``int8_linear_quant`` is the same with the output requantized to int8
(``quantize_ref(out, out_scale)``) in the epilogue. ``int8_linear_conv_step`` is
in_proj's decode step: the causal conv that consumes in_proj's x half runs in the
decode kernel's epilogue (``conv_step_load``/``conv_step_finish`` in causal_conv1d.py),
one launch a layer fewer. 2.8b decode, H100, A/B alternated three times in one process:
batch 1 2.084 -> 2.032 ms a token, batch 8 2.562 -> 2.477, the logits bit-identical
(docs/sweeps/conv_in_proj_ab_b{1,8}_h100.json).
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ._common import (check_device, check_dtype, check_shape, interpret_mode, next_pow2, pdl_launch_options,
                      pdl_wait, quantize_int8, scalar_scale, wide_interpreter_tiles)
from .causal_conv1d import CONV_STEP_MAX_WIDTH, conv_step_finish, conv_step_load

__all__ = ["int8_linear", "int8_linear_quant", "int8_linear_conv_step", "DECODE_MAX_M"]

DECODE_MAX_M = 64


@triton.jit
def _epilogue(acc, offs_m, offs_n, M, N,
              x_scale_ptr, w_scale_ptr, bias_ptr, out_scale_ptr,
              X_PER_ROW: tl.constexpr, W_PER_COL: tl.constexpr, HAS_BIAS: tl.constexpr,
              QUANT_OUT: tl.constexpr, OUT_PER_COL: tl.constexpr):
    """acc: (BM, BN) int32 -> fp32 (or int8 when QUANT_OUT) dequantized output tile.
    OUT_PER_COL: the requantization scale is a vector over output columns."""
    if X_PER_ROW:
        xs = tl.load(x_scale_ptr + offs_m, mask=offs_m < M, other=0.0)[:, None]
    else:
        xs = tl.load(x_scale_ptr)
    if W_PER_COL:
        ws = tl.load(w_scale_ptr + offs_n, mask=offs_n < N, other=0.0)[None, :]
    else:
        ws = tl.load(w_scale_ptr)
    out = acc.to(tl.float32) * (xs * ws)
    if HAS_BIAS:
        out = out + tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    if QUANT_OUT:
        if OUT_PER_COL:
            out = quantize_int8(out, tl.load(out_scale_ptr + offs_n, mask=offs_n < N, other=1.0)[None, :])
        else:
            out = quantize_int8(out, tl.load(out_scale_ptr))
    return out


# ----------------------------------------------------------------------------- prefill GEMM

@triton.jit
def _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Grouped ordering: GROUP_M row-blocks share each weight column block while it is in L2."""
    group = tile // (GROUP_M * num_pid_n)
    first_m = group * GROUP_M
    group_size = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (tile % (GROUP_M * num_pid_n)) % group_size
    pid_n = (tile % (GROUP_M * num_pid_n)) // group_size
    return pid_m, pid_n


@triton.jit
def _store_tile(acc, pid_m, pid_n, out_ptr, x_scale_ptr, w_scale_ptr, bias_ptr, out_scale_ptr, M, N,
                stride_om, stride_on,
                X_PER_ROW: tl.constexpr, W_PER_COL: tl.constexpr, HAS_BIAS: tl.constexpr,
                QUANT_OUT: tl.constexpr, OUT_PER_COL: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    out = _epilogue(acc, offs_m, offs_n, M, N, x_scale_ptr, w_scale_ptr, bias_ptr, out_scale_ptr,
                    X_PER_ROW, W_PER_COL, HAS_BIAS, QUANT_OUT, OUT_PER_COL)
    o_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty),
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def _int8_gemm_kernel(
    x_ptr, w_ptr, x_desc, w_desc, out_ptr, x_scale_ptr, w_scale_ptr, bias_ptr, out_scale_ptr,
    M, N, K, M_BUCKET, TMA_OK,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_om, stride_on,
    X_PER_ROW: tl.constexpr, W_PER_COL: tl.constexpr, HAS_BIAS: tl.constexpr,
    QUANT_OUT: tl.constexpr, OUT_PER_COL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    TMA: tl.constexpr,
):
    """TMA (Hopper): persistent, one program an SM walking the output tiles, x and W tiles
    loaded by the tensor-memory accelerator from host descriptors (zero-filled past the
    edges); the pipeliner overlaps a tile's epilogue with the next tile's loads. Else a
    program per tile with pointer loads (x_desc, w_desc unused). M_BUCKET and TMA_OK
    (descriptors given) only key the autotuner's choice."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    if TMA:
        for tile in tl.range(tl.program_id(0), num_pid_m * num_pid_n, tl.num_programs(0), flatten=True):
            pid_m, pid_n = _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M)
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
            for k0 in range(0, K, BLOCK_K):
                x = x_desc.load([pid_m * BLOCK_M, k0])
                w = w_desc.load([pid_n * BLOCK_N, k0])
                acc = tl.dot(x, w.T, acc, out_dtype=tl.int32)
            _store_tile(acc, pid_m, pid_n, out_ptr, x_scale_ptr, w_scale_ptr, bias_ptr, out_scale_ptr, M, N,
                        stride_om, stride_on, X_PER_ROW, W_PER_COL, HAS_BIAS, QUANT_OUT, OUT_PER_COL,
                        BLOCK_M, BLOCK_N)
    else:
        pid_m, pid_n = _tile_coords(tl.program_id(0), num_pid_m, num_pid_n, GROUP_M)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk
        w_ptrs = w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk   # (BK, BN) = W^T
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            k_left = K - k * BLOCK_K
            x = tl.load(x_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < k_left), other=0)
            w = tl.load(w_ptrs, mask=(offs_n[None, :] < N) & (offs_k[:, None] < k_left), other=0)
            acc = tl.dot(x, w, acc, out_dtype=tl.int32)
            x_ptrs += BLOCK_K * stride_xk
            w_ptrs += BLOCK_K * stride_wk
        _store_tile(acc, pid_m, pid_n, out_ptr, x_scale_ptr, w_scale_ptr, bias_ptr, out_scale_ptr, M, N,
                    stride_om, stride_on, X_PER_ROW, W_PER_COL, HAS_BIAS, QUANT_OUT, OUT_PER_COL,
                    BLOCK_M, BLOCK_N)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps), tried for every shape.
_GEMM_TILES = [
    (128, 256, 128, 3, 8),
    (128, 128, 128, 4, 8),
    (128, 128, 64, 4, 4),
    (64, 128, 128, 4, 4),
    (128, 64, 128, 4, 4),
    (256, 128, 128, 3, 8),
    (64, 64, 128, 4, 4),
]
# Tried only for a short K (dt_proj: K = dt_rank, 160 at 2.8b), where the K loop is one or
# two steps and a tile's life is its load latency: small tiles and few stages, so several
# programs share an SM and hide it.
_SHORT_K_TILES = [
    (128, 128, 32, 2, 4),
    (64, 128, 64, 2, 4),
    (128, 64, 64, 2, 4),
    (64, 64, 64, 2, 4),
    (64, 64, 32, 3, 4),
]
_SHORT_K = 256


# Persistent TMA tiles (sm_90 / sm_100). H100, 2.8b prefill shapes, fp16 output
# (benchmarks/gemm_tma_experiment.py, docs/sweeps/gemm_tma_h100.json): in_proj at 2048
# tokens 94 µs against 120 for the pointer kernel, out_proj at 4096 102 against 120, out_proj
# at 2048 no faster (61 vs 59). As the W8A8 block calls them (requantizing epilogue,
# benchmarks/prefill_gemm_check.py --gemm-kinds pointer vs both): in_proj 139 -> 113 µs at
# 2048. The autotuner picks among both kinds per shape.
_TMA_TILES = [
    (256, 128, 128, 3, 8),
    (128, 256, 128, 3, 8),
    (128, 128, 128, 4, 8),
    (128, 128, 128, 4, 4),
]


def _set_tma_blocks(nargs):
    """Autotuner pre-hook (every config, before every launch): the descriptors' block
    shapes are a TMA config's tiles. A pointer config does not read the descriptors, but
    their block shapes are part of the compiled signature: a fixed one keeps it to one
    compile (the last TMA config benched would otherwise leave its shape behind)."""
    if nargs["x_desc"] is None:
        return
    if nargs["TMA"]:
        nargs["x_desc"].block_shape = [nargs["BLOCK_M"], nargs["BLOCK_K"]]
        nargs["w_desc"].block_shape = [nargs["BLOCK_N"], nargs["BLOCK_K"]]
    else:
        nargs["x_desc"].block_shape = nargs["w_desc"].block_shape = [16, 16]


def _gemm_configs():
    def config(tile, tma):
        bm, bn, bk, stages, warps = tile
        return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "TMA": tma},
                             num_stages=stages, num_warps=warps, pre_hook=_set_tma_blocks)
    return ([config(t, False) for t in _GEMM_TILES + _SHORT_K_TILES]
            + [config(t, True) for t in _TMA_TILES])


def _prune_gemm_configs(configs, named_args, **kwargs):
    """The short-K tiles only for a short K (autotuning a new shape times every config
    left, so the list stays short). H100, 2.8b dt_proj (K 160, N 5120): 27.8 -> 19.0 µs
    at 2048 tokens (docs/sweeps/prefill_gemm_shortk_2.8b_h100.json against
    prefill_gemm_2.8b_h100.json). 256-wide column tiles for x_proj's narrow N were tried
    there too: no gain (15.8 vs 15.6 µs at 2048). The TMA tiles only where the caller
    made descriptors (``_tma_descriptors``)."""
    keep = set(_GEMM_TILES)
    if named_args["K"] <= _SHORT_K:
        keep |= set(_SHORT_K_TILES)
    kinds = _gemm_kinds()
    tma = bool(named_args["TMA_OK"]) and kinds in ("both", "tma")
    pointer = kinds in ("both", "pointer") or not tma
    def tile(c):
        return (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_stages, c.num_warps)
    return [c for c in configs if (tma if c.kwargs["TMA"] else pointer and tile(c) in keep)]


def _gemm_kinds() -> str:
    """Which prefill kernels the autotuner may pick (QUAMBA_PREFILL_GEMM): "both" (default),
    "tma" or "pointer", for tests and A/B runs. Checked on every prefill GEMM call, but it
    takes effect when a shape is first tuned: a process that changes it must clear
    ``_int8_gemm_tuned.cache``."""
    value = os.environ.get("QUAMBA_PREFILL_GEMM", "both")
    if value not in ("both", "tma", "pointer"):
        raise ValueError(f"QUAMBA_PREFILL_GEMM={value!r}: use both, tma or pointer")
    return value


def _tma_descriptors(x2: torch.Tensor, w_q: torch.Tensor):
    """Host TMA descriptors of x (M, K) and W (N, K) for the persistent kernel, or
    (None, None) where it does not apply: in the interpreter, on ROCm, off sm_90 / sm_100
    (Ampere and Ada have no TMA; consumer Blackwell, sm_120, has too little shared memory
    for these tiles), or when a tensor's base or row is not 16-byte aligned or its rows
    are not contiguous. The block shapes are set per config (``_set_tma_blocks``)."""
    if (interpret_mode() or x2.device.type != "cuda" or torch.version.hip is not None
            or torch.cuda.get_device_capability(x2.device)[0] not in (9, 10)):
        return None, None
    for t in (x2, w_q):
        if t.stride(1) != 1 or t.stride(0) % 16 or t.data_ptr() % 16:
            return None, None
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor
    except ImportError:   # a Triton without host descriptors: the pointer kernel only
        return None, None
    return TensorDescriptor.from_tensor(x2, [16, 16]), TensorDescriptor.from_tensor(w_q, [16, 16])


def _autotune_timer(kernel_call, quantiles):
    """Times a config for the autotuner in a CUDA graph. Triton's default timer clears L2
    between runs by writing a 256 MB buffer, which made the first prefill of each new
    length the peak of a W8A8 model's memory (mamba-2.8b shape, H100: 0.30 GiB above
    what was allocated, against 0.09 with this timer; benchmarks/memory_breakdown.py).
    Graph replays need no buffer. The assumption: that the 13-26 MB weights then stay
    partly in L2 between replays changes the configs' times about alike (the ranking,
    not the absolute time, is what the autotuner needs). ``do_bench=`` needs triton 3.3+."""
    if interpret_mode():
        return triton.runtime.driver.active.get_benchmarker()(kernel_call, quantiles=quantiles)
    return triton.testing.do_bench_cudagraph(kernel_call, quantiles=quantiles)


_int8_gemm_tuned = triton.autotune(configs=_gemm_configs(), key=["M_BUCKET", "N", "K", "TMA_OK"],
                                   prune_configs_by={"early_config_prune": _prune_gemm_configs},
                                   do_bench=_autotune_timer)(_int8_gemm_kernel)


# ----------------------------------------------------------------------------- decode GEMV

@triton.jit
def _leading_rows(tile, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ROWS: tl.constexpr):
    """The first ROWS rows of a (BLOCK_M, BLOCK_N) tile (a select and an exact sum of zeros)."""
    if ROWS == BLOCK_M:
        return tile
    blocks = tl.reshape(tile, (BLOCK_M // ROWS, ROWS, BLOCK_N))
    first = tl.arange(0, BLOCK_M // ROWS)[:, None, None] == 0
    return tl.sum(tl.where(first, blocks, 0), axis=0).to(tile.dtype)


@triton.jit
def _int8_gemv_kernel(
    x_ptr, w_ptr, out_ptr, x_scale_ptr, w_scale_ptr, bias_ptr, out_scale_ptr,
    ws_ptr, lock_ptr,
    conv_w_ptr, conv_w_scale_ptr, conv_bias_ptr, conv_state_ptr, conv_x_scale_ptr, conv_out_scale_ptr,
    M, N, K, K_PER_SPLIT, CONV_DIM,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_om, stride_on,
    X_PER_ROW: tl.constexpr, W_PER_COL: tl.constexpr, HAS_BIAS: tl.constexpr,
    QUANT_OUT: tl.constexpr, OUT_PER_COL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    USE_PDL: tl.constexpr, CONV_WIDTH: tl.constexpr = 0, CONV_W_PER_CH: tl.constexpr = False,
    CONV_HAS_BIAS: tl.constexpr = False, CONV_EARLY: tl.constexpr = False, CONV_ROWS: tl.constexpr = 1,
    EARLY_BLOCKS: tl.constexpr = 0, TRIGGER_FIRST: tl.constexpr = False,
):
    """Computes the (BLOCK_N, BLOCK_M) tile of out^T = W @ x^T over one K split.

    CONV_WIDTH > 0 (no K split; one token per sequence): the output columns below CONV_DIM
    are the input of a causal conv, run here as one decode step on the int8 tile
    (``conv_step_load`` before the main loop, ``conv_step_finish`` in the epilogue: the
    conv state updated in place, u written in their place). CONV_EARLY: the state and
    conv weights are loaded before ``pdl_wait``. The conv runs on the tile's first
    CONV_ROWS rows only (>= M; the MMA pads the tokens to 16, and at one token the
    other 15 rows would cost the epilogue 16 times the conv's work).
    EARLY_BLOCKS: the first EARLY_BLOCKS K blocks of W are loaded before ``pdl_wait`` (a
    static weight; see ``int8_linear_conv_step``'s early_weight), as one tile, multiplied
    by one product after the wait."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    k_start = pid_k * K_PER_SPLIT
    k_stop = tl.minimum(k_start + K_PER_SPLIT, K)
    w_ptrs = w_ptr + offs_n[:, None] * stride_wn + (k_start + offs_k)[None, :] * stride_wk
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + (k_start + offs_k)[None, :] * stride_xk
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int32)
    if CONV_WIDTH > 0 and CONV_EARLY:
        conv_taps = conv_step_load(conv_state_ptr, conv_w_ptr, tl.arange(0, CONV_ROWS), offs_n, M, CONV_DIM,
                                   CONV_WIDTH)
    EARLY_K: tl.constexpr = EARLY_BLOCKS * BLOCK_K
    tl.static_assert((EARLY_BLOCKS & (EARLY_BLOCKS - 1)) == 0, "the early blocks are one tile: a power of two")
    if EARLY_BLOCKS > 0:   # the first K blocks of a static weight, before the wait
        offs_e = tl.arange(0, EARLY_K)
        w_first = tl.load(w_ptr + offs_n[:, None] * stride_wn + (k_start + offs_e)[None, :] * stride_wk,
                          mask=(offs_n[:, None] < N) & (offs_e[None, :] < k_stop - k_start), other=0)
    pdl_wait(USE_PDL, TRIGGER_FIRST)
    if CONV_WIDTH > 0 and not CONV_EARLY:
        conv_taps = conv_step_load(conv_state_ptr, conv_w_ptr, tl.arange(0, CONV_ROWS), offs_n, M, CONV_DIM,
                                   CONV_WIDTH)
    if EARLY_BLOCKS > 0:
        x_first = tl.load(x_ptr + offs_m[:, None] * stride_xm + (k_start + offs_e)[None, :] * stride_xk,
                          mask=(offs_m[:, None] < M) & (offs_e[None, :] < k_stop - k_start), other=0)
        acc = tl.dot(w_first, tl.trans(x_first), acc, out_dtype=tl.int32)
        w_ptrs += EARLY_K * stride_wk
        x_ptrs += EARLY_K * stride_xk
    for kk in range(EARLY_BLOCKS, tl.cdiv(k_stop - k_start, BLOCK_K)):
        k_left = k_stop - k_start - kk * BLOCK_K
        w = tl.load(w_ptrs, mask=(offs_n[:, None] < N) & (offs_k[None, :] < k_left), other=0)
        x = tl.load(x_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < k_left), other=0)
        acc = tl.dot(w, tl.trans(x), acc, out_dtype=tl.int32)
        w_ptrs += BLOCK_K * stride_wk
        x_ptrs += BLOCK_K * stride_xk

    acc = tl.trans(acc)                                           # (BLOCK_M, BLOCK_N)
    o_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    o_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    if SPLIT_K == 1:
        out = _epilogue(acc, offs_m, offs_n, M, N, x_scale_ptr, w_scale_ptr, bias_ptr, out_scale_ptr,
                        X_PER_ROW, W_PER_COL, HAS_BIAS, QUANT_OUT, OUT_PER_COL)
        if CONV_WIDTH > 0:
            offs_r = tl.arange(0, CONV_ROWS)
            out = conv_step_finish(_leading_rows(out, BLOCK_M, BLOCK_N, CONV_ROWS), conv_taps, offs_r, offs_n, M,
                                   CONV_DIM, conv_state_ptr, conv_x_scale_ptr, conv_w_scale_ptr, conv_bias_ptr,
                                   conv_out_scale_ptr, CONV_WIDTH, CONV_W_PER_CH, CONV_HAS_BIAS)
            o_mask = (offs_r[:, None] < M) & (offs_n[None, :] < N)
            o_ptrs = out_ptr + offs_r[:, None] * stride_om + offs_n[None, :] * stride_on
        tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=o_mask)
    else:
        # Workspace ws[split, m, n] int32 (contiguous, BLOCK_M rows per split).
        ws_tile = ws_ptr + pid_k * BLOCK_M * N + offs_m[:, None] * N + offs_n[None, :]
        tl.store(ws_tile, acc, mask=o_mask)
        # All threads' stores happen before the counter increment (barrier, then a
        # release at GPU scope); the last arrival acquires and reduces.
        tl.debug_barrier()
        arrived = tl.atomic_add(lock_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT_K - 1:
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
            for s in range(0, SPLIT_K):
                part_ptrs = ws_ptr + s * BLOCK_M * N + offs_m[:, None] * N + offs_n[None, :]
                total += tl.load(part_ptrs, mask=o_mask, other=0, cache_modifier=".cg")
            out = _epilogue(total, offs_m, offs_n, M, N, x_scale_ptr, w_scale_ptr, bias_ptr,
                            out_scale_ptr, X_PER_ROW, W_PER_COL, HAS_BIAS, QUANT_OUT, OUT_PER_COL)
            tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=o_mask)
            tl.atomic_xchg(lock_ptr + pid_n, 0)               # ready for the next launch


@triton.jit
def _int8_gemv_rows_kernel(
    x_ptr, w_ptr, out_ptr, x_scale_ptr, w_scale_ptr, bias_ptr, out_scale_ptr,
    N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_om, stride_on,
    X_PER_ROW: tl.constexpr, W_PER_COL: tl.constexpr, HAS_BIAS: tl.constexpr,
    QUANT_OUT: tl.constexpr, OUT_PER_COL: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SINGLE_PASS: tl.constexpr, EARLY_WEIGHT: tl.constexpr,
    M_ROWS: tl.constexpr, USE_PDL: tl.constexpr, TRIGGER_FIRST: tl.constexpr = False,
):
    """A few tokens: out[m, n] = sum_k x[m, k] * W[n, k] for BLOCK_N rows of W and the
    M_ROWS tokens, on the CUDA cores.

    SINGLE_PASS (BLOCK_K >= K): the program's whole weight slab in one load, reused for
    every token (M_ROWS > 1 only here). With EARLY_WEIGHT (the caller promises the
    weight is static: no kernel writes it) that load comes *before* ``pdl_wait``, so
    under programmatic dependent launch the programs that fit on the GPU while the
    previous (latency-bound) kernel still runs stream their weights during it."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    nm = offs_n < N
    if SINGLE_PASS:
        km = offs_k < K
        if not EARLY_WEIGHT:
            pdl_wait(USE_PDL, TRIGGER_FIRST)
        w = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk,
                    mask=nm[:, None] & km[None, :], other=0)
        if EARLY_WEIGHT:
            pdl_wait(USE_PDL, TRIGGER_FIRST)
        w = w.to(tl.int32)
        for m in tl.static_range(1, M_ROWS):   # tokens 1.. here; token 0 below, as for one token
            x = tl.load(x_ptr + m * stride_xm + offs_k * stride_xk, mask=km, other=0)
            total_m = tl.reshape(tl.sum(w * x.to(tl.int32)[None, :], axis=1), (1, BLOCK_N))
            out_m = _epilogue(total_m, tl.arange(0, 1) + m, offs_n, M_ROWS, N, x_scale_ptr, w_scale_ptr,
                              bias_ptr, out_scale_ptr, X_PER_ROW, W_PER_COL, HAS_BIAS, QUANT_OUT, OUT_PER_COL)
            tl.store(out_ptr + m * stride_om + offs_n[None, :] * stride_on, out_m.to(out_ptr.dtype.element_ty),
                     mask=nm[None, :])
        x = tl.load(x_ptr + offs_k * stride_xk, mask=km, other=0)
        total = tl.sum(w * x.to(tl.int32)[None, :], axis=1)
    else:
        pdl_wait(USE_PDL, TRIGGER_FIRST)
        # Elementwise int32 products, reduced once at the end: the loop body is loads
        # and multiply-adds only, so the loads of the next slice issue early.
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            km = (k0 + offs_k) < K
            w = tl.load(w_ptr + offs_n[:, None] * stride_wn + (k0 + offs_k)[None, :] * stride_wk,
                        mask=nm[:, None] & km[None, :], other=0)
            x = tl.load(x_ptr + (k0 + offs_k) * stride_xk, mask=km, other=0)
            acc += w.to(tl.int32) * x.to(tl.int32)[None, :]
        total = tl.sum(acc, axis=1)
    total = tl.reshape(total, (1, BLOCK_N))
    offs_m = tl.arange(0, 1)
    out = _epilogue(total, offs_m, offs_n, 1, N, x_scale_ptr, w_scale_ptr, bias_ptr, out_scale_ptr,
                    X_PER_ROW, W_PER_COL, HAS_BIAS, QUANT_OUT, OUT_PER_COL)
    tl.store(out_ptr + offs_n[None, :] * stride_on, out.to(out_ptr.dtype.element_ty), mask=nm[None, :])


@triton.jit
def _dot4(w, x, acc, DP4A: tl.constexpr):
    """acc + the dot product of the four int8 lanes packed (little-endian) in each int32 of w and x.
    DP4A: one ``dp4a`` instruction a word (sm_61+); otherwise each lane is sign-extended by
    shifts (the interpreter's path: it runs no inline PTX). Both are exact in int32."""
    if DP4A:
        return tl.inline_asm_elementwise("dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r", [w, x, acc],
                                         dtype=tl.int32, is_pure=True, pack=1)
    else:
        for lane in tl.static_range(4):
            acc += ((w << (24 - 8 * lane)) >> 24) * ((x << (24 - 8 * lane)) >> 24)
        return acc


@triton.jit
def _int8_gemv_words_kernel(
    x_ptr, w_ptr, out_ptr, x_scale_ptr, w_scale_ptr, bias_ptr, out_scale_ptr,
    N, KW, stride_xm, stride_wn, stride_om, stride_on,
    X_PER_ROW: tl.constexpr, W_PER_COL: tl.constexpr, HAS_BIAS: tl.constexpr,
    QUANT_OUT: tl.constexpr, OUT_PER_COL: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_HEAD: tl.constexpr, BLOCK_TAIL: tl.constexpr, EARLY_WEIGHT: tl.constexpr,
    M_ROWS: tl.constexpr, USE_PDL: tl.constexpr, DP4A: tl.constexpr, TRIGGER_FIRST: tl.constexpr = False,
):
    """The rows kernel's single pass on int32 words: x and W are read as four int8 values a
    word, kept packed in registers (a quarter of the registers the int8 tile takes, so more
    programs fit an SM and load their rows before ``pdl_wait``) and multiplied four at a time.

    A row's KW words are a BLOCK_HEAD block (a power of two, at most KW) and a masked
    BLOCK_TAIL block after it (0 when the head covers the row): 5120 int8 are 1024 + 256
    words, not 2048 with 768 masked off."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    nm = offs_n < N
    offs_h = tl.arange(0, BLOCK_HEAD)
    offs_t = BLOCK_HEAD + tl.arange(0, BLOCK_TAIL if BLOCK_TAIL > 0 else 1)
    tm = offs_t < KW
    if not EARLY_WEIGHT:
        pdl_wait(USE_PDL, TRIGGER_FIRST)
    w_head = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_h[None, :], mask=nm[:, None], other=0)
    if BLOCK_TAIL > 0:
        w_tail = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_t[None, :], mask=nm[:, None] & tm[None, :],
                         other=0)
    if EARLY_WEIGHT:
        pdl_wait(USE_PDL, TRIGGER_FIRST)
    for m in tl.static_range(M_ROWS):
        x_head = tl.load(x_ptr + m * stride_xm + offs_h)
        total = tl.sum(_dot4(w_head, x_head[None, :], tl.zeros_like(w_head), DP4A), axis=1)
        if BLOCK_TAIL > 0:
            x_tail = tl.load(x_ptr + m * stride_xm + offs_t, mask=tm, other=0)
            total += tl.sum(_dot4(w_tail, x_tail[None, :], tl.zeros_like(w_tail), DP4A), axis=1)
        out = _epilogue(tl.reshape(total, (1, BLOCK_N)), tl.arange(0, 1) + m, offs_n, M_ROWS, N, x_scale_ptr,
                        w_scale_ptr, bias_ptr, out_scale_ptr, X_PER_ROW, W_PER_COL, HAS_BIAS, QUANT_OUT,
                        OUT_PER_COL)
        tl.store(out_ptr + m * stride_om + offs_n[None, :] * stride_on, out.to(out_ptr.dtype.element_ty),
                 mask=nm[None, :])


def _as_words(t: torch.Tensor) -> torch.Tensor | None:
    """A 2-D int8 tensor seen as int32 words (four values each), or None where its rows are
    not whole, 4-byte aligned runs of words."""
    if (t.shape[1] == 0 or t.stride(1) != 1 or t.shape[1] % 4 or t.stride(0) % 4 or t.data_ptr() % 4
            or t.storage_offset() % 4):
        return None
    return t.view(torch.int32)


def _words_mode() -> str:
    """QUAMBA_GEMV_WORDS: "dp4a" (default), "shift" (lanes sign-extended by shifts, for A/B
    runs), or "off" (the int8 rows kernel)."""
    mode = os.environ.get("QUAMBA_GEMV_WORDS", "dp4a")
    if mode not in ("dp4a", "shift", "off"):
        raise ValueError(f"QUAMBA_GEMV_WORDS={mode!r}: use dp4a, shift or off")
    return mode


def _head_tail(kw: int) -> tuple[int, int]:
    """A row of kw words as a power-of-two head and a (masked) power-of-two tail."""
    head = 1 << (kw.bit_length() - 1)
    return head, (next_pow2(kw - head) if kw > head else 0)


def _rows_max_m() -> int:
    """Up to how many tokens the CUDA-core kernel serves narrow weights (QUAMBA_GEMV_ROWS_MAX_M,
    for A/B runs). Default 2: its int32 work grows with the tokens while the tensor-core
    kernel's does not. 2.8b decode A/B (H100, docs/sweeps/rows_max_m_ab_b*_h100.json), 1 vs 8:
    batch 2 2.92 -> 2.87 ms, batch 4 3.02 -> 3.42, batch 8 3.04 -> 4.34; batch 1 the same."""
    value = os.environ.get("QUAMBA_GEMV_ROWS_MAX_M", "2")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"QUAMBA_GEMV_ROWS_MAX_M={value!r}: use a positive integer")
    return int(value)


def _rows_config(M: int, N: int, K: int, words: bool = False) -> dict | None:
    """The CUDA-core kernel's shape for M tokens, or None where the tensor-core
    kernel is used. QUAMBA_GEMV_ROWS: "narrow" (default: N <= K, the whole row in one
    pass), "all" (wide weights too), "loop" (narrow, two rows a program in 1024-wide
    slices: the first measured version), "off". words: the rows are read as int32 words
    (``_int8_gemv_words_kernel``)."""
    mode = os.environ.get("QUAMBA_GEMV_ROWS", "narrow")
    if mode not in ("narrow", "all", "loop", "off"):
        raise ValueError(f"QUAMBA_GEMV_ROWS={mode!r}: use narrow, all, loop or off")
    if mode == "off" or (N > K and mode != "all"):
        return None
    if mode == "loop":
        return dict(BLOCK_N=2, BLOCK_K=1024, num_warps=4) if N >= 1024 else dict(BLOCK_N=1, BLOCK_K=2048, num_warps=8)
    if next_pow2(K) <= 8192:
        if words:
            # On words a thread's share takes a quarter of the registers: four rows a program,
            # 8 warps for wide outputs (out_proj; 2.8b: 20 words a thread), 4 for narrow ones
            # (x_proj, 130m's out_proj), for one token and for two. Decode A/B on an H100, 64
            # replays queued, logits bit-identical (docs/sweeps/words_{shape,narrow}_ab_*_h100.json).
            # Wide: 2.8b 1.783 (two rows, 8 warps) -> 1.728 ms, 1.4b 1.002 (two rows, 4 warps)
            # -> 1.000; one or eight rows were slower at 2.8b (1.832, 1.744). Narrow, against one
            # row and 4 warps: 2.8b 1.721 -> 1.692, 1.4b 1.001 -> 0.996, 130m 0.339 -> 0.332.
            # Two tokens, both against one row and 4 warps: 2.8b 1.982 -> 1.869.
            return dict(BLOCK_N=4, BLOCK_K=next_pow2(K), num_warps=8 if N >= 1024 else 4)
        if M == 1 and N >= 1024:
            # One token, a wide output (out_proj): two rows a program, 64 weight bytes a
            # thread. Decode A/B on an H100 against one row and 4 warps, logits bit-identical
            # (docs/sweeps/out_proj_rows_cfg_ab_*_h100.json): 1.4b 1.10 -> 1.04 ms, 790m 0.89
            # -> 0.85, 370m 0.70 -> 0.68, 2.8b 1.86 -> 1.85 (130m's out_proj, N 768, is narrower);
            # at two tokens 2.8b was slower (2.07 -> 2.18).
            return dict(BLOCK_N=2, BLOCK_K=next_pow2(K), num_warps=max(1, min(8, next_pow2(K) // 1024)))
        return dict(BLOCK_N=1, BLOCK_K=next_pow2(K), num_warps=4)
    return dict(BLOCK_N=2, BLOCK_K=1024, num_warps=4)


def _rows_shape_override(cfg: dict, N: int) -> dict:
    """For A/B runs: QUAMBA_GEMV_ROWS_SHAPE="BLOCK_NxWARPS" (e.g. 2x8) replaces the single-pass
    shape of wide outputs (N >= 1024: out_proj), QUAMBA_GEMV_ROWS_SHAPE_NARROW that of the others
    (x_proj)."""
    name = "QUAMBA_GEMV_ROWS_SHAPE" if N >= 1024 else "QUAMBA_GEMV_ROWS_SHAPE_NARROW"
    value = os.environ.get(name)
    if not value:
        return cfg
    parts = value.split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 and next_pow2(int(p)) == int(p) for p in parts):
        raise ValueError(f"{name}={value!r}: use BLOCK_NxWARPS, powers of two, e.g. 2x8")
    return dict(cfg, BLOCK_N=int(parts[0]), num_warps=int(parts[1]))


def _rows_route(M: int, N: int, K: int, words: bool = False) -> dict | None:
    """The CUDA-core kernel's shape where it serves these M tokens, else None."""
    cfg = _rows_config(M, N, K, words) if M <= _rows_max_m() and _GEMV_OVERRIDE is None else None
    if cfg is not None and cfg["BLOCK_K"] >= K:
        cfg = _rows_shape_override(cfg, N)
    if cfg is not None and M > 1 and cfg["BLOCK_K"] < K:
        return None   # several tokens only in the single-pass variant (the slab reused from registers)
    return cfg


def _early_blocks(requested: int, cfg: dict) -> int:
    """``early_weight``'s K blocks, halved until they fit the program's K range (a power of two:
    they are loaded as one tile)."""
    blocks = 1 << (int(requested).bit_length() - 1) if requested > 0 else 0
    while blocks > 1 and blocks * cfg["BLOCK_K"] > cfg["K_PER_SPLIT"]:
        blocks //= 2
    return blocks


# Per-device zeroed counters for the split-K reduction; every launch leaves them at zero.
_LOCKS: dict[torch.device, torch.Tensor] = {}


def _locks(device: torch.device, n: int) -> torch.Tensor:
    buf = _LOCKS.get(device)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 4096), dtype=torch.int32, device=device)
        _LOCKS[device] = buf
    return buf


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


# Set by benchmarks/kernels_gpu.py, decode_sweep.py and split_k_sweep.py to sweep the decode
# kernel's shape (SPLIT_K: a split count to force, >= 1); None in normal use.
_GEMV_OVERRIDE: dict | None = None


def _gemv_config(M: int, N: int, K: int, device: torch.device) -> dict:
    """Block shape and K split for the decode kernel (a heuristic, not autotuned:
    the split-K counters make repeated benchmark launches harmless, but the
    choice is simple enough to state)."""
    o = _GEMV_OVERRIDE or {}
    # From graph-timed sweeps on an H100 (docs/sweeps/decode_sweep_h100.json): 64-column
    # tiles, 32 for narrow weights at 64 tokens; 4 stages up to 32 tokens, 3 at 64
    # (in_proj 14.2 -> 12.9 µs, out_proj 13.6 -> 11.2, x_proj 8.4 -> 6.3).
    block_m = max(16, next_pow2(M))
    block_n = o.get("BLOCK_N", 64 if M <= 32 or N >= 1024 else 32)
    block_k = o.get("BLOCK_K", 256)
    stages = o.get("num_stages", 4 if M <= 32 else 3)
    if interpret_mode():
        block_k = 64
        if "BLOCK_N" not in o and wide_interpreter_tiles():   # fewer, wider programs (its cost is per program)
            block_n = max(block_n, min(next_pow2(N), 256))
    n_blocks = triton.cdiv(N, block_n)
    k_blocks = triton.cdiv(K, block_k)
    # Split K (doubling) while the programs would still fit one wave, one per SM, and
    # each split keeps two K blocks. Until late on 2026-11-24 the target was two programs an SM up
    # to 32 tokens; one is faster in whole decode steps ("hybrid" in the A/B,
    # docs/sweeps/split_rule_three_ab_*_h100.json): 1.4b batch 16 1.77 -> 1.67 ms (in_proj
    # no longer split), batch 4 1.456 -> 1.426 (out_proj split 4 ways, not 8), 2.8b batch 4
    # and 16 the same. A finer rule that won kernel by kernel (docs/sweeps/split_k_h100.json:
    # non-power-of-two splits, 32-column x_proj tiles; "new" in the A/B) lost at 2.8b batch
    # 4 and 64 in whole steps (and won about 2% at batch 16).
    target = o.get("PROGRAMS_PER_SM", 1) * _num_sms(device)
    split = 1
    while split < o.get("MAX_SPLIT", 16) and n_blocks * split * 2 <= target and k_blocks >= split * 2 * 2:
        split *= 2
    split = max(1, o.get("SPLIT_K", split))
    k_per_split = triton.cdiv(k_blocks, split) * block_k
    split = triton.cdiv(K, k_per_split)
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split,
                K_PER_SPLIT=k_per_split, num_warps=o.get("num_warps", 4),
                num_stages=stages)


# ----------------------------------------------------------------------------- wrappers

def _launch(x_q, w_q, x_scale, w_scale, bias, out_scale, out_dtype, op, out=None, static_weight=False,
            conv=None, early_trigger=False):
    """conv: the GEMV's conv epilogue (``_ConvStep``), only where ``_conv_fusable`` said so.
    early_trigger: a decode launch lets the next kernel start before its own wait
    (``pdl_wait``'s TRIGGER_FIRST; see ``int8_linear``)."""
    check_device(op, x_q, w_q, x_scale, w_scale, bias, out_scale, out)
    check_dtype(op, "x_q", x_q, (torch.int8,))
    check_dtype(op, "w_q", w_q, (torch.int8,))
    if w_q.dim() != 2:
        raise ValueError(f"{op}: w_q must be (N, K), got shape {tuple(w_q.shape)}")
    N, K = w_q.shape
    if x_q.dim() < 1 or x_q.shape[-1] != K:
        raise ValueError(f"{op}: x_q must be (..., K={K}) to match w_q {tuple(w_q.shape)}, "
                         f"got shape {tuple(x_q.shape)}")
    lead = x_q.shape[:-1]
    x2 = x_q.reshape(-1, K)
    M = x2.shape[0]
    if not isinstance(x_scale, torch.Tensor) or not isinstance(w_scale, torch.Tensor):
        raise ValueError(f"{op}: x_scale and w_scale must be fp32 tensors")
    if x_scale.numel() == 1:
        x_per_row = False
        xs = x_scale.reshape(()).float()
    elif x_scale.numel() == M and (x_scale.dim() == 0 or x_scale.shape[-1] == 1):
        x_per_row = True
        xs = x_scale.reshape(M).float().contiguous()
    else:
        raise ValueError(f"{op}: x_scale must be per-tensor (one element) or per-token "
                         f"(..., 1) with {M} elements, got shape {tuple(x_scale.shape)}")
    if w_scale.numel() == 1:
        w_per_col = False
        wsc = w_scale.reshape(()).float()
    elif w_scale.numel() == N:
        w_per_col = True
        wsc = w_scale.reshape(N).float().contiguous()
    else:
        raise ValueError(f"{op}: w_scale must be per-tensor (one element) or per-output-channel "
                         f"({N},), got shape {tuple(w_scale.shape)}")
    if bias is not None:
        if bias.numel() != N:
            raise ValueError(f"{op}: bias must have {N} elements, got shape {tuple(bias.shape)}")
        bias = bias.reshape(N).contiguous()
    quant_out = out_scale is not None
    out_per_col = False
    if quant_out:
        if isinstance(out_scale, torch.Tensor) and out_scale.numel() == N and N > 1:
            out_per_col = True
            out_scale = out_scale.reshape(N).float().contiguous()
        else:
            out_scale = scalar_scale(op, "out_scale", out_scale)
    want = torch.int8 if quant_out else out_dtype
    if out is None:
        out = torch.empty(M, N, dtype=want, device=x_q.device)
    else:
        check_dtype(op, "out", out, (want,))
        if tuple(out.shape) != tuple(lead) + (N,) or not out.is_contiguous():
            raise ValueError(f"{op}: out must be a contiguous {tuple(lead) + (N,)} tensor, "
                             f"got shape {tuple(out.shape)}")
        out = out.view(M, N)
    if M == 0:
        return out.reshape(*lead, N)
    dummy = wsc  # any valid pointer for absent optional inputs
    flags = dict(X_PER_ROW=x_per_row, W_PER_COL=w_per_col, HAS_BIAS=bias is not None,
                 QUANT_OUT=quant_out, OUT_PER_COL=out_per_col)
    args_ptr = (x2, w_q, out, xs, wsc, bias if bias is not None else dummy,
                out_scale if quant_out else dummy)
    words = _words_mode()
    # Only the rows kernel (a few tokens) reads words: no views for the GEMMs.
    use_words = words != "off" and M <= _rows_max_m()
    x_words, w_words = (_as_words(x2), _as_words(w_q)) if use_words else (None, None)
    rows_cfg = _rows_route(M, N, K, words=x_words is not None and w_words is not None)
    if rows_cfg is not None:
        bn = rows_cfg["BLOCK_N"]
        bk = min(rows_cfg["BLOCK_K"], next_pow2(K))
        if interpret_mode() and bk < K:
            bk = min(64, bk)   # the looped variant in small steps (the interpreter is slow on wide tiles)
        if wide_interpreter_tiles():
            # Up to 256 rows a program: the interpreter's cost is per program and per op, and each
            # row's int32 sum is the same whatever the tile.
            bn = max(bn, min(next_pow2(N), 256))
        if bk >= K and x_words is not None and w_words is not None:
            head, tail = _head_tail(K // 4)
            _int8_gemv_words_kernel[(triton.cdiv(N, bn),)](
                x_words, w_words, *args_ptr[2:], N, K // 4, x_words.stride(0), w_words.stride(0),
                out.stride(0), out.stride(1), **flags, BLOCK_N=bn, BLOCK_HEAD=head, BLOCK_TAIL=tail,
                EARLY_WEIGHT=static_weight, M_ROWS=M, DP4A=words == "dp4a" and not interpret_mode(),
                TRIGGER_FIRST=early_trigger, num_warps=rows_cfg["num_warps"], **pdl_launch_options(x_q.device))
        else:
            _int8_gemv_rows_kernel[(triton.cdiv(N, bn),)](
                *args_ptr, N, K, x2.stride(0), x2.stride(1), w_q.stride(0), w_q.stride(1), out.stride(0),
                out.stride(1), **flags, BLOCK_N=bn, BLOCK_K=bk, SINGLE_PASS=bk >= K, EARLY_WEIGHT=static_weight,
                M_ROWS=M, TRIGGER_FIRST=early_trigger, num_warps=rows_cfg["num_warps"],
                **pdl_launch_options(x_q.device))
    elif M <= DECODE_MAX_M:
        cfg = _gemv_config(M, N, K, x_q.device)
        if conv is not None:
            # The conv needs whole output columns in one program: no K split. At the 370m
            # shape this beats the split the heuristic picks (see CONV_STEP_MAX_M's note).
            cfg = dict(cfg, SPLIT_K=1, K_PER_SPLIT=triton.cdiv(K, cfg["BLOCK_K"]) * cfg["BLOCK_K"])
        split = cfg["SPLIT_K"]
        n_blocks = triton.cdiv(N, cfg["BLOCK_N"])
        ws = (torch.empty(split * cfg["BLOCK_M"] * N, dtype=torch.int32, device=x_q.device)
              if split > 1 else dummy)
        locks = _locks(x_q.device, n_blocks) if split > 1 else dummy
        if conv is None:
            conv_ptrs, conv_dim, conv_flags = (dummy,) * 6, 0, {}
        else:
            conv_ptrs = (conv.weight, conv.weight_scale, conv.bias if conv.bias is not None else dummy,
                         conv.state, conv.x_scale, conv.out_scale)
            conv_dim, width = conv.weight.shape
            conv_flags = dict(CONV_WIDTH=width, CONV_W_PER_CH=conv.weight_scale.numel() > 1,
                              CONV_HAS_BIAS=conv.bias is not None, CONV_EARLY=conv.early_state,
                              CONV_ROWS=next_pow2(M))
        _int8_gemv_kernel[(n_blocks, split)](
            *args_ptr, ws, locks, *conv_ptrs,
            M, N, K, cfg["K_PER_SPLIT"], conv_dim,
            x2.stride(0), x2.stride(1), w_q.stride(0), w_q.stride(1), out.stride(0), out.stride(1),
            **flags, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
            SPLIT_K=split, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **conv_flags,
            EARLY_BLOCKS=_early_blocks(conv.early_weight, cfg) if conv is not None else 0,
            TRIGGER_FIRST=early_trigger, **pdl_launch_options(x_q.device))
    else:
        strides = (x2.stride(0), x2.stride(1), w_q.stride(0), w_q.stride(1),
                   out.stride(0), out.stride(1))
        _gemm_kinds()   # a bad QUAMBA_PREFILL_GEMM is refused on every call, not only when tuning
        if interpret_mode():
            # The interpreter is slow and autotuning would run every config: use one.
            bm, bn, bk = 32, 32, 32
            grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
            _int8_gemm_kernel[grid](x2, w_q, None, None, *args_ptr[2:], M, N, K, 0, 0, *strides, **flags,
                                    BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=4, TMA=False)
        else:
            m_bucket = min(next_pow2(M), 8192)
            x_desc, w_desc = _tma_descriptors(x2, w_q)
            sms = _num_sms(x_q.device)

            def grid(meta):
                tiles = triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])
                return (min(tiles, sms) if meta["TMA"] else tiles,)
            _int8_gemm_tuned[grid](x2, w_q, x_desc, w_desc, *args_ptr[2:], M, N, K, m_bucket,
                                   int(x_desc is not None), *strides, **flags)
    return out.reshape(*lead, N)


def int8_linear(
    x_q: torch.Tensor,
    w_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float16,
    out: torch.Tensor | None = None,
    static_weight: bool = False,
    early_trigger: bool = False,
) -> torch.Tensor:
    """x_q: (..., K) int8; w_q: (N, K) int8; x_scale: fp32, one element or (..., 1)
    per token; w_scale: fp32, one element or (N,); bias: (N,) or None.
    Returns (x_q @ w_q^T) * x_scale * w_scale + bias as (..., N) in out_dtype
    (written to ``out`` when given: contiguous, out_dtype, (..., N)).
    static_weight: a promise that no kernel writes w_q (a model's weight), which
    lets a one-token launch read it before the previous kernel has finished.
    early_trigger: the caller promises that the kernel launched after this one reads,
    before its own PDL wait, nothing that a kernel still running may write (weights, its
    own layer's state). A decode launch then lets it start as soon as this one does."""
    if out_dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"int8_linear: out_dtype must be float16, bfloat16 or float32, got {out_dtype}")
    return _launch(x_q, w_q, x_scale, w_scale, bias, None, out_dtype, "int8_linear", out, static_weight,
                   early_trigger=early_trigger)


def int8_linear_quant(
    x_q: torch.Tensor,
    w_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_scale: torch.Tensor,
    static_weight: bool = False,
    early_trigger: bool = False,
) -> torch.Tensor:
    """As ``int8_linear``, then requantized in the epilogue:
    quantize_ref(out_fp32, out_scale) -> (..., N) int8. out_scale: per-tensor, or
    (N,) per output column (one launch for several projections that share an
    input but have different output scales, e.g. in_proj's x and z halves)."""
    return _launch(x_q, w_q, x_scale, w_scale, bias, out_scale, torch.float32, "int8_linear_quant",
                   static_weight=static_weight, early_trigger=early_trigger)


class _ConvStep(NamedTuple):
    """The conv that ``int8_linear_conv_step`` runs in the GEMV's epilogue (checked arguments)."""
    weight: torch.Tensor        # (D, width) int8, contiguous
    weight_scale: torch.Tensor  # fp32, per-tensor (0-dim) or (D,)
    bias: torch.Tensor | None   # (D,) or None
    state: torch.Tensor         # (batch, D, width - 1) int8, contiguous: updated in place
    x_scale: torch.Tensor       # fp32 0-dim: the scale the conv's int8 input was quantized with
    out_scale: torch.Tensor     # fp32 0-dim: u's scale
    early_state: bool
    early_weight: int           # K blocks of the weight loaded before the wait (0: none)


# Up to how many sequences the conv runs in the GEMV's epilogue: where it pays. 2.8b W8A8
# decode, H100, A/B alternated three times (docs/sweeps/conv_in_proj_ab_b*_h100.json),
# fused vs the conv's own launch: batch 1 2.032 vs 2.084 ms, 2: 2.218 vs 2.284, 4: 2.395
# vs 2.445, 8: 2.477 vs 2.562; but 16: 2.986 vs 2.862 and 32: 4.23 vs 3.52 (64, with 8
# warps against the taps' register spills: 5.94 vs 4.40). The fused launch never splits K;
# where the heuristic of the time did (370m and 1.4b shapes; now 370m only) the fused,
# unsplit launch is faster still: 1.4b batch 1 1.143 vs 1.309 ms, batch 8 1.544 vs 1.657;
# 370m batch 1 0.697 vs 0.821 (docs/sweeps/force_split1_ab_*_h100.json).
CONV_STEP_MAX_M = 8


def _conv_fusable(M: int, N: int, K: int) -> bool:
    """Whether the tensor-core decode GEMV serves these M tokens (it then runs without a K split)."""
    return M <= CONV_STEP_MAX_M and _rows_route(M, N, K) is None


def int8_linear_conv_step(
    x_q: torch.Tensor,
    w_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_scale: torch.Tensor,
    out_scale: torch.Tensor,
    conv_w_q: torch.Tensor,
    conv_w_scale: torch.Tensor,
    conv_bias: torch.Tensor | None,
    conv_state_q: torch.Tensor,
    conv_x_scale: torch.Tensor,
    u_scale: torch.Tensor,
    early_state: bool = False,
    early_weight: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A decode step of in_proj and the causal conv after it, in one launch where it can.

    x_q: (batch, 1, K) int8, one new token per sequence. The first D = conv_w_q.shape[0]
    output columns of ``int8_linear_quant(x_q, w_q, x_scale, w_scale, None, out_scale)``
    are the conv's int8 input (quantized with out_scale's first D entries, which should
    equal conv_x_scale: the conv dequantizes with that); they go through one step of
    ``causal_conv1d_int8(..., conv_state_q, u_scale, state_out=conv_state_q)``.
    Returns u (batch, 1, D) int8 and the requantized linear output's other columns
    (batch, 1, N - D) int8 (in a Mamba block: z); conv_state_q (batch, D, width - 1) is
    updated in place. In one launch both are views of one (batch, 1, N) output, u in
    place of the conv's input.

    One launch (the tensor-core decode GEMV, its K not split, the conv in its epilogue) for
    up to CONV_STEP_MAX_M sequences when the conv is at most CONV_STEP_MAX_WIDTH wide and
    its weight and state are contiguous; otherwise the two kernels. The results are the
    same bits. w_q is taken to be a static weight (``static_weight=True``).
    early_state: the caller promises that no kernel that may still be running when this one
    starts writes conv_state_q (see ``pdl_wait``; true in a Mamba block, where each layer has
    its own state and only its in_proj writes it), so the state (and the conv's weights) are
    read before ``pdl_wait``.
    early_weight: how many K blocks of w_q (256 wide on a GPU) to read before ``pdl_wait`` too, as
    one tile (0: none; True counts as 1; rounded down to a power of two and to what K holds).
    It pays where the kernels before let this one start early (``rmsnorm_quant(...,
    early_trigger=True)``, and the decode trigger chain of quantization/fused_block.py). With one
    block and the norm's early trigger only: 2.8b W8A8 decode on an H100 at one sequence 1.699 ->
    1.682 ms a token (two: 1.867 -> 1.852); the early block alone 1.719, the early trigger alone
    1.698; at 8 sequences both 2.399 -> 2.461 (A/B in one process, logits bit-identical:
    docs/sweeps/trigger_ab_*_h100.json). With the chain: 1 block 1.671, 2 1.667, 4 1.602, 8 2.25
    (64 x 2048 int8 a program: 160 KB of shared memory, one program an SM;
    docs/sweeps/trigger_chain_ab_*_h100.json)."""
    op = "int8_linear_conv_step"
    check_device(op, x_q, w_q, conv_w_q, conv_w_scale, conv_bias, conv_state_q, conv_x_scale, u_scale)
    if x_q.dim() != 3 or x_q.shape[1] != 1:
        raise ValueError(f"{op}: x_q must be (batch, 1, K): one token per sequence, got shape {tuple(x_q.shape)}")
    check_dtype(op, "conv_w_q", conv_w_q, (torch.int8,))
    check_dtype(op, "conv_state_q", conv_state_q, (torch.int8,))
    batch, N = x_q.shape[0], w_q.shape[0]
    if conv_w_q.dim() != 2 or conv_w_q.shape[0] > N or conv_w_q.shape[1] < 2:
        raise ValueError(f"{op}: conv_w_q must be (D <= {N}, width >= 2), got shape {tuple(conv_w_q.shape)}")
    dim, width = conv_w_q.shape
    check_shape(op, "conv_state_q", conv_state_q, (batch, dim, width - 1))
    if conv_bias is not None:
        check_shape(op, "conv_bias", conv_bias, (dim,))
    if conv_w_scale.numel() not in (1, dim):
        raise ValueError(f"{op}: conv_w_scale must be per-tensor or ({dim},), got shape {tuple(conv_w_scale.shape)}")
    fused = (width <= CONV_STEP_MAX_WIDTH and conv_w_q.is_contiguous() and conv_state_q.is_contiguous()
             and _conv_fusable(batch, N, w_q.shape[1]))
    if not fused:
        from .causal_conv1d_int8 import causal_conv1d_int8
        out = int8_linear_quant(x_q, w_q, x_scale, w_scale, None, out_scale, static_weight=True)
        u, _ = causal_conv1d_int8(out[..., :dim], conv_x_scale, conv_w_q, conv_w_scale, conv_bias, conv_state_q,
                                  u_scale, state_out=conv_state_q)
        return u, out[..., dim:]
    ws = conv_w_scale.reshape(()) if conv_w_scale.numel() == 1 else conv_w_scale.reshape(dim)
    conv = _ConvStep(conv_w_q, ws.float().contiguous(), None if conv_bias is None else conv_bias.contiguous(),
                     conv_state_q, scalar_scale(op, "conv_x_scale", conv_x_scale),
                     scalar_scale(op, "u_scale", u_scale), early_state, early_weight)
    out = _launch(x_q, w_q, x_scale, w_scale, None, out_scale, torch.float32, op, static_weight=True, conv=conv)
    return out[..., :dim], out[..., dim:]
