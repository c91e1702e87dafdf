"""Do the prefill scan and the int8 GEMMs overlap on two streams? mamba-2.8b shapes at one
sequence: in_proj (requantizing) and out_proj against the scan of the same tokens, each alone,
in sequence, and on two streams forked and joined with events, all captured in one CUDA graph
of 20 repetitions (PDL on and off). Writes JSON.

    python benchmarks/prefill_two_streams_check.py --json docs/sweeps/prefill_two_streams_h100.json
"""

import argparse
import json
import os
import statistics

import torch

from _scan_inputs import int8_scan_inputs

from quamba.eval import bench as B
from quamba.kernels.triton import int8_linear, int8_linear_quant, selective_scan_int8

D, N, D_MODEL, REPS = 5120, 16, 2560, 20
parser = argparse.ArgumentParser()
parser.add_argument("--json", required=True)
args = parser.parse_args()


def i8(*shape):
    return torch.randint(-127, 128, shape, dtype=torch.int8, device="cuda")


def scalar(v):
    return torch.tensor(v, device="cuda")


def graph_us(build):
    """µs per repetition of a CUDA graph of ``build()`` (which issues REPS repetitions)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        build()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(7):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / REPS)
    return statistics.median(times)


rows = []
side, other = torch.cuda.Stream(), torch.cuda.Stream()
for length in (1024, 2048):
    x_in, w_in, x_out, w_out, one = i8(length, D_MODEL), i8(2 * D, D_MODEL), i8(length, D), i8(D_MODEL, D), scalar(0.01)
    scan_args = int8_scan_inputs(1, length, D, N)

    def gemms():
        int8_linear_quant(x_in, w_in, one, one, None, one)
        int8_linear(x_out, w_out, one, one)

    def scan():
        selective_scan_int8(**scan_args)

    def two_streams():
        main = torch.cuda.current_stream()
        for _ in range(REPS):
            fork = torch.cuda.Event()
            fork.record(main)
            side.wait_event(fork)
            other.wait_event(fork)
            with torch.cuda.stream(side):
                gemms()
            with torch.cuda.stream(other):
                scan()
            for s in (side, other):
                join = torch.cuda.Event()
                join.record(s)
                main.wait_event(join)

    gemms(), scan()   # compile and autotune outside the capture
    torch.cuda.synchronize()
    cases = {"gemms": lambda: [gemms() for _ in range(REPS)], "scan": lambda: [scan() for _ in range(REPS)],
             "sequential": lambda: [(gemms(), scan()) for _ in range(REPS)], "two streams": two_streams}
    for name, build in cases.items():
        for pdl in ("1", "0"):
            os.environ["QUAMBA_PDL"] = pdl
            rows.append(dict(tokens=length, what=name, pdl=pdl == "1", us=graph_us(build)))
            print(rows[-1], flush=True)
os.environ.pop("QUAMBA_PDL", None)   # each row records its own setting
json.dump({"environment": B.environment(), "rows": rows}, open(args.json, "w"), indent=1)
