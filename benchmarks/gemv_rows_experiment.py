"""Experiment: a CUDA-core int8 GEMV for one token (no tensor cores, no padding of M
to 16), many small programs, against the shipped tensor-core decode kernel. Timed
as decode runs it (CUDA graph, a distinct cold weight per launch). GPU only.

    python benchmarks/gemv_rows_experiment.py --shape 2.8b --json OUT
"""

import argparse
import importlib
import itertools
import json
import os

import torch
import triton
import triton.language as tl

from _timing import graph_us

from quamba.eval import bench as B

gemv_mod = importlib.import_module("quamba.kernels.triton.int8_linear")


@triton.jit
def _gemv_rows_kernel(x_ptr, w_ptr, out_ptr, scale, N, K,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    nm = offs_n < N
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        km = (k0 + offs_k) < K
        w = tl.load(w_ptr + offs_n[:, None] * K + (k0 + offs_k)[None, :], mask=nm[:, None] & km[None, :], other=0)
        x = tl.load(x_ptr + k0 + offs_k, mask=km, other=0)
        acc += w.to(tl.int32) * x.to(tl.int32)[None, :]
    tl.store(out_ptr + offs_n, tl.sum(acc, axis=1).to(tl.float32) * scale, mask=nm)


def gemv_rows(x, w, bn, bk, warps, stages):
    N, K = w.shape
    out = torch.empty(N, dtype=torch.float32, device=w.device)
    _gemv_rows_kernel[(triton.cdiv(N, bn),)](x, w, out, 1.0, N, K, BLOCK_N=bn, BLOCK_K=bk,
                                            num_warps=warps, num_stages=stages)
    return out


parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="2.8b")
parser.add_argument("--json", required=True)
args = parser.parse_args()
config = B.shape_config(args.shape)
d, dm = config.d_inner, config.d_model
one = torch.ones((), device="cuda")
rows = []
for name, (N, K) in {"in_proj": (2 * d, dm), "out_proj": (dm, d), "x_proj": (config.dt_rank + 2 * config.d_state, d)}.items():
    ws = [torch.randint(-127, 128, (N, K), dtype=torch.int8, device="cuda")
          for _ in range(max(4, (256 << 20) // (N * K)))]
    x = torch.randint(-127, 128, (1, K), dtype=torch.int8, device="cuda")
    ref = (x.double() @ ws[0].double().T).reshape(-1)
    os.environ["QUAMBA_GEMV_ROWS"] = "off"   # the tensor-core kernel for every shape, as the baseline
    base = graph_us([lambda w=w: gemv_mod.int8_linear(x, w, one, one) for w in ws])
    os.environ.pop("QUAMBA_GEMV_ROWS")
    rows.append({"name": name, "kernel": "tensor-core", "us": base, "TBps": N * K / base / 1e6})
    print(rows[-1], flush=True)
    best = None
    for bn, bk, warps, stages in itertools.product((1, 2, 4, 8, 16), (256, 512, 1024, 2048), (4, 8), (1, 3)):
        if bn * bk > 16384:
            continue
        try:
            got = gemv_rows(x.reshape(-1), ws[0], bn, bk, warps, stages).double()
            exact = bool(torch.allclose(got, ref, rtol=1e-6, atol=1.0))   # int32 sums, rounded to fp32
            us = graph_us([lambda w=w: gemv_rows(x.reshape(-1), w, bn, bk, warps, stages) for w in ws])
        except Exception as exc:  # noqa: BLE001 - a sweep records failures and goes on
            rows.append({"name": name, "bn": bn, "bk": bk, "warps": warps, "stages": stages, "error": str(exc)[:120]})
            continue
        rows.append({"name": name, "kernel": "rows", "bn": bn, "bk": bk, "warps": warps, "stages": stages,
                     "us": us, "TBps": N * K / us / 1e6, "ok": exact})
        if best is None or us < best["us"]:
            best = rows[-1]
    print("best rows", best, flush=True)
json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, open(args.json, "w"), indent=1)
