"""Where a decode step's time goes with the Hadamard rotation inside the scan kernel
(``hadamard_quant_chunk``) against the scan and hadamard_quant as two launches; mamba-2.8b
dims, the int8 scan with dt_proj fused as the model runs it (up to 4 sequences).
Graph-timed on distinct inputs. Writes JSON.

    python benchmarks/scan_rotation_check.py --json OUT
"""

import argparse
import importlib
import json
import os

import torch

from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import hadamard_quant, selective_scan_int8

scan_mod = importlib.import_module("quamba.kernels.triton.selective_scan")

parser = argparse.ArgumentParser()
parser.add_argument("--dim", type=int, default=5120)
parser.add_argument("--batch", default="1,8,64")
parser.add_argument("--json", required=True)
args = parser.parse_args()
d, n, r = args.dim, 16, 160
DEV = "cuda" if torch.cuda.is_available() else "cpu"   # cpu: the interpreter, to check the script


def inputs(batch):
    i8 = lambda *s: torch.randint(-127, 128, s, dtype=torch.int8, device=DEV)   # noqa: E731
    s = lambda v: torch.tensor(v, device=DEV)                                  # noqa: E731
    xz, dbl = i8(batch, 1, 2 * d), i8(batch, 1, r + 2 * n)
    return dict(u_q=xz[..., :d], u_scale=s(0.02), dt_q=None, dt_scale=s(0.01),
                A=-torch.exp(torch.rand(d, n, device=DEV) * 2.5), B_q=dbl[..., r:r + n], B_scale=s(0.03),
                C_q=dbl[..., r + n:], C_scale=s(0.03), D=torch.randn(d, device=DEV), z_q=xz[..., d:],
                z_scale=s(0.04), dt_bias=torch.randn(d, device=DEV) - 4,
                initial_state=torch.randn(batch, d, n, device=DEV),
                dt_low_q=dbl[..., :r], dt_low_scale=s(0.05), dt_w_q=i8(d, r), dt_w_scale=s(2e-4))


def timed(sets, **kw):
    return graph_us([lambda a=a: selective_scan_int8(**a, state_out=a["initial_state"], **kw) for a in sets])


rows = []
scale = torch.tensor(0.05, device=DEV)
for batch in [int(b) for b in args.batch.split(",")]:
    sets = [inputs(batch) for _ in range(4)]
    ys = [selective_scan_int8(**a)[0] for a in sets]
    variants = {
        "scan": lambda: timed(sets),
        "hadamard_quant": lambda: graph_us([lambda y=y: hadamard_quant(y, scale) for y in ys]),
        "scan + hadamard_quant (launch)": lambda: timed(sets, hadamard_scale=scale),
        "fused": lambda: timed(sets, hadamard_scale=scale),
    }
    for name, fn in variants.items():
        os.environ["QUAMBA_SCAN_HADAMARD"] = "launch" if "launch" in name else "fused"
        rows.append({"batch": batch, "what": name, "us": fn()})
        print(rows[-1], flush=True)
    os.environ["QUAMBA_SCAN_HADAMARD"] = "fused"
    # The fused kernel's shapes: its program shape without the rotation, and the mix's step.
    for warps in (4, 8, 16):
        scan_mod._BLOCK_D_OVERRIDE, scan_mod._NUM_WARPS_OVERRIDE = 128, warps
        rows.append({"batch": batch, "what": f"scan, 128-channel programs, {warps} warps", "us": timed(sets)})
        print(rows[-1], flush=True)
        scan_mod._BLOCK_D_OVERRIDE = None
        for cols in (32, 128):
            scan_mod._ROTATION_MIX_COLS = cols
            rows.append({"batch": batch, "what": f"fused, {warps} warps, mix {cols} columns a step",
                         "us": timed(sets, hadamard_scale=scale)})
            print(rows[-1], flush=True)
        scan_mod._NUM_WARPS_OVERRIDE, scan_mod._ROTATION_MIX_COLS = None, 32
json.dump({"environment": B.environment(), "dim": d, "rows": rows}, open(args.json, "w"), indent=1)
