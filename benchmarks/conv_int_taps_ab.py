"""A/B of the int8 prefill conv's tap sum: fp32 (each int8 input converted to fp32 once per tap,
I2F at a quarter of the FP32 rate on sm_90) against int32 (``INT_TAPS``, converted once per
output; the same bits: the sum is an exact integer either way).

- the kernel alone: x as in the model (the x half of in_proj's int8 output, row stride 2·d_inner),
  16 launches on distinct inputs a CUDA graph, µs a launch (``_timing.graph_us``), both ways, with
  the outputs compared;
- whole W8A8 prefills (batch 1), the two alternated twice, CUDA-event medians.

    python benchmarks/conv_int_taps_ab.py --json docs/sweeps/conv_int_taps_ab_h100.json
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import causal_conv1d as conv_mod
from quamba.kernels.triton import causal_conv1d_int8
from quamba.models.prefill_graphs import model_changed

parser = argparse.ArgumentParser()
parser.add_argument("--shapes", default="130m,1.4b,2.8b")
parser.add_argument("--prompt-len", default="1024,2048,4096")
parser.add_argument("--json", required=True)
args = parser.parse_args()
rows = []
shapes = args.shapes.split(",")
lengths = [int(v) for v in args.prompt_len.split(",")]

for shape in shapes:
    d = B.shape_config(shape).d_inner
    w = torch.randint(-127, 128, (d, 4), dtype=torch.int8, device="cuda")
    bias = torch.randn(d, device="cuda")
    s = torch.tensor(0.05, device="cuda")
    for length in lengths:
        xs = [torch.randint(-127, 128, (1, length, 2 * d), dtype=torch.int8, device="cuda")[..., :d] for _ in range(16)]
        outs = {}
        for rnd in range(2):
            for flag in (False, True):
                conv_mod.INT_TAPS = flag
                outs.setdefault(flag, causal_conv1d_int8(xs[0], s, w, s, bias, None, s)[0])
                us = graph_us([lambda x=x: causal_conv1d_int8(x, s, w, s, bias, None, s) for x in xs])
                row = dict(kind="kernel", shape=shape, d_inner=d, tokens=length, int_taps=flag, round=rnd, us=us,
                           GBps=2 * length * d / us / 1e3)
                print(json.dumps(row), flush=True)
                rows.append(row)
        rows.append(dict(kind="kernel_equal", shape=shape, tokens=length, equal=bool(torch.equal(outs[False], outs[True]))))
        print(rows[-1], flush=True)
        del xs

with torch.inference_mode():
    for shape in shapes:
        config = B.shape_config(shape)
        model = B.random_w8a8_model(config)
        for length in lengths:
            prompt = torch.randint(0, config.vocab_size, (1, length), device="cuda")
            logits = {}
            for rnd in range(2):
                for flag in (False, True):
                    conv_mod.INT_TAPS = flag
                    model_changed()                      # the prefill graph holds the other kernel
                    run = lambda: model(prompt, num_last_tokens=1)   # noqa: E731
                    run()
                    run()
                    logits.setdefault(flag, run().clone())
                    row = dict(kind="prefill", shape=shape, tokens=length, int_taps=flag, round=rnd,
                               ms=B.median_ms(run, warmup=3, reps=10))
                    print(json.dumps(row), flush=True)
                    rows.append(row)
            rows.append(dict(kind="prefill_equal", shape=shape, tokens=length,
                             equal=bool(torch.equal(logits[False], logits[True]))))
        del model
        torch.cuda.empty_cache()
conv_mod.INT_TAPS = True

summary = []
for kind, field in (("kernel", "us"), ("prefill", "ms")):
    for shape in shapes:
        for length in lengths:
            pick = [r for r in rows if r["kind"] == kind and r["shape"] == shape and r["tokens"] == length]
            line = dict(kind=kind, shape=shape, tokens=length,
                        fp32_taps=statistics.median(r[field] for r in pick if not r["int_taps"]),
                        int32_taps=statistics.median(r[field] for r in pick if r["int_taps"]))
            print(json.dumps(line), flush=True)
            summary.append(line)
with open(args.json, "w") as f:
    json.dump({"environment": B.environment(), "command": "python benchmarks/conv_int_taps_ab.py " +
               " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
               "rows": rows, "summary": summary}, f, indent=1)
