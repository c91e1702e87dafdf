"""Launch shapes of the small decode kernels (add + RMSNorm + quantize, the int8 conv
step), graph-timed on distinct inputs per call, at batch 1, 8 and 64 of one shape.
Each config's output is checked equal to the default's. Writes JSON.

    python benchmarks/small_kernels_sweep.py --shape 2.8b --json OUT
"""

import argparse
import importlib
import itertools
import json

import torch

from _timing import graph_us

from quamba.eval import bench as B

norm_mod = importlib.import_module("quamba.kernels.triton.rmsnorm_quant")
conv_mod = importlib.import_module("quamba.kernels.triton.causal_conv1d")
from quamba.kernels.triton import causal_conv1d_int8  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="2.8b")
parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
parser.add_argument("--json", required=True)
args = parser.parse_args()
config = B.shape_config(args.shape)
d, dm = config.d_inner, config.d_model
scale = torch.tensor(0.05, device="cuda")
results = {"environment": B.environment(), "shape": args.shape, "norm": [], "conv": []}
CALLS = 64   # one per layer of a decode step


def record(kind, row):
    results[kind].append(row)
    print(kind, row, flush=True)


for M in args.batch:
    hs = [torch.randn(M, dm, dtype=torch.float16, device="cuda") for _ in range(CALLS)]
    rs = [torch.randn(M, dm, dtype=torch.float32, device="cuda") for _ in range(CALLS)]
    w = torch.rand(dm, device="cuda") + 0.5
    outs = [torch.empty(M, dm, dtype=torch.float32, device="cuda") for _ in range(CALLS)]
    ref = norm_mod.rmsnorm_quant(hs[0], rs[0], w, 1e-5, scale)[0]
    for rows, warps in [(None, None)] + list(itertools.product((1, 2, 4), (2, 4, 8, 16))):
        def call(i, rows=rows, warps=warps):
            return norm_mod._launch("rmsnorm_quant", hs[i], rs[i], w, 1e-5, torch.int8, scale, outs[i], rows, warps)
        exact = bool(torch.equal(call(0)[0], ref))
        us = graph_us([lambda i=i: call(i) for i in range(CALLS)])
        record("norm", {"M": M, "rows": rows or "default", "num_warps": warps or "default", "us": us, "exact": exact})

    xs = [torch.randint(-127, 128, (M, 1, d), dtype=torch.int8, device="cuda") for _ in range(CALLS)]
    states = [torch.randint(-127, 128, (M, d, 3), dtype=torch.int8, device="cuda") for _ in range(CALLS)]
    cw = torch.randint(-127, 128, (d, 4), dtype=torch.int8, device="cuda")
    cb = torch.randn(d, device="cuda")
    state0 = states[0].clone()   # the timed calls update states[i] in place; checks start from this
    ref_state = state0.clone()
    ref = causal_conv1d_int8(xs[0], scale, cw, scale, cb, ref_state, scale, state_out=ref_state)[0]
    for cfg in [None] + [dict(BLOCK_D=bd, num_warps=nw) for bd, nw in itertools.product((64, 128, 256, 512, 1024), (1, 2, 4, 8))]:
        conv_mod._DECODE_OVERRIDE = cfg
        st = state0.clone()
        exact = bool(torch.equal(causal_conv1d_int8(xs[0], scale, cw, scale, cb, st, scale, state_out=st)[0], ref)
                     and torch.equal(st, ref_state))
        us = graph_us([lambda i=i: causal_conv1d_int8(xs[i], scale, cw, scale, cb, states[i], scale, state_out=states[i])
                       for i in range(CALLS)])
        record("conv", {"M": M, "cfg": cfg or "default", "us": us, "exact": exact})
    conv_mod._DECODE_OVERRIDE = None
json.dump(results, open(args.json, "w"), indent=1)
