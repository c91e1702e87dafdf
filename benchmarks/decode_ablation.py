"""What each kernel of a W8A8 decode step costs inside the PDL chain (GPU only).

A per-kernel profile runs with programmatic dependent launch off (with it on, kernels
overlap and the profiler counts a kernel while it waits), so it cannot say what a kernel
costs the step as it really runs. This script captures the decode step with some of the
block's kernels replaced by an empty output buffer of the right shape (no launch) and
times the graph, PDL on: the step's time minus the step's time without kernel X is what X
costs in the chain. The logits are garbage then; only the times mean anything.

    python benchmarks/decode_ablation.py --shape 2.8b --batch 1 --json OUT.json

Kernels that can be removed (``--skip`` sets, comma-separated within a set): norm, in_proj
(with the conv in its epilogue up to 8 sequences), conv (its own launch beyond 8),
x_proj, scan (with dt_proj inside up to 4), hadamard, out_proj.

Since the decode trigger chain (quantization/fused_block.py), in_proj is the one kernel of a
layer that triggers after its wait and bounds how far the chain runs ahead. Removing it lets the
chain span layers, so ``--skip in_proj`` times a schedule that never runs otherwise.
"""

import argparse
import json

import torch

from quamba.eval import bench as B
from quamba.kernels import triton as tk
from quamba.models.cuda_graph import GraphedDecoder

parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="2.8b")
parser.add_argument("--batch", type=int, default=1)
parser.add_argument("--skip", action="append", default=None,
                    help="a set of kernels to remove, e.g. norm or norm,hadamard (repeatable; '' = none)")
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--json", required=True)
args = parser.parse_args()
SETS = args.skip or ["", "norm", "in_proj", "x_proj", "scan", "hadamard", "out_proj",
                     "norm,x_proj,scan,hadamard", "in_proj,out_proj"]

config = B.shape_config(args.shape)
d_inner = config.expand * config.d_model
real = {name: getattr(tk, name) for name in ("rmsnorm_quant", "int8_linear_conv_step", "int8_linear_quant",
                                             "causal_conv1d_int8", "selective_scan_int8", "hadamard_quant",
                                             "int8_linear")}
skipped: set[str] = set()


def empty(like_shape, n, dtype, device):
    return torch.empty(*like_shape[:-1], n, dtype=dtype, device=device)


def rmsnorm_quant(hidden, residual, *a, residual_out=None, **k):
    if "norm" not in skipped:
        return real["rmsnorm_quant"](hidden, residual, *a, residual_out=residual_out, **k)
    res = residual_out if residual_out is not None else torch.empty(hidden.shape, dtype=torch.float32,
                                                                     device=hidden.device)
    return torch.empty(hidden.shape, dtype=torch.int8, device=hidden.device), res


def int8_linear_conv_step(x_q, w_q, *a, **k):
    if "in_proj" not in skipped:
        return real["int8_linear_conv_step"](x_q, w_q, *a, **k)
    d = a[3].shape[0]   # conv_w_q
    return (empty(x_q.shape, d, torch.int8, x_q.device), empty(x_q.shape, w_q.shape[0] - d, torch.int8, x_q.device))


def int8_linear_quant(x_q, w_q, *a, **k):
    name = "in_proj" if w_q.shape[0] == 2 * d_inner else "x_proj"
    if name not in skipped:
        return real["int8_linear_quant"](x_q, w_q, *a, **k)
    return empty(x_q.shape, w_q.shape[0], torch.int8, x_q.device)


def causal_conv1d_int8(x_q, *a, **k):
    if "conv" not in skipped:
        return real["causal_conv1d_int8"](x_q, *a, **k)
    return torch.empty(x_q.shape, dtype=torch.int8, device=x_q.device), None


def selective_scan_int8(u_q, *a, **k):
    if "scan" not in skipped:
        return real["selective_scan_int8"](u_q, *a, **k)
    return torch.empty(u_q.shape, dtype=torch.float16, device=u_q.device), None


def hadamard_quant(y, scale, **k):
    if "hadamard" not in skipped:
        return real["hadamard_quant"](y, scale, **k)
    return torch.empty(y.shape, dtype=torch.int8, device=y.device)


def int8_linear(x_q, w_q, *a, out=None, out_dtype=torch.float16, **k):
    if "out_proj" not in skipped:
        return real["int8_linear"](x_q, w_q, *a, out=out, out_dtype=out_dtype, **k)
    return out if out is not None else empty(x_q.shape, w_q.shape[0], out_dtype, x_q.device)


for fn in (rmsnorm_quant, int8_linear_conv_step, int8_linear_quant, causal_conv1d_int8, selective_scan_int8,
           hadamard_quant, int8_linear):
    setattr(tk, fn.__name__, fn)

model = B.random_w8a8_model(config)
rows = []
for _ in range(args.rounds):
    for kernels in SETS:
        skipped = {s for s in kernels.split(",") if s}
        dec = GraphedDecoder(model, args.batch)
        ms = B.queued_replay_ms(dec)
        rows.append({"skip": kernels, "ms_per_token_queued": ms})
        print(rows[-1], flush=True)
        del dec
json.dump({"environment": B.environment(), "shape": args.shape, "batch": args.batch, "rows": rows},
          open(args.json, "w"), indent=1)
