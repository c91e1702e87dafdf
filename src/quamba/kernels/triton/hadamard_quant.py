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

That kernel serves 2^k < 16, powers of two up to 256 rows, and other widths from 9
(65 where m > 12) to 256 rows. With more rows (prefill) its butterfly stages, each a shared-memory layout
conversion, made it take 9% of HBM bandwidth; ``_hadamard_quant_mma_kernel`` puts both
factors on tensor cores instead: F = Y @ B[:, block] is a GEMM against a ±1 block of B
generated in registers from B[k, c] = (-1)^popcount(k & c), and the m-mix Aᵀ F a small
dot. The same kernel with narrow column blocks serves decode steps (up to 8 rows, 64
where m > 12) of widths with an m-mix: a row is then several programs instead of one running the
butterfly and the mix in sequence (``_DECODE_MMA_CONFIG``).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import (check_device, check_dtype, interpret_mode, next_pow2, pdl_launch_options, pdl_wait,
                      quantize_int8, scalar_scale)

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
    ROWS: tl.constexpr, MIX: tl.constexpr, USE_PDL: tl.constexpr, TRIGGER_FIRST: tl.constexpr = False,
    ACC: tl.constexpr = tl.float32,
):
    """MIX 0: the m chunks are loaded and transformed one at a time and mixed by
    rank-1 updates (any K). MIX 1 / 2: the whole (ROWS, M_PAD, K) tile is
    transformed at once and mixed by a (M_PAD, M_PAD) @ (M_PAD, K) dot in fp32
    ("ieee", CUDA cores) or "tf32x3" (tensor cores; A is ±1, exact in tf32, and
    the 3-pass split keeps the fp32 operand to ~2^-22); needs K >= 16.
    ACC fp64 (exact numerics, kernels/numerics.py; MIX 0): the sums in fp64, where sums of up
    to 8192 fp16 values are exact, times 1/√n in fp64, rounded once to fp32: the bits of
    ``hadamard_exact``."""
    pid = tl.program_id(0)
    offs_r = pid * ROWS + tl.arange(0, ROWS)
    offs_c = tl.arange(0, K)
    rm = offs_r < M
    if ACC == tl.float64:
        norm = 1.0 / tl.sqrt(tl.full((1,), M_FACTOR * K, tl.float64))   # norm arrives as fp32
    pdl_wait(USE_PDL, TRIGGER_FIRST)
    scale = tl.load(scale_ptr)
    if M_FACTOR == 1:
        y = tl.load(y_ptr + offs_r[:, None] * stride_ym + offs_c[None, :], mask=rm[:, None],
                    other=0.0).to(ACC)
        out = (_fwht(y, ROWS, K, LOG_K) * norm).to(tl.float32)
        q = quantize_int8(out, scale)
        tl.store(out_ptr + offs_r[:, None] * stride_om + offs_c[None, :], q, mask=rm[:, None])
    else:
        offs_i = tl.arange(0, M_PAD)
        im = offs_i < M_FACTOR
        if MIX == 0:
            acc = tl.zeros((ROWS, M_PAD, K), dtype=ACC)
            for j in range(0, M_FACTOR):
                yj = tl.load(y_ptr + offs_r[:, None] * stride_ym + (j * K + offs_c)[None, :],
                             mask=rm[:, None], other=0.0).to(ACC)
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
        q = quantize_int8((acc * norm).to(tl.float32), scale)
        o_ptrs = out_ptr + offs_r[:, None, None] * stride_om + (offs_i[:, None] * K + offs_c[None, :])[None, :, :]
        tl.store(o_ptrs, q, mask=rm[:, None, None] & im[None, :, None])


@triton.jit
def _sylvester_signs(rows, cols):
    """fp32 tile S[a, b] = (-1)^popcount(rows[a] & cols[b]): entries of Sylvester's
    H in natural order, for indices below 2^16. Computed, not loaded: a few integer
    ops an entry, once per program, against a GEMM that reuses the tile for every row."""
    v = rows[:, None] & cols[None, :]
    v = v ^ (v >> 8)                       # xor-folding keeps the parity: 16 bits -> 8 -> 4
    v = v ^ (v >> 4)
    odd = (tl.full(v.shape, 0x6996, tl.int32) >> (v & 15)) & 1   # 0x6996: bit i is parity(i)
    return tl.where(odd == 0, 1.0, -1.0)


@triton.jit
def _dot_bf16(a, b, acc, EMULATE: tl.constexpr):
    """a @ b (+ acc) for bf16 a, b, in fp32. EMULATE (the CPU interpreter, whose tl.dot
    multiplies bf16 tensors as their raw uint16 bits as of Triton 3.9) widens both to
    fp32 first: bf16 values are exact in fp32, so the product is the same."""
    if EMULATE:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _pm1_dot(x, w, X_LEFT: tl.constexpr, MIX: tl.constexpr, EMULATE_BF16: tl.constexpr):
    """x @ w (X_LEFT) or w @ x (2-D, or batched 3-D) for fp32 x and a ±1/0 matrix w, in fp32.
    MIX 0: "ieee" (CUDA cores). MIX 1: "tf32x3" (tensor cores, ~2^-22 relative).
    MIX 2: x split exactly into three bf16 parts (8 + 8 + 8 significant bits = fp32's
    24), each multiplied by w (bf16, exact) on tensor cores: every product is exact
    and the sums are fp32, so this is the fp32 product in another summation order,
    on bf16 MMAs (twice the tf32 rate). Wants w in bf16."""
    if MIX == 2:
        hi = x.to(tl.bfloat16)
        r = x - hi.to(tl.float32)          # exact: the rounding error of hi
        mid = r.to(tl.bfloat16)
        lo = (r - mid.to(tl.float32)).to(tl.bfloat16)   # at most 8 bits left: exact
        if X_LEFT:
            acc = _dot_bf16(hi, w, None, EMULATE_BF16)
            acc = _dot_bf16(mid, w, acc, EMULATE_BF16)
            acc = _dot_bf16(lo, w, acc, EMULATE_BF16)
        else:
            acc = _dot_bf16(w, hi, None, EMULATE_BF16)
            acc = _dot_bf16(w, mid, acc, EMULATE_BF16)
            acc = _dot_bf16(w, lo, acc, EMULATE_BF16)
    else:
        if X_LEFT:
            acc = tl.dot(x, w, input_precision="ieee" if MIX == 0 else "tf32x3")
        else:
            acc = tl.dot(w, x, input_precision="ieee" if MIX == 0 else "tf32x3")
    return acc


@triton.jit
def _hadamard_quant_mma_kernel(
    y_ptr, at_ptr, out_ptr, scale_ptr,
    M, norm,
    stride_ym, stride_om,
    M_FACTOR: tl.constexpr, M_PAD: tl.constexpr, K: tl.constexpr,
    ROWS: tl.constexpr, COLS: tl.constexpr, ROW_BLOCKS: tl.constexpr,
    MIX: tl.constexpr, MIX_2D: tl.constexpr, DOT_F32: tl.constexpr, KC: tl.constexpr,
    EMULATE_BF16: tl.constexpr, USE_PDL: tl.constexpr, TRIGGER_FIRST: tl.constexpr = False,
):
    """Many rows (prefill). A row is Y (M_FACTOR, K) row-major and the result is
    vec(Aᵀ Y B) / √n with B = H_K (Sylvester) and A the ±1 (M_FACTOR, M_FACTOR)
    factor (the host's m', see `_mma_factor`), stored transposed at `at_ptr`.

    A program owns COLS output columns c0.. of the K axis and ROW_BLOCKS tiles of
    ROWS rows. It builds B[:, c0:c0+COLS] once (in shared memory for all its tiles),
    then per tile:
      F = Y_tile (ROWS*M_PAD, K) @ B_block (K, COLS) on tensor cores; for fp16/bf16
          y the operands are y's type (±1, so the products are exact; fp32 sums);
          fp32 y uses tf32x3 (B exact in tf32, y to ~2^-22), KC-deep slices;
      out_r = Aᵀ F_r for each row r (`_pm1_dot`, precision MIX): MIX_2D as one
          transposed 2-D dot [F_1ᵀ; F_2ᵀ; ...] @ A, else as a batched 3-D dot;
      × 1/√n, quantize, store.
    The M_FACTOR chunks of a row are zero-padded to M_PAD tile rows (masked loads)
    so the tiles are powers of two; A is zero-padded too, so padded rows stay
    zero and are not stored. With M_FACTOR == 1 (n = K) there is no mix, M_PAD is 1.
    Each y row is read K // COLS times (once per column block); the column block
    is the fastest-varying part of the program id, so the programs sharing rows
    run at the same time and all but the first read should come from L2."""
    N_CB: tl.constexpr = K // COLS
    TILE: tl.constexpr = ROWS * M_PAD
    pid = tl.program_id(0)
    pid_c = pid % N_CB
    pid_r = pid // N_CB
    c0 = pid_c * COLS
    offs_k = tl.arange(0, K)
    offs_c = tl.arange(0, COLS)
    offs_t = tl.arange(0, TILE)
    t_row = offs_t // M_PAD                # tile row t is chunk t % M_PAD of row t // M_PAD
    t_chunk = offs_t % M_PAD
    # Pure compute, so before the PDL wait: it overlaps the previous kernel's tail.
    if not DOT_F32:
        b = _sylvester_signs(offs_k, c0 + offs_c).to(y_ptr.dtype.element_ty)
    # So is the load of the ±1 factor A: the library's constant, which no kernel writes.
    # 2.8b decode, batch 1, with the scale's load moved too (an A/B switch, not kept: a
    # caller may compute the scale): 1.87 -> 1.83 ms (docs/sweeps/had_early_ab_2.8b_b1_h100.json).
    offs_i = tl.arange(0, M_PAD)
    im = offs_i < M_FACTOR
    if M_FACTOR > 1:
        if MIX_2D:   # w[j, i] = A[j, i] = at[i, j]
            w = tl.load(at_ptr + offs_i[None, :] * M_FACTOR + offs_i[:, None],
                        mask=im[:, None] & im[None, :], other=0.0)
        else:        # w[i, j] = at[i, j] = A[j, i]
            w = tl.load(at_ptr + offs_i[:, None] * M_FACTOR + offs_i[None, :],
                        mask=im[:, None] & im[None, :], other=0.0)
        if MIX == 2:
            w = w.to(tl.bfloat16)          # ±1 and 0: exact
    pdl_wait(USE_PDL, TRIGGER_FIRST)
    scale = tl.load(scale_ptr)
    for rb in range(ROW_BLOCKS):
        row0 = (pid_r * ROW_BLOCKS + rb) * ROWS
        t_rows = row0 + t_row
        tm = (t_rows < M) & (t_chunk < M_FACTOR)
        y_rows = y_ptr + t_rows[:, None] * stride_ym + (t_chunk * K)[:, None]
        if DOT_F32:
            # fp32 y (not the model's path): tf32x3 keeps split copies of both operands in
            # registers, which spilled kilobytes at full depth K on sm_90; KC-deep slices,
            # each with its slice of B rebuilt, do not.
            f = tl.zeros((TILE, COLS), tl.float32)
            for k0 in range(0, K, KC):
                offs_kc = k0 + tl.arange(0, KC)
                yc = tl.load(y_rows + offs_kc[None, :], mask=tm[:, None], other=0.0)
                f = tl.dot(yc, _sylvester_signs(offs_kc, c0 + offs_c), f, input_precision="tf32x3")
        else:
            y = tl.load(y_rows + offs_k[None, :], mask=tm[:, None], other=0.0)
            if y_ptr.dtype.element_ty == tl.bfloat16:
                f = _dot_bf16(y, b, tl.zeros((TILE, COLS), tl.float32), EMULATE_BF16)
            else:
                f = tl.dot(y, b)
        if M_FACTOR == 1:
            q = quantize_int8(f * norm, scale)
            tl.store(out_ptr + t_rows[:, None] * stride_om + (c0 + offs_c)[None, :], q, mask=tm[:, None])
        elif MIX_2D:
            # Transposed: out_rᵀ = F_rᵀ A. Rows (r, c), columns the chunks: one 2-D dot
            # with M = ROWS * COLS for all rows of the tile (the batched 3-D dot below
            # spreads its ROWS batches over the warps and repeats them when ROWS <
            # num_warps, per the sm_90 SASS); the permute is a shared-memory pass.
            g = tl.reshape(tl.permute(tl.reshape(f, (ROWS, M_PAD, COLS)), (0, 2, 1)), (ROWS * COLS, M_PAD))
            q = quantize_int8(_pm1_dot(g, w, True, MIX, EMULATE_BF16) * norm, scale)
            offs_u = tl.arange(0, ROWS * COLS)
            u_rows = row0 + offs_u // COLS
            o_ptrs = (out_ptr + u_rows[:, None] * stride_om + (c0 + offs_u % COLS)[:, None]
                      + (offs_i * K)[None, :])
            tl.store(o_ptrs, q, mask=(u_rows < M)[:, None] & im[None, :])
        else:
            if ROWS == 1:
                acc = tl.reshape(_pm1_dot(tl.reshape(f, (M_PAD, COLS)), w, False, MIX, EMULATE_BF16),
                                 (1, M_PAD, COLS))
            else:
                acc = _pm1_dot(tl.reshape(f, (ROWS, M_PAD, COLS)),
                               tl.broadcast_to(w[None, :, :], (ROWS, M_PAD, M_PAD)), False, MIX, EMULATE_BF16)
            q = quantize_int8(acc * norm, scale)
            offs_r = row0 + tl.arange(0, ROWS)
            o_ptrs = (out_ptr + offs_r[:, None, None] * stride_om
                      + (offs_i[:, None] * K + c0 + offs_c[None, :])[None, :, :])
            tl.store(o_ptrs, q, mask=(offs_r < M)[:, None, None] & im[None, :, None])


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


def hadamard_quant(y: torch.Tensor, scale: torch.Tensor, early_trigger: bool = False,
                   exact: bool = False) -> torch.Tensor:
    """y: (..., n) fp16/bf16/fp32 with n = m·2^k, m in {1, 12, 20, 28} (see
    ``quamba.quantization.hadamard.hadamard_factors``); scale: per-tensor fp32.
    Returns (..., n) int8 = quantize_ref(y @ hadamard_matrix(n), scale).
    early_trigger: the caller promises that the kernel launched after this one reads, before
    its own PDL wait, nothing that a kernel still running writes (a decode step's out_proj
    reads at most its weight there). That kernel may then start as soon as
    this one does (``pdl_wait``'s TRIGGER_FIRST); one or two tokens' out_proj (the rows
    kernel) loads its weight rows while the scan still runs.
    exact: exact numerics (kernels/numerics.py): the butterfly kernel in fp64, rounded once."""
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
    if exact:
        return _launch(y2, s, m, p, A, out, 0, trigger_first=early_trigger, acc=tl.float64).reshape(*lead, n)
    if _prefill_takes_mma(M, n, m) and _mma_plan(n, y2.device, _MMA_CONFIG) is not None:
        return _launch_mma(y2, s, out, trigger_first=early_trigger).reshape(*lead, n)
    if (M <= (_DECODE_MMA_MAX_ROWS_LARGE_MIX if m > 12 else _DECODE_MMA_MAX_ROWS) and m > 1
            and _mma_plan(n, y2.device, {**_MMA_CONFIG, **_DECODE_MMA_CONFIG}) is not None):
        return _launch_mma(y2, s, out, trigger_first=early_trigger, **_DECODE_MMA_CONFIG).reshape(*lead, n)
    return _launch(y2, s, m, p, A, out, _DEFAULT_MIX, trigger_first=early_trigger).reshape(*lead, n)


# Chosen from benchmarks/kernels_gpu.py (see docs/kernels.md).
_DEFAULT_MIX = 2


def _launch(y2, s, m, p, A, out, mix, rows=None, num_warps=None, trigger_first=False, acc=tl.float32):
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
        num_warps=num_warps, TRIGGER_FIRST=trigger_first, ACC=acc, **pdl_launch_options(y2.device),
    )
    return out


# Tensor-core kernel for many rows. Module-level so that benchmarks/hadamard_sweep.py can
# override them. Measured on an H100 (n = 5120, fp16, graph-timed,
# docs/sweeps/hadamard_sweep_h100.json): with MAX_K 128, 52.9 µs at M = 2048 against
# 114.0 µs for the butterfly kernel, 22.8 against 30.4 at M = 512; at M = 128 the
# butterfly kernel is faster (7.8 against 18.5 µs). Hence M > 256 takes this one.
_MMA_MIN_ROWS = 256
# Where the width's Paley factor is small (m = 12) or absent (powers of two), the butterfly's
# mix is cheap and it stays ahead further. H100, fp16, graph-timed, µs butterfly / tensor cores
# (benchmarks/hadamard_sweep.py --quick, docs/sweeps/hadamard_sweep_{pow2,small_mix}_h100.json,
# 2026-11-25): powers of two at every row count tried (4096 wide: 9.1 / 14.7 at 1024 rows,
# 15.3 / 19.9 at 2048, 27.5 / 38.1 at 4096; 2048 wide: 13.8 / 20.2 at 4096); m = 12 from about
# 2^22 elements (1536 wide: 11.1 / 13.6 at 2048 rows, 19.7 / 19.5 at 4096; 3072 wide: 12.6 /
# 13.8 at 1024, 22.1 / 19.0 at 2048). m = 20 keeps the row rule (5120 wide: 70.0 / 37.1 at 2048).
_MMA_MIN_ELEMENTS_SMALL_MIX = 1 << 22


def _prefill_takes_mma(M: int, n: int, m: int) -> bool:
    """Whether M rows of width n = m·2^k take the tensor-core kernel's prefill config."""
    if m == 1:
        return False
    if m <= 12:
        return M * n >= _MMA_MIN_ELEMENTS_SMALL_MIX
    return M > _MMA_MIN_ROWS


_MMA_CONFIG = {
    "TILE_ROWS": 64,    # GEMM tile rows = ROWS * M_PAD (2.8b with MAX_K 128: m' = 40, M_PAD 64, one row a tile)
    "COLS": 64,         # output columns of the 2^k axis a program: y is read K // COLS times
    "ROW_BLOCKS": 4,    # row tiles a program, sharing the B block built once
    "MIX": 2,           # _pm1_dot: 0 ieee, 1 tf32x3, 2 bf16x3
    "MIX_2D": True,     # the m-mix as one transposed 2-D dot (True) or a batched 3-D dot
    "MAX_K": 128,       # 2^k above this: H_2^k = H_(2^k/MAX_K) ⊗ H_MAX_K, the first factor joins A
    "num_warps": 4,
    # One stage: the y tile is not double-buffered, which keeps shared memory small
    # (3 programs an SM; two stages take 120 KB, one program an SM), offline compile.
    "num_stages": 1,
    "F32_KC": 32,       # fp32 y only: depth of the GEMM slices (see the kernel)
}
# fp32 y (tests, not the model's path): tf32x3 needs more registers; a smaller tile keeps
# the sm_90 compile free of spills.
_MMA_CONFIG_F32 = {"TILE_ROWS": 32}
# Decode steps (up to 8 rows; 64 where m > 12) of widths with a Paley factor (m > 1) take the tensor-core
# kernel too, with 16-column blocks and a row tile a program, so that even one row is
# K / 16 programs (8 at mamba-2.8b's 5120 = 40 x 128) instead of one program running the
# butterfly's stages and the m-mix one after another. H100, graph-timed, µs at 1 / 8 / 64
# rows (benchmarks/hadamard_sweep.py --decode, docs/sweeps/hadamard_decode_sweep*_h100.json):
#   n = 5120: butterfly 6.73 / 6.86 / 7.00 -> 2.83 / 3.09 / 4.93
#   n = 3072: 4.33 / 4.17 / 4.41 -> 2.71 / 2.64 / 4.10
#   n = 1536: 3.43 / 3.64 / 3.73 -> 2.99 / 2.85 / 3.39
# Powers of two (m = 1) have no mix, and their butterfly is as fast or faster (4096:
# 2.23 / 2.53 / 2.57 against 2.01 / 2.26 / 3.58; 2048: 1.82 / 1.88 / 2.14 against 3.00 /
# 2.17 / 2.76), so they keep it. In whole decode steps (A/B, docs/sweeps/hadamard_decode_ab_*):
# 2.8b batch 1 2.64 -> 2.30 ms, batch 8 3.07 -> 2.83, batch 64 unchanged (4.90); 130m batch 64
# 1.10 -> 1.20 ms although the kernel alone is faster (cause not measured). So up to 8 rows,
# and up to 64 where m is above 12 (2.8b's 5120 = 20 * 256): remeasured late on 2026-11-24
# with that day's other decode changes in, 2.8b batch 16 2.86 -> 2.70 ms, batch 64 4.44 ->
# 4.33 (docs/sweeps/hadamard_mma_rows_ab_2.8b_b*_h100.json; 130m's m = 12 not retried).
_DECODE_MMA_MAX_ROWS = 8
_DECODE_MMA_MAX_ROWS_LARGE_MIX = 64
_DECODE_MMA_CONFIG = {"TILE_ROWS": 32, "COLS": 16, "ROW_BLOCKS": 1, "num_warps": 4, "MAX_K": 128}

_MMA_FACTORS: dict[tuple[int, torch.device, int], tuple[int, int, torch.Tensor]] = {}


def _mma_factor(n: int, device: torch.device, max_k: int) -> tuple[int, int, torch.Tensor]:
    """(m', K, Aᵀ) with n = m'·K and A' = A ⊗ H_(2^k / K) the ±1 (m', m') factor left
    of H_K, as a contiguous fp32 transpose (kernel: at[i, j] = A'[j, i]). Sylvester's
    H_(2^k) = H_(2^k/K) ⊗ H_K in natural order, so this is the same rotation.
    K = min(2^k, max_k) bounds the GEMM's depth and the B block. A power of two
    above max_k (m = 1) instead gets K = 2^k / 16 (at least 16, at most max_k), so
    that A' = H_16 fills the 16 rows tl.dot needs with no padding: n = 2048 is
    16 × 128, not 8 (padded to 16) × 256, a quarter of the GEMM's work."""
    key = (n, device, max_k)
    if key not in _MMA_FACTORS:
        from quamba.quantization.hadamard import hadamard_factors, hadamard_matrix
        m, p = hadamard_factors(n)
        k = max(16, min(max_k, p // 16)) if m == 1 and p > max_k else min(p, max_k)
        a = torch.ones(1, 1, dtype=torch.float64)
        for order in (m, p // k):
            if order > 1:
                a = torch.kron(a, torch.round(hadamard_matrix(order) * math.sqrt(order)))
        _MMA_FACTORS[key] = (a.shape[0], k, a.t().contiguous().to(device=device, dtype=torch.float32))
    return _MMA_FACTORS[key]


def _mma_plan(n: int, device: torch.device, cfg: dict) -> tuple[int, int, int, torch.Tensor] | None:
    """(m', M_PAD, K, Aᵀ) for the tensor-core kernel, or None where it does not apply:
    K < 16 (tl.dot's minimum) or m' above 64 (the tile would not fit)."""
    try:
        m, k, at = _mma_factor(n, device, cfg["MAX_K"])
    except Exception:  # QuambaError: unsupported width, the caller already checked
        return None
    m_pad = 1 if m == 1 else max(16, next_pow2(m))
    if k < 16 or m_pad > 64:
        return None
    return m, m_pad, k, at


def _launch_mma(y2, s, out, trigger_first=False, **overrides):
    """The tensor-core kernel over all rows of y2 (M, n) into out; `overrides` replace
    entries of _MMA_CONFIG (the sweep and the tests use them)."""
    cfg = {**_MMA_CONFIG, **(_MMA_CONFIG_F32 if y2.dtype == torch.float32 else {}), **overrides}
    M, n = y2.shape
    plan = _mma_plan(n, y2.device, cfg)
    if plan is None:
        raise ValueError(f"hadamard_quant: no tensor-core plan for n={n} with {cfg}")
    m, m_pad, k, at = plan
    rows = max(1, cfg["TILE_ROWS"] // m_pad)
    cols = min(cfg["COLS"], k)
    if rows * m_pad < 16 or cols < 16:
        raise ValueError(f"hadamard_quant: tile {rows * m_pad}x{cols} is below tl.dot's 16")
    grid = (triton.cdiv(M, rows * cfg["ROW_BLOCKS"]) * (k // cols),)
    _hadamard_quant_mma_kernel[grid](
        y2, at, out, s,
        M, 1.0 / math.sqrt(n),
        y2.stride(0), out.stride(0),
        M_FACTOR=m, M_PAD=m_pad, K=k, ROWS=rows, COLS=cols, ROW_BLOCKS=cfg["ROW_BLOCKS"],
        MIX=cfg["MIX"], MIX_2D=cfg["MIX_2D"], DOT_F32=y2.dtype == torch.float32, KC=min(cfg["F32_KC"], k),
        EMULATE_BF16=interpret_mode(),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], TRIGGER_FIRST=trigger_first,
        **pdl_launch_options(y2.device),
    )
    return out
