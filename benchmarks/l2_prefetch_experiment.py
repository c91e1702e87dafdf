"""Can the HBM stream a GEMV's weights while a chain of latency-bound kernels runs?

A W8A8 decode layer spends ~12 µs of its ~34 in small kernels (conv, scan, Hadamard,
norm) that move almost no bytes, so the HBM idles a third of the step; the GEMVs then
stream their weights at ~2.2 TB/s. If a kernel early in the chain asks L2 to fetch the
next GEMV's weights (Hopper's bulk prefetch, ``cp.async.bulk.prefetch.L2``, or one
``prefetch.global.L2`` per 128-byte line), the GEMV would read them from L2.

Per layer (distinct weights, so nothing is in L2 from the layer before):

    prefetch(W)  ->  STAGES dependent small kernels  ->  int8 GEMV on W (batch 1)

with the prefetch kernel issuing nothing (``none``), bulk prefetches (``bulk``) or
per-line prefetches (``line``). All launches use PDL as the decode kernels do; the
prefetch kernel issues its prefetches before it waits for the kernel before it.
Timed in a CUDA graph, µs per layer (median); the GEMV's outputs are checked equal.

    python benchmarks/l2_prefetch_experiment.py --json OUT     # GPU (sm_90) only

Result on the H100 (docs/sweeps/l2_prefetch_h100.json): no use. In the chain the prefetch
kernel holds the chain until its prefetches are done (bulk: in_proj + 8 stages 25.7 ->
28.8 µs a layer). On its own branch of the graph beside the chain, in_proj's GEMV reads the
prefetched weight in 9.0 µs instead of 11.3, which is only 2.9 TB/s from L2: the GEMV
itself, not HBM, sets its pace. The layer gains at most 0.9 µs (25.5 -> 24.6), out_proj
nothing (21.8 -> 21.7).
"""

import argparse
import json

import torch
import triton
import triton.language as tl

from _timing import captured, graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import int8_linear
from quamba.kernels.triton._common import pdl_launch_options, pdl_wait


@triton.jit
def _prefetch_kernel(addr, nbytes, chunk, MODE: tl.constexpr, SLOTS: tl.constexpr, USE_PDL: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    offs = tl.arange(0, SLOTS)
    if MODE == 1:   # bulk: one prefetch of `chunk` bytes per slot
        start = (pid + offs * nprog).to(tl.int64) * chunk
        size = tl.where(start < nbytes, tl.minimum(nbytes - start, chunk), 0).to(tl.int32)
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.s32 p, $2, 0; @p cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }",
            "=r,l,r", [addr + start, size], dtype=tl.int32, is_pure=False, pack=1)
    if MODE == 2:   # one prefetch per 128-byte line, slots striding over the program's span
        span = tl.cdiv(nbytes, nprog)
        lo = pid.to(tl.int64) * span
        for i in range(0, tl.cdiv(span, 128 * SLOTS)):
            line = lo + (i * SLOTS + offs).to(tl.int64) * 128
            ok = (line < lo + span) & (line < nbytes)
            tl.inline_asm_elementwise(
                "{ .reg .pred p; setp.ne.s32 p, $2, 0; @p prefetch.global.L2::evict_last [$1]; mov.u32 $0, 0; }",
                "=r,l,r", [addr + line, ok.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1)
    pdl_wait(USE_PDL)


@triton.jit
def _stage_kernel(buf_ptr, s, BLOCK: tl.constexpr, USE_PDL: tl.constexpr):
    """A latency-bound step: read a block the previous stage wrote (from L2), add, write."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    offs = tl.arange(0, BLOCK)
    pdl_wait(USE_PDL)
    src = buf_ptr + ((s + 1) % 2) * nprog * BLOCK + ((pid + 1) % nprog) * BLOCK
    v = tl.load(src + offs, cache_modifier=".cg")
    tl.store(buf_ptr + (s % 2) * nprog * BLOCK + pid * BLOCK + offs, v + 1)


def kernel_times(calls) -> dict:
    """Mean GPU µs per launch of each kernel name over replays of a graph of ``calls``."""
    from torch.profiler import ProfilerActivity, profile
    graph = captured(calls)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            graph.replay()
        torch.cuda.synchronize()
    total, count = {}, {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            name = e.name[:40]
            total[name] = total.get(name, 0.0) + e.device_time
            count[name] = count.get(name, 0) + 1
    return {name: round(total[name] / count[name], 2) for name in total}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", required=True)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--stages", default="0,8")
    args = parser.parse_args()
    dev = torch.device("cuda")
    pdl = pdl_launch_options(dev)
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    rows = []
    side = torch.cuda.Stream()
    for name, (n, k) in {"in_proj": (10240, 2560), "out_proj": (2560, 5120)}.items():
        ws = [torch.randint(-127, 128, (n, k), dtype=torch.int8, device=dev) for _ in range(args.layers)]
        x = torch.randint(-127, 128, (1, k), dtype=torch.int8, device=dev)
        one = torch.ones((), device=dev)
        scale = torch.full((n,), 1e-3, device=dev)
        buf = torch.zeros(2, 8, 1024, dtype=torch.int32, device=dev)
        refs = [int8_linear(x, w, one, scale, static_weight=True) for w in ws]
        for stages in (int(s) for s in args.stages.split(",")):
            for mode, programs, branch in (("none", 32, False), ("bulk", 32, False), ("bulk", sms, False),
                                           ("line", sms, False), ("none", 32, True), ("bulk", 32, True),
                                           ("bulk", sms, True), ("line", sms, True)):
                code = {"none": 0, "bulk": 1, "line": 2}[mode]
                outs = [None] * len(ws)

                def layer(i, code=code, programs=programs, stages=stages, branch=branch):
                    w = ws[i]
                    slots = 128
                    chunk = max(16, triton.cdiv(triton.cdiv(w.numel(), programs * slots), 16) * 16)
                    main_stream = torch.cuda.current_stream()
                    if branch:   # the prefetch on its own branch of the graph, beside the chain
                        side.wait_stream(main_stream)
                    with torch.cuda.stream(side if branch else main_stream):
                        _prefetch_kernel[(programs,)](w.data_ptr(), w.numel(), chunk, MODE=code, SLOTS=slots,
                                                      num_warps=4, **({"USE_PDL": False} if branch else pdl))
                    for s in range(stages):
                        _stage_kernel[(8,)](buf, s, BLOCK=1024, num_warps=4, **pdl)
                    if branch:
                        main_stream.wait_stream(side)
                    outs[i] = int8_linear(x, w, one, scale, static_weight=True)

                calls = [lambda i=i: layer(i) for i in range(len(ws))]
                us = graph_us(calls)
                same = all(torch.equal(o, r) for o, r in zip(outs, refs))
                kernel_us = kernel_times(calls)
                rows.append(dict(weight=name, shape=[n, k], stages=stages, mode=mode, programs=programs,
                                 branch=branch, us_per_layer=us, kernel_us=kernel_us, outputs_equal=same))
                print(rows[-1], flush=True)
    json.dump({"environment": B.environment(), "rows": rows}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
