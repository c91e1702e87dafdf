"""Whole-model prefill with and without cutting the scan's sequence into segments
(selective_scan's _PREFILL_SEGMENTS: the rule's count vs 1), alternated in one process on the
same prompt, and the last position's logits compared. Each variant has its own copy of the
model (same seed, same weights): a model captures its prefill graphs at the first call of a
shape, with the setting of that moment. Shapes of the real checkpoints with random weights,
batch 1. Writes JSON.

    python benchmarks/prefill_segments_ab.py --shapes 130m,790m --json docs/sweeps/prefill_segments_ab_h100.json
"""

import argparse
import importlib
import json

import torch

from quamba.eval import bench as B

scan_mod = importlib.import_module("quamba.kernels.triton.selective_scan")
parser = argparse.ArgumentParser()
parser.add_argument("--shapes", default="130m,790m")
parser.add_argument("--methods", default="w8a8,fp16")
parser.add_argument("--prompt-len", default="1024,2048,4096")
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--json", required=True)
args = parser.parse_args()

rows = []
with torch.inference_mode():
    for shape in args.shapes.split(","):
        config = B.shape_config(shape)
        for method in args.methods.split(","):
            build = (lambda: B.random_fp_model(config)) if method == "fp16" else (lambda: B.random_w8a8_model(config))
            models = {"rule": build(), "whole": build()}
            for length in map(int, args.prompt_len.split(",")):
                ids = torch.randint(0, config.vocab_size, (1, length), device="cuda")
                logits = {}
                for rnd in range(args.rounds):
                    for variant, segments in (("rule", None), ("whole", 1)):
                        scan_mod._PREFILL_SEGMENTS = segments
                        model = models[variant]
                        ms = B.median_ms(lambda: model(ids, num_last_tokens=1), 2, 10)
                        logits[variant] = model(ids, num_last_tokens=1).float()
                        count = scan_mod._segment_count(1, length, config.d_inner, ids.device, method != "fp16")
                        rows.append(dict(shape=shape, method=method, prompt_len=length, round=rnd, variant=variant,
                                         segments=count if segments is None else 1, ms=ms))
                        print(rows[-1], flush=True)
                scan_mod._PREFILL_SEGMENTS = None
                diff = (logits["rule"] - logits["whole"]).norm() / logits["whole"].norm()
                rows.append(dict(shape=shape, method=method, prompt_len=length, logits_rel_diff=diff.item()))
                print(rows[-1], flush=True)
            del models, model
            torch.cuda.empty_cache()
json.dump({"environment": B.environment(), "rows": rows}, open(args.json, "w"), indent=1)
