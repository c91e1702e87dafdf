"""Where does the prefill scan's time go? The chunked scan (mamba-2.8b's dim 5120, state 16,
2048 tokens) timed with parts of its work taken away: the int8 inputs given as fp32 or fp16
(no int8 -> fp32 conversions), no output gate (no SiLU(z)), no softplus on dt; at batch 1 and
as 8 x 256 sequences (enough programs to fill the GPU). Graph-timed on distinct inputs.
Writes JSON.

    python benchmarks/scan_cost_check.py --json OUT
"""

import argparse
import json

import torch

from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import selective_scan, selective_scan_int8

parser = argparse.ArgumentParser()
parser.add_argument("--tokens", type=int, default=2048)
parser.add_argument("--dim", type=int, default=5120)
parser.add_argument("--json", required=True)
args = parser.parse_args()
d, n = args.dim, 16


def inputs(batch, seqlen):
    i8 = lambda *s: torch.randint(-127, 128, s, dtype=torch.int8, device="cuda")   # noqa: E731
    s = lambda v: torch.tensor(v, device="cuda")                                  # noqa: E731
    xz, dbl = i8(batch, seqlen, 2 * d), i8(batch, seqlen, 2 * n)
    return dict(u_q=xz[..., :d], u_scale=s(0.02), dt_q=i8(batch, seqlen, d), dt_scale=s(0.01),
                A=-torch.exp(torch.rand(d, n, device="cuda") * 2.5), B_q=dbl[..., :n], B_scale=s(0.03),
                C_q=dbl[..., n:], C_scale=s(0.03), D=torch.randn(d, device="cuda"), z_q=xz[..., d:],
                z_scale=s(0.04), dt_bias=torch.randn(d, device="cuda") - 4,
                initial_state=torch.randn(batch, d, n, device="cuda"))


def as_float(a, dtype, bc_dtype, gate=True, softplus=True):
    f = lambda q, sc: (q.float() * a[sc]).contiguous()   # noqa: E731
    return dict(u=f(a["u_q"], "u_scale").to(dtype), delta=f(a["dt_q"], "dt_scale").to(dtype), A=a["A"],
                B=f(a["B_q"], "B_scale").to(bc_dtype), C=f(a["C_q"], "C_scale").to(bc_dtype), D=a["D"],
                z=f(a["z_q"], "z_scale").to(dtype) if gate else None, delta_bias=a["dt_bias"],
                delta_softplus=softplus, initial_state=a["initial_state"])


variants = {
    "int8": lambda a: a,
    "int8, no gate": lambda a: dict(a, z_q=None, z_scale=None),
    "fp32 inputs": lambda a: as_float(a, torch.float32, torch.float32),
    "fp16 u/dt/z, fp32 B/C": lambda a: as_float(a, torch.float16, torch.float32),
    "fp16 inputs": lambda a: as_float(a, torch.float16, torch.float16),
    "fp32 inputs, no gate": lambda a: as_float(a, torch.float32, torch.float32, gate=False),
    "fp32 inputs, no softplus": lambda a: as_float(a, torch.float32, torch.float32, softplus=False),
    "fp32 inputs, no gate, no softplus": lambda a: as_float(a, torch.float32, torch.float32, False, False),
}
rows = []
for batch in (1, 8):
    seqlen = args.tokens // batch
    for name, make in variants.items():
        sets = [make(inputs(batch, seqlen)) for _ in range(3)]
        fn = selective_scan_int8 if name.startswith("int8") else selective_scan
        us = graph_us([lambda a=a: fn(**a) for a in sets])
        rows.append({"batch": batch, "seqlen": seqlen, "variant": name, "us": us})
        print(rows[-1], flush=True)
json.dump({"environment": B.environment(), "dim": d, "tokens": args.tokens, "rows": rows}, open(args.json, "w"),
          indent=1)
