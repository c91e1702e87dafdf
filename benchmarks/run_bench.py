"""The committed benchmark: `quamba bench` without the CLI's dependencies (for the GPU machine).

    python benchmarks/run_bench.py --json docs/bench_h100.json --plot docs/bench_latency.png [--shape ...]
"""

import argparse
import json
import sys

import torch

from rich.console import Console

from quamba.eval import bench as B

parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="130m,1.4b,2.8b")
parser.add_argument("--methods", default="fp16,w8a8")
parser.add_argument("--prompt-len", default="1024,2048,4096")
parser.add_argument("--batch", default="1,8,64")
parser.add_argument("--reps", type=int, default=20)
parser.add_argument("--gen", type=int, default=64)
parser.add_argument("--state-dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
parser.add_argument("--json", required=True)
parser.add_argument("--plot", default=None)
args = parser.parse_args()
result = B.run_bench(args.shape.split(","), args.methods.split(","), [int(x) for x in args.prompt_len.split(",") if x],
                     [int(x) for x in args.batch.split(",") if x], args.reps, command="python " + " ".join(sys.argv),
                     state_dtype={"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.state_dtype],
                     gen=args.gen, status=lambda t: print(t, file=sys.stderr, flush=True))
with open(args.json, "w") as f:
    json.dump(result, f, indent=2)
if args.plot:
    B.plot_latency(result["rows"], args.plot)
Console(width=140).print(B.table(result["rows"]))
