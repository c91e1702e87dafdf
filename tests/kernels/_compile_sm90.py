"""Compiles every Triton kernel for sm_90 with the configurations the wrappers launch on
a GPU (run by tests/kernels/test_compile_sm90.py in a subprocess, because under
TRITON_INTERPRET the kernels are interpreted functions that do not compile).

    python tests/kernels/_compile_sm90.py        # prints {case: "ok" | error} as JSON
"""

from __future__ import annotations

import importlib
import json
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

SM90 = GPUTarget("cuda", 90, 32)


def _jit(module: str, name: str):
    return getattr(importlib.import_module(f"quamba.kernels.triton.{module}"), name)


def _compile(fn, constexprs: dict, ptr_types: dict, floats=(), descs: dict | None = None, num_warps=4,
             num_stages=3):
    """Pointers default to fp32, other runtime arguments to i32; constexprs by name."""
    descs = descs or {}
    # constexpr parameters left out take the kernel's own defaults (e.g. TRIGGER_FIRST=False)
    constexprs = {**{p.name: p.default for p in fn.params if p.is_constexpr and p.has_default}, **constexprs}
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in descs:
            sig[name] = descs[name]
        elif name.endswith("_ptr"):
            sig[name] = ptr_types.get(name, "*fp32")
        elif name in floats:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    missing = [n for n in fn.arg_names if sig[n] == "constexpr" and n not in constexprs]
    assert not missing, missing
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    kernel = triton.compile(src, target=SM90, options=dict(num_warps=num_warps, num_stages=num_stages))
    _LAST_PTX[0] = kernel.asm["ptx"]
    return kernel


_LAST_PTX = [""]


def pdl_order(ptx: str) -> str:
    """Which programmatic-dependent-launch instruction comes first in the PTX: "trigger_first"
    (launch_dependents, then wait), "wait_first", or "none"."""
    trigger, wait = ptx.find("griddepcontrol.launch_dependents"), ptx.find("griddepcontrol.wait")
    if trigger < 0 or wait < 0:
        return "none"
    return "trigger_first" if trigger < wait else "wait_first"


I8 = "*i8"
_LINEAR = dict(X_PER_ROW=False, W_PER_COL=True, HAS_BIAS=False, QUANT_OUT=True, OUT_PER_COL=True)
_LINEAR_PTRS = {"x_ptr": I8, "w_ptr": I8, "out_ptr": I8, "ws_ptr": "*i32", "lock_ptr": "*i32"}


def prefill_gemm(tma):
    fn = _jit("int8_linear", "_int8_gemm_kernel")
    bm, bn, bk = (256, 128, 128) if tma else (128, 256, 128)
    const = dict(_LINEAR, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, TMA=tma)
    descs = {}
    if tma:
        descs = {"x_desc": f"tensordesc<i8[{bm}, {bk}]>", "w_desc": f"tensordesc<i8[{bn}, {bk}]>"}
    else:
        const.update(x_desc=None, w_desc=None)
    _compile(fn, const, _LINEAR_PTRS, descs=descs, num_warps=8, num_stages=3)


def decode_gemv(block_m, split, conv_width=0, conv_rows=1, conv_variant=True, early_blocks=0, trigger_first=False):
    """conv_width > 0: in_proj with the conv step in its epilogue (int8_linear_conv_step);
    conv_variant: per-channel scale, bias and early loads (a Mamba block), else none of them."""
    conv = dict(CONV_WIDTH=conv_width, CONV_W_PER_CH=conv_variant, CONV_HAS_BIAS=conv_variant,
                CONV_EARLY=conv_variant, CONV_ROWS=conv_rows, EARLY_BLOCKS=early_blocks)
    _compile(_jit("int8_linear", "_int8_gemv_kernel"),
             dict(_LINEAR, BLOCK_M=block_m, BLOCK_N=64, BLOCK_K=256, SPLIT_K=split, USE_PDL=True,
                  TRIGGER_FIRST=trigger_first, **conv),
             dict(_LINEAR_PTRS, conv_w_ptr=I8, conv_state_ptr=I8), num_stages=4 if block_m <= 32 else 3)


def decode_gemv_rows(m_rows, block_n=1, num_warps=4, trigger_first=False):
    _compile(_jit("int8_linear", "_int8_gemv_rows_kernel"),
             dict(_LINEAR, OUT_PER_COL=False, QUANT_OUT=False, HAS_BIAS=True, BLOCK_N=block_n, BLOCK_K=8192,
                  SINGLE_PASS=True, EARLY_WEIGHT=True, M_ROWS=m_rows, USE_PDL=True, TRIGGER_FIRST=trigger_first),
             {"x_ptr": I8, "w_ptr": I8, "out_ptr": "*fp16"}, num_warps=num_warps)


def decode_gemv_words(m_rows, block_n, head, tail, num_warps, dp4a=True, trigger_first=False):
    return _compile(_jit("int8_linear", "_int8_gemv_words_kernel"),
                    dict(_LINEAR, OUT_PER_COL=False, QUANT_OUT=False, HAS_BIAS=True, BLOCK_N=block_n,
                         BLOCK_HEAD=head, BLOCK_TAIL=tail, EARLY_WEIGHT=True, M_ROWS=m_rows, USE_PDL=True, DP4A=dp4a,
                         TRIGGER_FIRST=trigger_first),
                    {"x_ptr": "*i32", "w_ptr": "*i32", "out_ptr": "*fp16"}, num_warps=num_warps)


def weight_only_linear(block_m, block_n, block_k, num_warps, x_type="*fp16"):
    """The int8 LM head (int8_weight_linear): fp16 or bf16 activations, int8 rows."""
    _compile(_jit("int8_weight_linear", "_int8_weight_linear_kernel"),
             dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, FP32_DOT=False),
             {"x_ptr": x_type, "w_ptr": I8, "out_ptr": x_type}, num_warps=num_warps)


def conv(block_l, block_d, exact=False):
    _compile(_jit("causal_conv1d", "_causal_conv1d_kernel"),
             dict(WIDTH=4, HAS_BIAS=True, HAS_STATE=True, SILU=True, IS_INT8=True, W_PER_CHANNEL=False,
                  BLOCK_L=block_l, BLOCK_D=block_d, BLOCK_S=4, USE_PDL=True,
                  ACC=triton.language.float64 if exact else triton.language.float32),
             {p: I8 for p in ("x_ptr", "w_ptr", "state_ptr", "out_ptr", "new_state_ptr")})


_SCAN_PTRS = {p: I8 for p in ("u_ptr", "dt_ptr", "B_ptr", "C_ptr", "z_ptr", "lq_ptr", "dtw_ptr")} | {"y_ptr": "*fp16"}
_SCAN = dict(IS_INT8=True, HAS_D=True, HAS_Z=True, HAS_DT_BIAS=True, HAS_H0=True, DT_SOFTPLUS=True,
             DTW_PER_CHANNEL=False, BLOCK_N=16)


def prefill_scan(fused_dt, wide=False, segmented=False, few=False):
    """wide: the configuration for many programs (selective_scan's _CHUNKED_CONFIG_WIDE);
    few: the one for few programs (_CHUNKED_CONFIG_FEW);
    segmented: the rows are segments of one sequence (selective_scan_segments)."""
    block_d, chunk, num_warps, rows = (32, 8, 4, 4) if wide else (8, 16, 2, 2) if few else (16, 8, 4, 2)
    _compile(_jit("selective_scan", "_selective_scan_chunked_kernel"),
             dict(_SCAN, FUSED_DT=fused_dt, BLOCK_R=256 if fused_dt else 1, BLOCK_D=block_d, CHUNK=chunk,
                  STATE_ROWS=rows, SCAN_IN_ORDER=False, USE_PDL=True, SEGMENTED=segmented),
             _SCAN_PTRS, num_warps=num_warps)


def scan_segments(int8):
    """The combination of the segments' states and the correction of their outputs."""
    _compile(_jit("selective_scan_segments", "_combine_kernel"), dict(BLOCK=256), {})
    ptrs = {"y_ptr": "*fp16", **({p: I8 for p in ("dt_ptr", "z_ptr", "C_ptr")} if int8 else
                                  {p: "*fp16" for p in ("dt_ptr", "z_ptr", "C_ptr")})}
    _compile(_jit("selective_scan_segments", "_correct_kernel"),
             dict(IS_INT8=int8, HAS_Z=True, HAS_DT_BIAS=True, DT_SOFTPLUS=True, BLOCK_D=32, BLOCK_N=16, CHUNK=8),
             ptrs)


def decode_scan(dtw_early, block_d=16, num_warps=1, chunk=1, exact=False, fused_dt=True, trigger_first=False):
    """dtw_early: dt_proj's weight rows whole before pdl_wait (the default; 2.8b's rank 160
    in one 256 block), else in 32-wide K blocks (QUAMBA_SCAN_DTW=loop). exact: fp64 (exact
    numerics; with chunk 8 and fused_dt False, the serial prefill: dt_proj launched first)."""
    ptrs = dict(_SCAN_PTRS, A_ptr="*fp64") if exact else _SCAN_PTRS
    _compile(_jit("selective_scan", "_selective_scan_kernel"),
             dict(_SCAN, FUSED_DT=fused_dt, BLOCK_R=256 if dtw_early else 32, BLOCK_D=block_d, CHUNK=chunk,
                  EARLY_STATE=True, USE_PDL=True, DTW_EARLY=dtw_early, TRIGGER_FIRST=trigger_first,
                  ACC=triton.language.float64 if exact else triton.language.float32), ptrs, num_warps=num_warps)


def rmsnorm(rows, warps, early_trigger=False, exact=False):
    _compile(_jit("rmsnorm_quant", "_add_rmsnorm_kernel"),
             dict(HAS_RESIDUAL=True, QUANT=True, BLOCK_D=4096, ROWS=rows, EARLY_RESIDUAL=True, USE_PDL=True,
                  EARLY_TRIGGER=early_trigger, EXACT=exact),
             {"h_ptr": "*fp16", "x_ptr": I8}, floats=("eps",), num_warps=warps)


def hadamard_decode(trigger_first=False, exact=False):
    _compile(_jit("hadamard_quant", "_hadamard_quant_kernel"),
             dict(M_FACTOR=20, M_PAD=32, K=256, LOG_K=8, ROWS=1, MIX=0 if exact else 2, USE_PDL=True,
                  TRIGGER_FIRST=trigger_first, ACC=triton.language.float64 if exact else triton.language.float32),
             {"y_ptr": "*fp16", "out_ptr": I8}, floats=("norm",), num_warps=16)


def hadamard_prefill():
    _compile(_jit("hadamard_quant", "_hadamard_quant_mma_kernel"),
             dict(M_FACTOR=40, M_PAD=64, K=128, ROWS=1, COLS=64, ROW_BLOCKS=4, MIX=2, MIX_2D=True, DOT_F32=False,
                  KC=32, EMULATE_BF16=False, USE_PDL=True, TRIGGER_FIRST=False),
             {"y_ptr": "*fp16", "out_ptr": I8}, floats=("norm",), num_stages=1)


def hadamard_decode_mma(trigger_first=False):
    # mamba-2.8b's 5120 as 40 x 128 with the decode config: a row a tile, 16 columns a program.
    _compile(_jit("hadamard_quant", "_hadamard_quant_mma_kernel"),
             dict(M_FACTOR=40, M_PAD=64, K=128, ROWS=1, COLS=16, ROW_BLOCKS=1, MIX=2, MIX_2D=True, DOT_F32=False,
                  KC=32, EMULATE_BF16=False, USE_PDL=True, TRIGGER_FIRST=trigger_first),
             {"y_ptr": "*fp16", "out_ptr": I8}, floats=("norm",), num_stages=1)


# (label, case, kwargs): the configurations the wrappers pick on an H100.
CASES = [
    ("prefill_gemm[pointer]", prefill_gemm, dict(tma=False)),
    ("prefill_gemm[tma]", prefill_gemm, dict(tma=True)),
    ("decode_gemv[m16]", decode_gemv, dict(block_m=16, split=1)),
    ("decode_gemv[m16,split4]", decode_gemv, dict(block_m=16, split=4)),
    ("decode_gemv[m64]", decode_gemv, dict(block_m=64, split=1)),
    ("decode_gemv[m16,conv4,rows1]", decode_gemv, dict(block_m=16, split=1, conv_width=4)),
    ("decode_gemv[m16,conv4,rows1,early_weight]", decode_gemv, dict(block_m=16, split=1, conv_width=4,
                                                                    early_blocks=4)),
    ("decode_gemv[m16,conv4,rows1,early_weight1]", decode_gemv, dict(block_m=16, split=1, conv_width=4,
                                                                     early_blocks=1)),
    ("decode_gemv[m16,conv4,rows4]", decode_gemv, dict(block_m=16, split=1, conv_width=4, conv_rows=4)),
    ("decode_gemv[m16,conv4,rows8]", decode_gemv, dict(block_m=16, split=1, conv_width=4, conv_rows=8)),
    ("decode_gemv[m16,trigger_first]", decode_gemv, dict(block_m=16, split=1, trigger_first=True)),
    ("decode_gemv[m16,conv3,rows2,plain]", decode_gemv, dict(block_m=16, split=1, conv_width=3, conv_rows=2,
                                                             conv_variant=False)),
    ("decode_gemv_rows[1]", decode_gemv_rows, dict(m_rows=1)),
    ("decode_gemv_rows[2]", decode_gemv_rows, dict(m_rows=2)),
    ("decode_gemv_rows[1,two_rows]", decode_gemv_rows, dict(m_rows=1, block_n=2, num_warps=8)),
    ("decode_gemv_words[1,four_rows]", decode_gemv_words, dict(m_rows=1, block_n=4, head=1024, tail=256, num_warps=8)),
    ("decode_gemv_words[1,narrow]", decode_gemv_words, dict(m_rows=1, block_n=4, head=1024, tail=256, num_warps=4)),
    ("decode_gemv_words[1,trigger_first]", decode_gemv_words, dict(m_rows=1, block_n=4, head=1024, tail=256,
                                                                   num_warps=8, trigger_first=True)),
    ("decode_gemv_rows[2,trigger_first]", decode_gemv_rows, dict(m_rows=2, trigger_first=True)),
    ("decode_gemv_words[2]", decode_gemv_words, dict(m_rows=2, block_n=1, head=1024, tail=256, num_warps=4)),
    ("decode_gemv_words[1,shift]", decode_gemv_words, dict(m_rows=1, block_n=1, head=512, tail=128, num_warps=4,
                                                           dp4a=False)),
    ("int8_head[decode]", weight_only_linear, dict(block_m=16, block_n=32, block_k=256, num_warps=4)),
    ("int8_head[b64,bf16]", weight_only_linear, dict(block_m=64, block_n=128, block_k=128, num_warps=8,
                                                     x_type="*bf16")),
    ("int8_head[prefill]", weight_only_linear, dict(block_m=128, block_n=128, block_k=64, num_warps=8)),
    ("conv[decode]", conv, dict(block_l=1, block_d=128)),
    ("conv[prefill]", conv, dict(block_l=32, block_d=128)),
    ("prefill_scan", prefill_scan, dict(fused_dt=False)),
    ("prefill_scan[fused_dt]", prefill_scan, dict(fused_dt=True)),
    ("prefill_scan[wide]", prefill_scan, dict(fused_dt=False, wide=True)),
    ("prefill_scan[wide,segmented]", prefill_scan, dict(fused_dt=False, wide=True, segmented=True)),
    ("prefill_scan[few]", prefill_scan, dict(fused_dt=False, few=True)),
    ("prefill_scan[few,segmented]", prefill_scan, dict(fused_dt=False, few=True, segmented=True)),
    ("scan_segments[int8]", scan_segments, dict(int8=True)),
    ("scan_segments[fp16]", scan_segments, dict(int8=False)),
    ("decode_scan", decode_scan, dict(dtw_early=True)),
    ("decode_scan[b4]", decode_scan, dict(dtw_early=True, block_d=32, num_warps=2)),
    ("decode_scan[loop]", decode_scan, dict(dtw_early=False)),
    ("decode_scan[trigger_first]", decode_scan, dict(dtw_early=True, trigger_first=True)),
    ("rmsnorm[decode]", rmsnorm, dict(rows=1, warps=16)),
    ("rmsnorm[decode,early_trigger]", rmsnorm, dict(rows=1, warps=16, early_trigger=True)),
    ("rmsnorm[prefill]", rmsnorm, dict(rows=1, warps=4)),
    ("hadamard_decode", hadamard_decode, {}),
    ("hadamard_decode[mma]", hadamard_decode_mma, {}),
    ("hadamard_decode[trigger_first]", hadamard_decode, dict(trigger_first=True)),
    ("hadamard_decode[mma,trigger_first]", hadamard_decode_mma, dict(trigger_first=True)),
    ("hadamard_prefill", hadamard_prefill, {}),
    # exact numerics (quamba.kernels.numerics): the fp64 variants
    ("conv[decode,exact]", conv, dict(block_l=1, block_d=128, exact=True)),
    ("decode_scan[exact]", decode_scan, dict(dtw_early=True, exact=True)),
    ("prefill_scan[serial,exact]", decode_scan, dict(dtw_early=False, chunk=8, exact=True, fused_dt=False)),
    ("rmsnorm[decode,exact]", rmsnorm, dict(rows=1, warps=16, exact=True)),
    ("hadamard_decode[exact]", hadamard_decode, dict(exact=True)),
]


if __name__ == "__main__":
    results, orders = {}, {}
    for label, fn, kwargs in CASES:
        try:
            _LAST_PTX[0] = ""
            fn(**kwargs)
            results[label] = "ok"
            orders[label] = pdl_order(_LAST_PTX[0])
        except Exception as exc:  # reported per case by the test
            results[label] = f"{type(exc).__name__}: {str(exc)[-1500:]}"
    json.dump({"status": results, "pdl_order": orders}, sys.stdout)
