"""A/B of whole W8A8 (or fp16) prefills (batch 1) under module-attribute variants, one process:
each ``--variant`` sets attributes (``module.NAME=python-literal``, several joined by ``;``;
empty: as shipped), the prefill graph is rebuilt (``model_changed``), and the variants are
alternated twice. CUDA-event medians; the last position's logits' largest difference from the
first variant.

    python benchmarks/prefill_ab.py --shapes 1.4b --prompt-len 1024,2048 \\
        --variant "quamba.kernels.triton.selective_scan._CHUNKED_CONFIG_FEW=None" --variant "" --json OUT
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import statistics
import sys
import time

import torch

from quamba.eval import bench as B
from quamba.models.prefill_graphs import model_changed

parser = argparse.ArgumentParser()
parser.add_argument("--shapes", default="1.4b")
parser.add_argument("--method", default="w8a8", choices=["w8a8", "fp16"])
parser.add_argument("--prompt-len", default="1024,2048,4096")
parser.add_argument("--variant", action="append", required=True, help="module.NAME=LITERAL[;...] ('' = as shipped)")
parser.add_argument("--reps", type=int, default=10)
parser.add_argument("--json", required=True)
args = parser.parse_args()
if len(set(args.variant)) != len(args.variant):
    parser.error("each --variant must differ")
if os.environ.get("QUAMBA_PREFILL_GRAPHS", "1") != "1":
    # model_changed() drops the whole-stack graphs only; one graph a block would keep replaying the
    # first variant's kernels.
    parser.error("run with QUAMBA_PREFILL_GRAPHS=1 (the default)")


def parse(variant: str) -> list[tuple[object, str, object]]:
    settings = []
    for item in filter(None, (part.strip() for part in variant.split(";"))):
        target, value = item.split("=", 1)
        module, name = target.rsplit(".", 1)
        settings.append((importlib.import_module(module), name, ast.literal_eval(value)))
    return settings


def apply(settings) -> None:
    """The shipped values, then the variant's settings over them."""
    for (module, name), value in shipped.items():
        setattr(module, name, value)
    for module, name, value in settings:
        setattr(module, name, value)


def measure(shape: str, length: int, model, prompt) -> None:
    logits, times = {}, {}
    for rnd in range(2):
        for variant, settings in variants.items():
            apply(settings)
            model_changed()          # the prefill graph holds the other variant's kernels
            run = lambda: model(prompt, num_last_tokens=1)   # noqa: E731
            for _ in range(2):       # eager, capture
                run()
            ms = B.median_ms(run, warmup=3, reps=args.reps)
            logits.setdefault(variant, run().float())
            times.setdefault(variant, []).append(ms)
            rows.append(dict(shape=shape, prompt_len=length, variant=variant, round=rnd, ms=ms))
            print(json.dumps(rows[-1]), flush=True)
    first = logits[args.variant[0]]
    summary.append(dict(shape=shape, prompt_len=length,
                        **{f"{v or 'shipped'}_ms": statistics.median(t) for v, t in times.items()},
                        logits_max_abs_diff={v or "shipped": float((x - first).abs().max()) for v, x in logits.items()}))
    print(json.dumps(summary[-1]), flush=True)


variants = {v: parse(v) for v in args.variant}
shipped = {(m, n): getattr(m, n) for s in variants.values() for m, n, _ in s}
rows, summary = [], []
try:
    with torch.inference_mode():
        for shape in args.shapes.split(","):
            config = B.shape_config(shape)
            model = (B.random_w8a8_model if args.method == "w8a8" else B.random_fp_model)(config)
            for length in (int(v) for v in args.prompt_len.split(",")):
                measure(shape, length, model, torch.randint(0, config.vocab_size, (1, length), device="cuda"))
            del model
            torch.cuda.empty_cache()
finally:
    apply([])   # the shipped values back, whatever happened
json.dump({"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "environment": B.environment(), "rows": rows, "summary": summary}, open(args.json, "w"), indent=1)
