"""The decode GEMV's K split, graph-timed on cold weights: per weight shape and token
count, every column block (32, 64) and split count (1 to 8, not only powers of two)
against the default config (``_gemv_config``'s heuristic). int32 sums are exact, so
every split gives the unsplit kernel's bits; each timed config is checked against the
default's output. Rows are written as they come (a killed run keeps what it measured).

    python benchmarks/split_k_sweep.py --json OUT [--shapes 2.8b:out_proj+x_proj] [--batch 4 8 16 64]

docs/sweeps/split_k_h100.json is from this script's first version (benchmarks/split_k_experiment.py
at commit 7a7063d), which also swept a
second way of summing the splits (int32 atomics into one zeroed tile, the last program
to arrive loading one tile instead of SPLIT_K): it was not faster anywhere, and went.
"""

import argparse
import importlib
import json

import torch

from _timing import graph_us

from quamba.eval import bench as B

gemv_mod = importlib.import_module("quamba.kernels.triton.int8_linear")

parser = argparse.ArgumentParser()
parser.add_argument("--json", required=True)
parser.add_argument("--shapes", default="2.8b:out_proj+x_proj,1.4b:out_proj+x_proj+in_proj",
                    help="SHAPE:NAME+NAME,... (names: in_proj, out_proj, x_proj)")
parser.add_argument("--batch", type=int, nargs="+", default=[4, 8, 16, 64])
parser.add_argument("--splits", default="1,2,3,4,6,8")
parser.add_argument("--block-n", default="32,64")
args = parser.parse_args()

one = torch.ones((), device="cuda")
results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": []}


def save():
    json.dump(results, open(args.json, "w"), indent=1)


for spec in args.shapes.split(","):
    shape, names = spec.split(":")
    config = B.shape_config(shape)
    d, dm, r, n = config.d_inner, config.d_model, config.dt_rank, config.d_state
    shapes = {"in_proj": (2 * d, dm), "out_proj": (dm, d), "x_proj": (r + 2 * n, d)}
    for name in names.split("+"):
        N, K = shapes[name]
        reps_w = max(4, (256 << 20) // (N * K))          # >= 256 MB of distinct weights: nothing stays in L2
        ws = [torch.randint(-127, 128, (N, K), dtype=torch.int8, device="cuda") for _ in range(reps_w)]
        for M in args.batch:
            x = torch.randint(-127, 128, (M, K), dtype=torch.int8, device="cuda")
            gemv_mod._GEMV_OVERRIDE = None
            ref = gemv_mod.int8_linear(x, ws[0], one, one, out_dtype=torch.float32)
            default = gemv_mod._gemv_config(M, N, K, x.device)
            cfgs = [None]
            for bn in map(int, args.block_n.split(",")):
                for split in map(int, args.splits.split(",")):
                    cfgs.append(dict(BLOCK_N=bn, BLOCK_K=256, num_stages=default["num_stages"], SPLIT_K=split))
            best = None
            for cfg in cfgs:
                gemv_mod._GEMV_OVERRIDE = cfg
                try:
                    got = gemv_mod.int8_linear(x, ws[0], one, one, out_dtype=torch.float32)
                    again = gemv_mod.int8_linear(x, ws[0], one, one, out_dtype=torch.float32)
                    exact = bool(torch.equal(got, ref)) and bool(torch.equal(again, ref))
                    us = graph_us([lambda w=w: gemv_mod.int8_linear(x, w, one, one) for w in ws])
                    after = gemv_mod.int8_linear(x, ws[0], one, one, out_dtype=torch.float32)
                    exact = exact and bool(torch.equal(after, ref))   # the counters left at zero by the replays
                except Exception as exc:  # noqa: BLE001 - an experiment records failures and goes on
                    results["rows"].append({"shape": shape, "name": name, "M": M, "cfg": cfg, "error": str(exc)[:200]})
                    continue
                used = gemv_mod._gemv_config(M, N, K, x.device)
                row = {"shape": shape, "name": name, "M": M, "N": N, "K": K, "cfg": cfg or "default",
                       "split": used["SPLIT_K"], "programs": -(-N // used["BLOCK_N"]) * used["SPLIT_K"],
                       "us": us, "TBps": N * K / us / 1e6, "exact": exact}
                results["rows"].append(row)
                print(shape, name, M, row["cfg"], f"split {row['split']} programs {row['programs']}",
                      f"{us:.2f} us", "exact" if exact else "WRONG", flush=True)
                if best is None or us < best["us"]:
                    best = row
                save()
            gemv_mod._GEMV_OVERRIDE = None
            print("best", best, flush=True)
        del ws
save()
