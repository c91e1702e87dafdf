"""Decode-kernel sweeps timed the way a decode step runs them: inside a CUDA graph,
back to back, each launch on a different weight so that L2 holds none of it.

Eager timing of a 10 µs kernel measures the host's launch cost as much as the
kernel; a graph of R launches on R distinct weights measures GPU time per call
with cold weights, as in a real token step (64 layers of distinct weights).

    python benchmarks/decode_sweep.py --shape 2.8b --json OUT
"""

import argparse
import importlib
import itertools
import json

import torch

from _timing import graph_us

from quamba.eval import bench as B

gemv_mod = importlib.import_module("quamba.kernels.triton.int8_linear")
had_mod = importlib.import_module("quamba.kernels.triton.hadamard_quant")

parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="2.8b")
parser.add_argument("--batch", type=int, nargs="+", default=[1])
parser.add_argument("--json", required=True)
parser.add_argument("--quick", action="store_true", help="a few configs only")
parser.add_argument("--skip-gemv", action="store_true", help="only the Hadamard part")
parser.add_argument("--skip-hadamard", action="store_true", help="only the GEMV part")
parser.add_argument("--names", default="in_proj,out_proj,x_proj,dt_proj", help="GEMV shapes to sweep")
parser.add_argument("--warps-grid", action="store_true",
                    help="a grid over num_warps 4/8 and wider tiles (the default grid keeps 4 warps)")
args = parser.parse_args()


config = B.shape_config(args.shape)
d, dm, r, n = config.d_inner, config.d_model, config.dt_rank, config.d_state
shapes = {"in_proj": (2 * d, dm), "out_proj": (dm, d), "x_proj": (r + 2 * n, d), "dt_proj": (d, r)}
one = torch.ones((), device="cuda")
results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "shape": args.shape,
           "gemv": [], "hadamard": []}

if args.quick:
    grid = [dict(BLOCK_N=64, BLOCK_K=256, PROGRAMS_PER_SM=2, num_stages=4, num_warps=4)]
elif args.warps_grid:
    grid = [dict(BLOCK_N=bn, BLOCK_K=bk, PROGRAMS_PER_SM=pps, num_stages=st, num_warps=w, MAX_SPLIT=64)
            for bn, bk, pps, st, w in itertools.product((64, 128, 256), (128, 256), (1, 2, 4), (3, 4), (4, 8))]
else:
    grid = [dict(BLOCK_N=bn, BLOCK_K=bk, PROGRAMS_PER_SM=pps, num_stages=st, num_warps=4, MAX_SPLIT=64)
            for bn, bk, pps, st in itertools.product((32, 64, 128), (128, 256, 512), (1, 2, 4, 8, 16), (2, 3, 4))]
for M in [] if args.skip_gemv else args.batch:
    for name, (N, K) in shapes.items():
        if name not in args.names.split(","):
            continue
        reps_w = max(4, (256 << 20) // (N * K))          # >= 256 MB of distinct weights: nothing stays in L2
        ws = [torch.randint(-127, 128, (N, K), dtype=torch.int8, device="cuda") for _ in range(reps_w)]
        x = torch.randint(-127, 128, (M, K), dtype=torch.int8, device="cuda")
        ref = gemv_mod.int8_linear(x, ws[0], one, one, out_dtype=torch.float32)
        best = None
        for cfg in [None] + grid:
            gemv_mod._GEMV_OVERRIDE = cfg
            try:
                got = gemv_mod.int8_linear(x, ws[0], one, one, out_dtype=torch.float32)
                ok = bool(torch.equal(got, ref))
                us = graph_us([lambda w=w: gemv_mod.int8_linear(x, w, one, one) for w in ws])
            except Exception as exc:  # noqa: BLE001 - a sweep records failures and goes on
                results["gemv"].append({"name": name, "M": M, "cfg": cfg, "error": str(exc)[:160]})
                continue
            row = {"name": name, "M": M, "N": N, "K": K, "cfg": cfg or "default", "us": us,
                   "TBps": N * K / us / 1e6, "exact": ok,
                   "split": gemv_mod._gemv_config(M, N, K, x.device)["SPLIT_K"]}
            results["gemv"].append(row)
            if cfg is None:
                print("default", row, flush=True)
            if best is None or us < best["us"]:
                best = row
        gemv_mod._GEMV_OVERRIDE = None
        print("best", best, flush=True)
        del ws

# Hadamard + quant of one row per token, as after the decode scan.
for M in [] if args.skip_hadamard else args.batch:
    ys = [torch.randn(M, d, dtype=torch.float16, device="cuda") for _ in range(64)]
    s = torch.tensor(0.01, device="cuda")
    m, p, A = had_mod._factor(d, ys[0].device)
    ref = had_mod.hadamard_quant(ys[0], s)
    for mix, warps in itertools.product((0, 1, 2), (1, 2, 4, 8, 16)):
        outs = [torch.empty(M, d, dtype=torch.int8, device="cuda") for _ in ys]
        try:
            had_mod._launch(ys[0], s, m, p, A, outs[0], mix, num_warps=warps)
            diff = int((outs[0].int() - ref.int()).abs().max())
            us = graph_us([lambda y=y, o=o: had_mod._launch(y, s, m, p, A, o, mix, num_warps=warps)
                           for y, o in zip(ys, outs)])
        except Exception as exc:  # noqa: BLE001
            results["hadamard"].append({"M": M, "mix": mix, "num_warps": warps, "error": str(exc)[:160]})
            continue
        results["hadamard"].append({"M": M, "mix": mix, "num_warps": warps, "us": us, "max_int8_diff": diff})
        print(results["hadamard"][-1], flush=True)
json.dump(results, open(args.json, "w"), indent=1)
