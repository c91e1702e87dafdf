"""Prefill GEMMs one by one: the int8 Triton GEMM (as the W8A8 block calls it) vs
fp16 F.linear (cuBLAS), per projection of one shape. GPU only.

Each point is the median over replays of a CUDA graph of 8 back-to-back calls
(after autotuning), so neither host time nor the first call's tuning shows.

    python benchmarks/prefill_gemm_check.py --shape 2.8b [--gemm-kinds pointer] --json OUT
"""

import argparse
import json
import os

import torch
import torch.nn.functional as F

from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import int8_linear, int8_linear_quant

parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="2.8b")
parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 2048, 4096])
parser.add_argument("--gemm-kinds", default=os.environ.get("QUAMBA_PREFILL_GEMM", "both"),
                    choices=["both", "tma", "pointer"],
                    help="which prefill kernels the autotuner may pick (A/B of the TMA kernel; "
                         "default: QUAMBA_PREFILL_GEMM, else both)")
parser.add_argument("--json", required=True)
args = parser.parse_args()
os.environ["QUAMBA_PREFILL_GEMM"] = args.gemm_kinds


config = B.shape_config(args.shape)
d, dm, r, n = config.d_inner, config.d_model, config.dt_rank, config.d_state
# (N, K, requantized output?) as FusedQBlock calls them
shapes = {"in_proj": (2 * d, dm, True), "x_proj": (r + 2 * n, d, True), "dt_proj": (d, r, True),
          "out_proj": (dm, d, False)}
one = torch.ones((), device="cuda")
rows = []
for M in args.tokens:
    for name, (N, K, quant) in shapes.items():
        x8 = torch.randint(-127, 128, (M, K), dtype=torch.int8, device="cuda")
        w8 = torch.randint(-127, 128, (N, K), dtype=torch.int8, device="cuda")
        xh, wh = torch.randn(M, K, dtype=torch.float16, device="cuda"), torch.randn(N, K, dtype=torch.float16, device="cuda")
        out_scale = torch.full((N,), 50.0, device="cuda")
        i8 = (lambda: int8_linear_quant(x8, w8, one, one, None, out_scale)) if quant else \
            (lambda: int8_linear(x8, w8, one, one))
        # 8 back-to-back calls a graph
        ms8 = graph_us([i8] * 8) / 1e3
        ms16 = graph_us([lambda: F.linear(xh, wh)] * 8) / 1e3
        ops = 2 * M * N * K
        rows.append({"name": name, "M": M, "N": N, "K": K, "int8_ms": ms8, "fp16_ms": ms16,
                     "int8_TOPS": ops / ms8 / 1e9, "fp16_TFLOPS": ops / ms16 / 1e9, "int8_over_fp16": ms8 / ms16})
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "shape": args.shape,
           "gemm_kinds": args.gemm_kinds, "rows": rows},
          open(args.json, "w"), indent=1)
