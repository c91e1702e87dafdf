"""Experiment: the decode GEMV with its weight (and input) tiles loaded by Hopper's
tensor-memory accelerator (host-side TMA descriptors, ``desc.load``) instead of
pointer loads, against the shipped kernel, timed as decode runs it (CUDA graph, a
distinct cold weight per launch). Checks each config's int32 result against the
shipped kernel's. GPU (sm_90) only.

    python benchmarks/gemv_tma_experiment.py --shape 2.8b --json OUT
"""

import argparse
import itertools
import json

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import int8_linear


@triton.jit
def _gemv_tma_kernel(w_desc, x_desc, out_ptr, scale, M, N, K,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, TILED: tl.constexpr):
    """out^T tiles (BLOCK_N, BLOCK_M) = W[n block] @ x^T over all of K, for column blocks
    pid, pid + programs, ... (a persistent grid when fewer programs than blocks, which
    evens out the blocks per SM); TMA zero-fills the rows of x past M and columns past K.
    TILED: the weight was re-laid out so that each (BLOCK_N, BLOCK_K) tile is one
    contiguous run of memory, tiles in (column block, K block) order."""
    for tile in range(tl.program_id(0), tl.cdiv(N, BLOCK_N), tl.num_programs(0)):
        off_n = tile * BLOCK_N
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            if TILED:
                w = w_desc.load([(tile * tl.cdiv(K, BLOCK_K) + k0 // BLOCK_K) * BLOCK_N, 0])
            else:
                w = w_desc.load([off_n, k0])
            x = x_desc.load([0, k0])
            acc = tl.dot(w, tl.trans(x), acc, out_dtype=tl.int32)
        offs_n = off_n + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        out = tl.trans(acc).to(tl.float32) * scale
        tl.store(out_ptr + offs_m[:, None] * N + offs_n[None, :], out.to(tl.float16),
                 mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def tile_weight(w, bn, bk):
    """(N, K) -> (N/bn * K/bk * bn, bk): tile (nb, kb) is rows [(nb * K/bk + kb) * bn, ... + bn)."""
    N, K = w.shape
    return w.view(N // bn, bn, K // bk, bk).permute(0, 2, 1, 3).contiguous().view(-1, bk)


def gemv_tma(x, w, out, bn, bk, warps, stages, programs=None, n=None):
    """n: the weight's N when w is pre-tiled (tile_weight), else None."""
    M, K = x.shape
    tiled = n is not None
    N = n if tiled else w.shape[0]
    bm = max(16, triton.next_power_of_2(M))
    w_desc = TensorDescriptor.from_tensor(w, [bn, bk])
    x_desc = TensorDescriptor.from_tensor(x, [bm, bk])
    grid = triton.cdiv(N, bn) if programs is None else min(programs, triton.cdiv(N, bn))
    _gemv_tma_kernel[(grid,)](w_desc, x_desc, out, 1.0, M, N, K,
                                            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, TILED=tiled,
                                            num_warps=warps, num_stages=stages)
    return out


parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="2.8b")
parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
parser.add_argument("--persistent", action="store_true",
                    help="sweep narrow tiles and persistent grids (1, 2, 4 programs an SM) instead")
parser.add_argument("--tiled", action="store_true",
                    help="weights re-laid out tile by tile (each TMA load one contiguous run)")
parser.add_argument("--json", required=True)
args = parser.parse_args()
config = B.shape_config(args.shape)
d, dm = config.d_inner, config.d_model
shapes = {"in_proj": (2 * d, dm), "out_proj": (dm, d)}
one = torch.ones((), device="cuda")
results = {"environment": B.environment(), "shape": args.shape, "rows": []}
for M, (name, (N, K)) in itertools.product(args.batch, shapes.items()):
    reps_w = max(4, (256 << 20) // (N * K))                 # >= 256 MB of weights: cold L2
    ws = [torch.randint(-127, 128, (N, K), dtype=torch.int8, device="cuda") for _ in range(reps_w)]
    x = torch.randint(-127, 128, (M, K), dtype=torch.int8, device="cuda")
    ref = int8_linear(x, ws[0], one, one, out_dtype=torch.float32)
    shipped = graph_us([lambda w=w: int8_linear(x, w, one, one) for w in ws])
    row = {"name": name, "M": M, "N": N, "K": K, "cfg": "shipped", "us": shipped, "TBps": N * K / shipped / 1e6}
    results["rows"].append(row)
    print(row, flush=True)
    outs = [torch.empty(M, N, dtype=torch.float16, device="cuda") for _ in ws]
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    grid = [(bn, bk, w, st, None) for bn, bk, w, st in itertools.product((32, 64, 128), (128, 256), (4, 8), (3, 4, 6))]
    if args.tiled:
        grid = [(bn, bk, 4, st, None) for bn, bk, st in itertools.product((32, 64, 128), (128, 256), (3, 4, 6))]
    elif args.persistent:
        grid = [(bn, bk, 4, st, p) for bn, bk, st, p in
                itertools.product((16, 32, 64), (128, 256), (4, 6), (None, sms, 2 * sms, 4 * sms))]
    for bn, bk, warps, stages, programs in grid:
        n = N if args.tiled else None
        wts = [tile_weight(w, bn, bk) for w in ws] if args.tiled else ws
        try:
            got = gemv_tma(x, wts[0], outs[0], bn, bk, warps, stages, programs, n).float()
            # fp16 output of exact int32 sums: equal to the fp32 reference rounded to fp16
            exact = bool(torch.equal(got, ref.half().float()))
            us = graph_us([lambda w=w, o=o: gemv_tma(x, w, o, bn, bk, warps, stages, programs, n)
                           for w, o in zip(wts, outs)])
        except Exception as exc:  # noqa: BLE001 - a sweep records failures and goes on
            results["rows"].append({"name": name, "M": M, "cfg": [bn, bk, warps, stages, programs],
                                    "error": str(exc)[:200]})
            print("error", bn, bk, warps, stages, str(exc)[:200], flush=True)
            continue
        row = {"name": name, "M": M, "N": N, "K": K, "cfg": {"BLOCK_N": bn, "BLOCK_K": bk, "num_warps": warps,
               "num_stages": stages, "programs": programs, "tiled": args.tiled}, "us": us, "TBps": N * K / us / 1e6, "exact": exact}
        results["rows"].append(row)
    best = min((r for r in results["rows"] if r.get("M") == M and r.get("name") == name and "us" in r
                and r["cfg"] != "shipped"), key=lambda r: r["us"], default=None)
    print("best", best, flush=True)
    del ws, outs
json.dump(results, open(args.json, "w"), indent=1)
