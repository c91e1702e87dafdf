"""Check: does cuBLAS's int8 GEMM (``torch._int_mm``) stream a decode batch's weights faster
than quamba's Triton decode kernel? At batch 64 the int8 GEMVs run at about 1 TB/s inside
a decode step (docs/benchmarks.md), so a faster int32 product plus a separate epilogue
could pay. Timed as decode runs it: a CUDA graph, a distinct (cold) weight per launch.
GPU only.

    python benchmarks/int_mm_small_m_check.py --json docs/sweeps/int_mm_small_m_h100.json

Rows: quamba's ``int8_linear_quant`` (requantized int8 out, the decode kernel), cuBLAS
``_int_mm`` (int32 out, no epilogue: a lower bound for that route), and fp16 ``F.linear``
(what the fp16 model and mamba-ssm run). GB/s counts the weight bytes only.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import datetime, timezone

import torch
import torch.nn.functional as F
import triton

from _timing import graph_us

from quamba.kernels.triton import int8_linear_quant

# mamba-2.8b: d_model 2560, d_inner 5120, dt_rank 160, d_state 16.
SHAPES = {"in_proj": (10240, 2560), "out_proj": (2560, 5120), "x_proj": (192, 5120), "dt_proj": (5120, 160)}
COPIES = 8   # distinct weights per graph, so each launch reads its weight from HBM


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--M", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--json", required=True)
    opts = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA device"
    torch.manual_seed(0)
    one = torch.tensor(0.01, device="cuda")
    rows = []
    for name, (N, K) in SHAPES.items():
        w8 = [torch.randint(-127, 128, (N, K), dtype=torch.int8, device="cuda") for _ in range(COPIES)]
        w16 = [torch.randn(N, K, dtype=torch.float16, device="cuda") for _ in range(COPIES)]
        out_scale = torch.full((N,), 0.5, device="cuda")
        for M in opts.M:
            x8 = torch.randint(-127, 128, (M, K), dtype=torch.int8, device="cuda")
            x16 = torch.randn(M, K, dtype=torch.float16, device="cuda")
            ours = [lambda w=w: int8_linear_quant(x8, w, one, one, None, out_scale, static_weight=True) for w in w8]
            cublas = [lambda w=w: torch._int_mm(x8, w.t()) for w in w8]
            fp16 = [lambda w=w: F.linear(x16, w) for w in w16]
            exact = torch.equal(torch._int_mm(x8, w8[0].t()), (x8.double() @ w8[0].double().t()).int())   # exact in fp64
            for what, calls, nbytes in (("quamba int8_linear_quant", ours, N * K), ("cublas _int_mm", cublas, N * K),
                                        ("fp16 F.linear", fp16, 2 * N * K)):
                us = graph_us(calls)
                rows.append(dict(name=name, M=M, N=N, K=K, what=what, us=us, GBps=nbytes / us / 1e3))
                print(f"{name:9s} M={M:3d} {what:26s} {us:7.2f} us {nbytes / us / 1e3:7.0f} GB/s")
            rows.append(dict(name=name, M=M, what="cublas exact", exact=exact))
    env = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
               triton=triton.__version__, python=platform.python_version(),
               date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               command="python benchmarks/int_mm_small_m_check.py --M " + " ".join(map(str, opts.M)))
    with open(opts.json, "w") as f:
        json.dump(dict(environment=env, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
