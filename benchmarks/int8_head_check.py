"""The LM head of the 2.8b shape (50280 x 2560) three ways, graph-timed (GPU only):

- ``fp16``: ``F.linear`` on the fp16 table (the paper's W8A8 keeps this head);
- ``dequant``: what ``QLMHead`` ran before ``int8_weight_linear`` (the int8 table
  dequantized to fp16 on every call, then ``F.linear``);
- ``int8``: ``int8_weight_linear`` on the int8 table.

Each call uses its own copy of the table (4 copies, round robin), so the weights come
from memory, not L2. Prints and writes µs a call and the table bytes read per µs.

    python benchmarks/int8_head_check.py --json docs/sweeps/int8_head_h100.json
"""

import argparse
import json

import torch
import torch.nn.functional as F

from _timing import graph_us
from quamba.eval.bench import environment
from quamba.kernels.int8_weight_linear_ref import int8_weight_linear_ref
from quamba.kernels.triton import int8_weight_linear

parser = argparse.ArgumentParser()
parser.add_argument("--vocab", type=int, default=50280)
parser.add_argument("--d-model", type=int, default=2560)
parser.add_argument("--tokens", default="1,8,64,2048")
parser.add_argument("--json")
args = parser.parse_args()

N, K, copies = args.vocab, args.d_model, 4
w_q = [torch.randint(-127, 128, (N, K), dtype=torch.int8, device="cuda") for _ in range(copies)]
scale = [torch.rand(N, device="cuda") * 1e-3 + 1e-4 for _ in range(copies)]
w16 = [(w.float() * s[:, None]).half() for w, s in zip(w_q, scale)]
ways = {
    "fp16": (lambda x, i: F.linear(x, w16[i]), 2),
    "dequant": (lambda x, i: F.linear(x, (w_q[i].float() * scale[i][:, None]).to(x.dtype)), 1),
    "int8": (lambda x, i: int8_weight_linear(x, w_q[i], scale[i]), 1),
}
rows = []
for m in [int(t) for t in args.tokens.split(",")]:
    x = torch.randn(m, K, device="cuda").half()
    ref = int8_weight_linear_ref(x, w_q[0], scale[0]).float()
    for name, (fn, bytes_per_weight) in ways.items():
        err = float((fn(x, 0).float() - ref).norm() / ref.norm())
        us = graph_us([lambda i=i: fn(x, i % copies) for i in range(8)])
        rows.append({"way": name, "tokens": m, "us": us, "table_TBps": N * K * bytes_per_weight / us / 1e6,
                     "rel_err_vs_ref": err})
        print(rows[-1], flush=True)
if args.json:
    json.dump({"environment": environment(), "vocab": N, "d_model": K, "rows": rows}, open(args.json, "w"), indent=1)
