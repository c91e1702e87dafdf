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

from _scan_inputs import float_scan_inputs, int8_scan_inputs
from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import selective_scan, selective_scan_int8

parser = argparse.ArgumentParser()
parser.add_argument("--tokens", type=int, default=2048)
parser.add_argument("--dim", type=int, default=5120)
parser.add_argument("--json", required=True)
args = parser.parse_args()
d, n = args.dim, 16


variants = {
    "int8": lambda a: a,
    "int8, no gate": lambda a: dict(a, z_q=None, z_scale=None),
    "fp32 inputs": lambda a: float_scan_inputs(a, torch.float32, torch.float32),
    "fp16 u/dt/z, fp32 B/C": lambda a: float_scan_inputs(a, torch.float16, torch.float32),
    "fp16 inputs": lambda a: float_scan_inputs(a, torch.float16, torch.float16),
    "fp32 inputs, no gate": lambda a: float_scan_inputs(a, torch.float32, torch.float32, gate=False),
    "fp32 inputs, no softplus": lambda a: float_scan_inputs(a, torch.float32, torch.float32, softplus=False),
    "fp32 inputs, no gate, no softplus": lambda a: float_scan_inputs(a, torch.float32, torch.float32, False, False),
}
rows = []
for batch in (1, 8):
    seqlen = args.tokens // batch
    for name, make in variants.items():
        sets = [make(int8_scan_inputs(batch, seqlen, d, n)) for _ in range(3)]
        fn = selective_scan_int8 if name.startswith("int8") else selective_scan
        us = graph_us([lambda a=a: fn(**a) for a in sets])
        rows.append({"batch": batch, "seqlen": seqlen, "variant": name, "us": us})
        print(rows[-1], flush=True)
json.dump({"environment": B.environment(), "dim": d, "tokens": args.tokens, "rows": rows}, open(args.json, "w"),
          indent=1)
