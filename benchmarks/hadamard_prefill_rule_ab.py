"""A/B of the prefill Hadamard's kernel choice in whole W8A8 prefills (batch 1), one process:
``old`` sends every width with 2^k >= 16 to the tensor-core kernel above 256 rows; ``new`` (the
default, ``_prefill_takes_mma``) keeps the butterfly for powers of two and for m = 12 below 2^22
elements, where docs/sweeps/hadamard_sweep_{pow2,small_mix}_h100.json measured it faster.
Alternated twice; CUDA-event medians; the logits' largest difference between the two rules (the
two kernels sum in other orders, so an int8 value may move by one step).

    python benchmarks/hadamard_prefill_rule_ab.py --json docs/sweeps/hadamard_prefill_rule_ab_h100.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics

import torch

from quamba.eval import bench as B
from quamba.models.prefill_graphs import model_changed

hq = importlib.import_module("quamba.kernels.triton.hadamard_quant")
parser = argparse.ArgumentParser()
parser.add_argument("--shapes", default="130m,370m,1.4b")
parser.add_argument("--prompt-len", default="1024,2048,4096")
parser.add_argument("--reps", type=int, default=10)
parser.add_argument("--json", required=True)
args = parser.parse_args()

new_rule = hq._prefill_takes_mma
rules = {"old": lambda M, n, m: M > hq._MMA_MIN_ROWS, "new": new_rule}
rows = []
with torch.inference_mode():
    for shape in args.shapes.split(","):
        config = B.shape_config(shape)
        model = B.random_w8a8_model(config)
        for length in (int(v) for v in args.prompt_len.split(",")):
            prompt = torch.randint(0, config.vocab_size, (1, length), device="cuda")
            logits = {}
            for rnd in range(2):
                for name, rule in rules.items():
                    hq._prefill_takes_mma = rule
                    model_changed()          # the prefill graph holds the other rule's kernel
                    run = lambda: model(prompt, num_last_tokens=1)   # noqa: E731
                    for _ in range(2):       # eager, capture
                        run()
                    ms = B.median_ms(run, warmup=3, reps=args.reps)
                    logits.setdefault(name, run().float())
                    row = dict(shape=shape, d_inner=config.d_inner, prompt_len=length, rule=name, round=rnd, ms=ms)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
            hq._prefill_takes_mma = new_rule
            diff = float((logits["old"] - logits["new"]).abs().max())
            rows.append(dict(shape=shape, prompt_len=length, logits_max_abs_diff=diff))
        del model
        torch.cuda.empty_cache()

summary = []
for shape in args.shapes.split(","):
    for length in (int(v) for v in args.prompt_len.split(",")):
        pick = [r for r in rows if r.get("shape") == shape and r.get("prompt_len") == length and "ms" in r]
        line = dict(shape=shape, prompt_len=length,
                    **{f"{name}_ms": statistics.median(r["ms"] for r in pick if r["rule"] == name) for name in rules})
        print(json.dumps(line), flush=True)
        summary.append(line)
with open(args.json, "w") as f:
    json.dump({"environment": B.environment(), "command": "python benchmarks/hadamard_prefill_rule_ab.py " +
               " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
               "rows": rows, "summary": summary}, f, indent=1)
