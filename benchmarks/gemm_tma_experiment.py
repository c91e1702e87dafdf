"""Experiment: the prefill int8 GEMM with its tiles loaded by Hopper's tensor-memory
accelerator (host-side TMA descriptors), plain or persistent (one program an SM walking
the tiles, which lets the pipeliner overlap a tile's epilogue with the next tile's
loads), against the shipped autotuned kernel (``int8_linear``, fp16 out), on the 2.8b
prefill shapes. Times are medians of CUDA-graph replays of 8 back-to-back calls; each
config's output is checked equal to the shipped kernel's. GPU (sm_90) only.

    python benchmarks/gemm_tma_experiment.py --shape 2.8b --json OUT
"""

import argparse
import json

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import int8_linear
from quamba.kernels.triton.int8_linear import _tile_coords   # the shipped kernel's grouped tile order


@triton.jit
def _gemm_tma_kernel(x_desc, w_desc, out_ptr, scale, M, N, K,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     GROUP_M: tl.constexpr, PERSISTENT: tl.constexpr):
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    start = tl.program_id(0)
    step = tl.num_programs(0) if PERSISTENT else num_m * num_n
    for tile in tl.range(start, num_m * num_n, step, flatten=PERSISTENT):
        pid_m, pid_n = _tile_coords(tile, num_m, num_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            x = x_desc.load([off_m, k0])
            w = w_desc.load([off_n, k0])
            acc = tl.dot(x, w.T, acc, out_dtype=tl.int32)
        offs_m = off_m + tl.arange(0, BLOCK_M)
        offs_n = off_n + tl.arange(0, BLOCK_N)
        out = (acc.to(tl.float32) * scale).to(tl.float16)
        tl.store(out_ptr + offs_m[:, None] * N + offs_n[None, :], out,
                 mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def gemm_tma(x, w, out, scale, bm, bn, bk, stages, warps, persistent):
    M, K = x.shape
    N = w.shape[0]
    x_desc = TensorDescriptor.from_tensor(x, [bm, bk])
    w_desc = TensorDescriptor.from_tensor(w, [bn, bk])
    tiles = triton.cdiv(M, bm) * triton.cdiv(N, bn)
    grid = min(tiles, torch.cuda.get_device_properties(x.device).multi_processor_count) if persistent else tiles
    _gemm_tma_kernel[(grid,)](x_desc, w_desc, out, scale, M, N, K, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                              GROUP_M=8, PERSISTENT=persistent, num_stages=stages, num_warps=warps)
    return out


parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="2.8b")
parser.add_argument("--tokens", type=int, nargs="+", default=[2048, 4096])
parser.add_argument("--json", required=True)
args = parser.parse_args()

config = B.shape_config(args.shape)
d, dm = config.d_inner, config.d_model
CONFIGS = [(128, 256, 128, 3, 8), (128, 128, 128, 4, 8), (128, 256, 64, 4, 8), (256, 128, 128, 3, 8),
           (128, 128, 128, 4, 4), (128, 128, 64, 5, 4)]
rows = []
for name, N, K in (("in_proj", 2 * d, dm), ("out_proj", dm, d)):
    for M in args.tokens:
        xs = [torch.randint(-127, 128, (M, K), dtype=torch.int8, device="cuda") for _ in range(8)]
        w = torch.randint(-127, 128, (N, K), dtype=torch.int8, device="cuda")
        xsc, wsc = torch.tensor(0.01, device="cuda"), torch.tensor(0.001, device="cuda")
        scale = float(xsc * wsc)   # the fp32 product, as the shipped epilogue forms it
        ref = int8_linear(xs[0], w, xsc, wsc, out_dtype=torch.float16)
        us = graph_us([lambda x=x: int8_linear(x, w, xsc, wsc, out_dtype=torch.float16) for x in xs])
        tops = 2 * M * N * K / us / 1e6
        rows.append({"name": name, "M": M, "N": N, "K": K, "kernel": "shipped", "us": us, "TOPS": tops})
        print(rows[-1], flush=True)
        for persistent in (False, True):
            for bm, bn, bk, stages, warps in CONFIGS:
                out = torch.empty(M, N, dtype=torch.float16, device="cuda")
                row = {"name": name, "M": M, "N": N, "K": K, "kernel": "tma persistent" if persistent else "tma",
                       "config": [bm, bn, bk, stages, warps]}
                try:
                    got = gemm_tma(xs[0], w, out, scale, bm, bn, bk, stages, warps, persistent)
                    row["equal"] = bool(torch.equal(got, ref))
                    outs = [torch.empty_like(out) for _ in xs]
                    row["us"] = graph_us([lambda x=x, o=o: gemm_tma(x, w, o, scale, bm, bn, bk, stages, warps,
                                                                   persistent) for x, o in zip(xs, outs)])
                    row["TOPS"] = 2 * M * N * K / row["us"] / 1e6
                    row["vs_shipped"] = row["us"] / us
                except Exception as exc:  # a config that does not compile (shared memory, registers)
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                rows.append(row)
                print(row, flush=True)

json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "shape": args.shape, "rows": rows}, open(args.json, "w"), indent=1)
