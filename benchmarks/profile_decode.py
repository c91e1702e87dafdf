"""Where a decode step's time goes: per-kernel GPU time of one token (CUDA graph replays
profiled), for fp16 and W8A8 on one shape; with --prefill N, the same for one
batch-1 prefill of N tokens (after the warm-up call that captures its graphs).
Prints a table; writes JSON.

It also records each call site's median time (the kernels in the order a layer launches
them: the GEMVs of in_proj, x_proj, dt_proj and out_proj share names). Besides each
kernel's busy time it records the GPU's idle time: the span from the first
kernel's start to the last one's end, less the time some kernel ran, and that idle time
split by the kernel that ends each gap (so a gap before every in_proj GEMM shows there).
With programmatic dependent launch on, a kernel starts early and waits, so its busy time
includes the wait and gaps shrink: profile with QUAMBA_PDL=0 for kernel times.

    python benchmarks/profile_decode.py --shape 2.8b [--prefill 2048] --json OUT
"""

import argparse
import json
import statistics
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from quamba.eval import bench as B
from quamba.models.cuda_graph import GraphedDecoder

parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="2.8b")
parser.add_argument("--batch", type=int, default=1)
parser.add_argument("--prefill", type=int, default=0, help="profile a prefill of this many tokens instead")
parser.add_argument("--state-dtype", default="fp32", choices=["fp32", "fp16"])
parser.add_argument("--methods", default="fp16,w8a8")
parser.add_argument("--json", required=True)
args = parser.parse_args()
config = B.shape_config(args.shape)
out = {}
builders = {"fp16": B.random_fp_model, "w8a8": B.random_w8a8_model}
for method in args.methods.split(","):
    model = builders[method](config)
    model.ssm_state_dtype = torch.float16 if args.state_dtype == "fp16" else torch.float32
    if args.prefill:
        prompt = torch.randint(0, config.vocab_size, (1, args.prefill), device="cuda")
        run = lambda: model(prompt, num_last_tokens=1)   # noqa: E731
        steps = 3
    else:
        dec = GraphedDecoder(model, args.batch)
        ids = torch.randint(0, config.vocab_size, (args.batch,), device="cuda")
        run = lambda: dec.step(ids)   # noqa: E731
        steps = 20
    with torch.inference_mode():
        for _ in range(3 if args.prefill else 10):
            run()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                run()
            torch.cuda.synchronize()
    per_kernel = defaultdict(lambda: [0.0, 0, 0.0])   # busy ms, launches, idle ms before it
    cuda_events = sorted((evt for evt in prof.events() if evt.device_type == torch.autograd.DeviceType.CUDA),
                         key=lambda evt: evt.time_range.start)
    busy_until = None
    for evt in cuda_events:
        name = evt.name[:60]
        per_kernel[name][0] += evt.device_time / steps / 1000  # ms per token (or prefill)
        per_kernel[name][1] += 1 / steps
        start, end = evt.time_range.start, evt.time_range.end   # µs
        if busy_until is not None and start > busy_until:
            per_kernel[name][2] += (start - busy_until) / steps / 1000
        busy_until = end if busy_until is None else max(busy_until, end)
    # Per position in a layer: a layer starts at each RMSNorm launch, so (position, kernel) names
    # one call site (in_proj, x_proj, dt_proj and out_proj share the GEMV kernels' names).
    by_position = defaultdict(list)
    position = None
    for evt in cuda_events:
        if "rmsnorm" in evt.name:
            position = 0
        if position is not None:
            by_position[(position, evt.name[:60])].append(evt.device_time)
            position += 1
    layer_calls = [{"position": pos, "name": name, "median_us": statistics.median(times), "calls": len(times)}
                   # a call site of every layer (not the embedding's or the head's few launches)
                   for (pos, name), times in sorted(by_position.items()) if len(times) >= steps * 8]
    rows = sorted(([k, *v] for k, v in per_kernel.items()), key=lambda r: -r[1])
    total = sum(r[1] for r in rows)
    launches = sum(r[2] for r in rows)
    idle = sum(r[3] for r in rows)
    unit = "prefill" if args.prefill else "token"
    out[method] = {f"kernel_ms_per_{unit}": total, f"launches_per_{unit}": launches,
                   f"idle_ms_per_{unit}": idle,
                   "kernels": [{"name": n, "ms": ms, "count": c, "idle_ms_before": gap} for n, ms, c, gap in rows],
                   "layer_calls": layer_calls}
    what = f"prefill {args.prefill}" if args.prefill else f"decode b={args.batch}, per token"
    print(f"== {method} {args.shape} {what}: {total:.3f} ms of kernel time, {launches:.0f} launches, "
          f"{idle:.3f} ms idle between kernels (steps run back to back)")
    for n, ms, c, gap in rows[:14]:
        print(f"  {ms:8.4f} ms  x{c:5.0f}  idle before {gap:7.4f} ms  {n}")
    print("  per call, by position in a layer (median):")
    for call in layer_calls:
        print(f"    {call['position']}: {call['median_us']:7.2f} us  {call['name']}")
    del model, run
    dec = None
    torch.cuda.empty_cache()
json.dump(out, open(args.json, "w"), indent=1)
