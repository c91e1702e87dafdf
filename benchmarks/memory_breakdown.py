"""Where peak GPU memory goes: allocated bytes, the peak within the phase and the peak so far after each phase (build, first
prefill, graph-capturing prefill, replayed prefill, batch-1 decode graph, batch-64
decode graph, and after the model is freed) for quamba fp16, W8A8 and (when importable) mamba-ssm fp16. Writes JSON.

    python benchmarks/memory_breakdown.py --shape 2.8b --prompt-len 2048 --json OUT
"""

import argparse
import gc
import json

import torch

from quamba.eval import bench as B
from quamba.models.cuda_graph import GraphedDecoder

parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="2.8b")
parser.add_argument("--prompt-len", type=int, default=2048)
parser.add_argument("--batch", default="1,64")
parser.add_argument("--json", required=True)
args = parser.parse_args()
config = B.shape_config(args.shape)
GiB = 2**30


def phases(method):
    B._fresh_peak()
    out = []

    overall = [0]

    def mark(name):
        torch.cuda.synchronize()
        phase_peak = torch.cuda.max_memory_allocated()
        overall[0] = max(overall[0], phase_peak)
        out.append({"phase": name, "allocated_gib": torch.cuda.memory_allocated() / GiB,
                    "phase_peak_gib": phase_peak / GiB, "peak_gib": overall[0] / GiB,
                    "reserved_gib": torch.cuda.memory_reserved() / GiB,
                    "phase_peak_reserved_gib": torch.cuda.max_memory_reserved() / GiB})
        torch.cuda.reset_peak_memory_stats()
        print(f"  {method:16s} {name:28s} allocated {out[-1]['allocated_gib']:6.3f}  peak in phase "
              f"{out[-1]['phase_peak_gib']:6.3f}  so far {out[-1]['peak_gib']:6.3f}  reserved peak in phase "
              f"{out[-1]['phase_peak_reserved_gib']:6.3f} GiB", flush=True)

    with torch.inference_mode():
        if method == "mamba-ssm-fp16":
            model = B.mamba_ssm_model(config)
        else:
            model = {"fp16": B.random_fp_model, "w8a8": B.random_w8a8_model}[method](config)
        mark("build")
        ids = torch.randint(0, config.vocab_size, (1, args.prompt_len), device="cuda")
        for i in range(3):
            model(ids, num_last_tokens=1)
            mark(f"prefill {args.prompt_len} call {i + 1}")
        for batch in [int(b) for b in args.batch.split(",")]:
            step_ids = torch.randint(0, config.vocab_size, (batch,), device="cuda")
            if method == "mamba-ssm-fp16":
                prompt = torch.randint(0, config.vocab_size, (batch, 16), device="cuda")
                model.generate(prompt, max_length=24, cg=True)
            else:
                dec = GraphedDecoder(model, batch)
                for _ in range(3):
                    dec.step(step_ids)
                del dec
            mark(f"decode b={batch}")
    del model
    gc.collect()
    mark("model freed")
    return out


methods = ["fp16", "w8a8"]
try:
    import mamba_ssm  # noqa: F401
    methods.append("mamba-ssm-fp16")
except ImportError:
    print("mamba_ssm not importable: quamba only")
result = {"environment": B.environment(), "shape": args.shape, "prompt_len": args.prompt_len,
          "phases": {m: phases(m) for m in methods}}
json.dump(result, open(args.json, "w"), indent=1)
