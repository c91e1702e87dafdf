"""Markdown tables from a `quamba bench` JSON (for docs/benchmarks.md).

    python benchmarks/bench_table.py docs/bench_h100.json
"""

import json
import sys

from quamba.eval.bench import ratios

data = json.load(open(sys.argv[1]))
rows = data["rows"]
rat = {(r["shape"], r["kind"], r["batch"], r["prompt_len"], r["method"]): r["ratio"] for r in ratios(rows)}
methods = list(dict.fromkeys(r["method"] for r in rows))
env = data["environment"]
print(f"Device: {env.get('device')}; torch {env['torch']} (CUDA {env['cuda']}), triton {env.get('triton')}, "
      f"mamba-ssm {env.get('mamba_ssm')}, causal-conv1d {env.get('causal_conv1d')}, Python {env['python']}; "
      f"{env['date']}.\n")
print("| shape | setting | " + " | ".join(methods) + " | " + " | ".join(f"{m} / anchor" for m in methods[:-1]) + " |")
print("|" + "---|" * (2 + 2 * len(methods) - 1))
settings = list(dict.fromkeys((r["shape"], r["kind"], r.get("batch"), r.get("prompt_len")) for r in rows))
for shape, kind, batch, plen in settings:
    cells, ratio_cells = [], []
    for m in methods:
        r = next((r for r in rows if (r["shape"], r["kind"], r.get("batch"), r.get("prompt_len"), r["method"])
                  == (shape, kind, batch, plen, m)), None)
        if r is None:
            cells.append("")
        elif kind == "prefill":
            cells.append(f"{r['ms']:.1f} ms")
        elif kind == "decode":
            cells.append(f"{r['ms_per_token']:.3f} ms ({r['tokens_per_s']:.0f} tok/s)")
        else:
            reserved = f", r {r['peak_reserved_bytes'] / 2**30:.2f}" if "peak_reserved_bytes" in r else ""
            cells.append(f"{r['peak_bytes'] / 2**30:.2f} GiB (w {r['weight_bytes'] / 2**30:.2f}{reserved})")
        if m != methods[-1]:
            x = rat.get((shape, kind, batch, plen, m))
            ratio_cells.append("" if x is None else f"{x:.2f}x")
    label = {"prefill": f"prefill {plen}", "decode": f"decode b={batch}", "memory": "peak memory" + ("" if batch is None else f" to b={batch}")}[kind]
    print(f"| {shape} | {label} | " + " | ".join(cells) + " | " + " | ".join(ratio_cells) + " |")
