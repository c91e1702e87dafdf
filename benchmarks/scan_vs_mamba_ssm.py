"""quamba's prefill scan against mamba-ssm's CUDA scan (`selective_scan_fn`) on the same shapes.

The prefill target (W8A8 prefill of 2048 tokens at 0.6x mamba-ssm's time) depends on the scan:
it is about 40% of quamba's 2.8b prefill and the int8 inputs do not shrink its work. This puts
quamba's chunked Triton scan (int8 inputs as the W8A8 block passes them, and fp16 inputs as the
fp16 model does) beside mamba-ssm's kernel, with the same random values: u, delta and z in fp16
(b, d, l) and B, C (b, n, l) for mamba-ssm; no initial state (mamba-ssm's scan takes none); D,
the delta bias, softplus and the SiLU(z) gate on in all. Graph-timed (CUDA graph of distinct
inputs, median of 7 replays); mamba-ssm's call falls back to CUDA events if it cannot be captured.

    python benchmarks/scan_vs_mamba_ssm.py --json docs/sweeps/scan_vs_mamba_ssm_h100.json
"""

from __future__ import annotations

import argparse
import json

import torch

from _scan_inputs import float_scan_inputs, int8_scan_inputs
from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import selective_scan, selective_scan_int8

parser = argparse.ArgumentParser()
parser.add_argument("--json", required=True)
parser.add_argument("--shapes", default="1x2048x5120,1x1024x5120,1x4096x5120,1x2048x4096,1x2048x1536,8x256x5120",
                    help="batch x tokens x d_inner, comma-separated (2.8b: 5120, 1.4b: 4096, 130m: 1536)")
args = parser.parse_args()

def load_selective_scan_fn():
    """mamba-ssm's scan, or None. Its package __init__ imports the whole model and, through it,
    transformers; where that fails the scan's own module is imported under a bare package."""
    import importlib
    import importlib.util
    import sys
    import types
    try:
        return importlib.import_module("mamba_ssm.ops.selective_scan_interface").selective_scan_fn
    except ImportError as err:
        spec = importlib.util.find_spec("mamba_ssm")
        if spec is None:
            print("mamba_ssm is not installed: timing quamba's kernels only")
            return None
        print(f"mamba_ssm's package import failed ({err}); importing its scan module alone")
        for name in [n for n in sys.modules if n == "mamba_ssm" or n.startswith("mamba_ssm.")]:
            del sys.modules[name]
        package = types.ModuleType("mamba_ssm")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["mamba_ssm"] = package
        return importlib.import_module("mamba_ssm.ops.selective_scan_interface").selective_scan_fn


selective_scan_fn = load_selective_scan_fn()


def event_us(calls, reps: int = 7) -> float:
    """Median µs per call of ``calls`` launched back to back (for calls a graph cannot hold)."""
    return B.median_ms(lambda: [c() for c in calls], warmup=1, reps=reps) * 1e3 / len(calls)


def mamba_ssm_args(a: dict) -> dict:
    """selective_scan_fn's arguments for the same values: channels before time."""
    f = float_scan_inputs(a, torch.float16, torch.float16)
    t = lambda x: x.transpose(1, 2).contiguous()   # noqa: E731  (b, l, c) -> (b, c, l)
    return dict(u=t(f["u"]), delta=t(f["delta"]), A=f["A"], B=t(f["B"]), C=t(f["C"]), D=f["D"].float(),
                z=t(f["z"]), delta_bias=f["delta_bias"].float(), delta_softplus=True, return_last_state=True)


rows = []
with torch.no_grad():
    for shape in args.shapes.split(","):
        batch, seqlen, dim = (int(v) for v in shape.split("x"))
        sets = [dict(int8_scan_inputs(batch, seqlen, dim), initial_state=None) for _ in range(3)]
        row = {"batch": batch, "seqlen": seqlen, "dim": dim, "dstate": 16}
        row["quamba_int8_us"] = graph_us([lambda a=a: selective_scan_int8(**a) for a in sets])
        fp16 = [float_scan_inputs(a, torch.float16) for a in sets]
        row["quamba_fp16_us"] = graph_us([lambda a=a: selective_scan(**a) for a in fp16])
        if selective_scan_fn is not None:
            theirs = [mamba_ssm_args(a) for a in sets]
            calls = [lambda a=a: selective_scan_fn(**a) for a in theirs]
            try:
                row["mamba_ssm_us"], row["mamba_ssm_timing"] = graph_us(calls), "graph"
            except Exception as err:   # noqa: BLE001 (record why, then time it eagerly)
                torch.cuda.synchronize()
                row["mamba_ssm_us"], row["mamba_ssm_timing"] = event_us(calls), f"events ({type(err).__name__})"
            # the same function: quamba's fp16 scan against mamba-ssm's output
            ours, _ = selective_scan(**fp16[0])
            ref, _ = selective_scan_fn(**theirs[0])
            row["fp16_rel_l2_diff"] = ((ours.float() - ref.transpose(1, 2).float()).norm()
                                        / ref.float().norm()).item()
            row["int8_over_mamba_ssm"] = row["quamba_int8_us"] / row["mamba_ssm_us"]
        updates = batch * seqlen * dim * 16
        row["quamba_int8_state_updates_per_s"] = updates / (row["quamba_int8_us"] * 1e-6)
        rows.append(row)
        print(json.dumps(row), flush=True)

json.dump({"environment": B.environment(), "command": "python benchmarks/scan_vs_mamba_ssm.py --shapes "
           + args.shapes, "rows": rows}, open(args.json, "w"), indent=1)
