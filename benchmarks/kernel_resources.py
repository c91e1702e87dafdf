"""Registers, spills, shared memory and warps of each Triton kernel a model launches, as the
GPU loaded them (GPU only).

Offline sm_90 compiles (tests/kernels/_compile_sm90.py) only match a launch when given its
specializations (unit strides, 16-divisible sizes); this reads the launched kernels
themselves. ``JITFunction.run`` returns the compiled kernel it launched, whose ``n_regs`` and
``n_spills`` come from loading the binary. Each phase runs once to compile and autotune, then
again with the launches recorded (eagerly: no prefill graphs, no decode graph, so every launch
goes through Python; a graph replays the same kernels).

    python benchmarks/kernel_resources.py --shape 2.8b --json docs/kernel_resources_2.8b_h100.json
    python benchmarks/kernel_resources.py --table docs/kernel_resources_2.8b_h100.json   # markdown, no GPU
"""

import argparse
import json
import os
import sys
import time

os.environ["QUAMBA_PREFILL_GRAPHS"] = "0"   # eager prefill: every launch passes through Python

import torch
from triton.runtime.jit import JITFunction

from quamba.eval import bench as B

parser = argparse.ArgumentParser()
parser.add_argument("--table", metavar="JSON", help="print the markdown table of an earlier run and exit")
parser.add_argument("--shape", default="2.8b")
parser.add_argument("--methods", default="w8a8,fp16")
parser.add_argument("--prompt-len", type=int, default=2048)
parser.add_argument("--batches", default="1,2,8,64", help="decode batch sizes")
parser.add_argument("--json")
args = parser.parse_args()


def markdown(results: list[dict]) -> str:
    """One row per kernel and call site (its first two tensor arguments' shapes) and phase."""
    lines = ["| model, phase | kernel | operands | grid | registers | spills | shared KB | warps | stages |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for res in results:
        for r in res["kernels"]:
            operands = " ".join("x".join(map(str, shape)) for shape in r["operands"])
            grid = "x".join(map(str, r["grid"])) if r["grid"] else "callable"
            lines.append(f"| {res['method']}, {res['phase']} | `{r['kernel']}` | {operands} | {grid} | {r['registers']} "
                         f"| {r['spills']} | {r['shared_bytes'] / 1024:g} | {r['num_warps']} | {r['num_stages']} |")
    return "\n".join(lines)


if args.table:
    print(markdown(json.load(open(args.table))["results"]))
    sys.exit(0)
if not args.json:
    parser.error("--json is required (or --table to print an earlier run)")

recorded: dict[tuple, dict] | None = None
_run = JITFunction.run


def _recording_run(self, *a, **k):
    kernel = _run(self, *a, **k)
    if recorded is not None and kernel is not None:
        md = kernel.metadata
        # The call site: the shapes of the first two tensor arguments (a GEMM's x and W).
        operands = [list(t.shape) for t in a if isinstance(t, torch.Tensor)][:2]
        grid = k.get("grid")
        key = (self.__name__, id(kernel), str(operands))
        row = recorded.setdefault(key, dict(
            kernel=self.__name__, operands=operands, grid=list(grid) if isinstance(grid, tuple) else None,
            registers=getattr(kernel, "n_regs", None), spills=getattr(kernel, "n_spills", None),
            shared_bytes=md.shared, num_warps=md.num_warps, num_stages=md.num_stages, launches=0))
        row["launches"] += 1
    return kernel


JITFunction.run = _recording_run


def phases(model, vocab: int):
    """(label, callable) pairs: one prefill and one decode step per batch size."""
    ids = torch.randint(0, vocab, (1, args.prompt_len), device="cuda")
    out = [(f"prefill {args.prompt_len}", lambda: model(ids, model.allocate_cache(1), num_last_tokens=1))]
    for b in map(int, args.batches.split(",")):
        cache = model.allocate_cache(b)
        step_ids = torch.randint(0, vocab, (b, 1), device="cuda")
        out.append((f"decode batch {b}", lambda c=cache, i=step_ids: model(i, c)))
    return out


config = B.shape_config(args.shape)
results = []
for method in args.methods.split(","):
    model = B.random_w8a8_model(config) if method == "w8a8" else B.random_fp_model(config)
    for label, call in phases(model, config.vocab_size):
        with torch.inference_mode():
            call()                      # compile and autotune
            torch.cuda.synchronize()
            recorded = {}
            call()
            torch.cuda.synchronize()
        kernels, recorded = sorted(recorded.values(), key=lambda r: -r["launches"]), None
        results.append(dict(method=method, phase=label, kernels=kernels))
        for r in kernels:
            print(method, label, r, flush=True)
    del model
    torch.cuda.empty_cache()

print(markdown(results))
json.dump({"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "environment": B.environment(), "shape": args.shape, "results": results},
          open(args.json, "w"), indent=1)
