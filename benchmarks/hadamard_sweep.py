"""Prefill sweep of hadamard_quant: the decode kernel (FWHT butterfly) against the
tensor-core kernel over a grid of its configs, timed as prefill runs it.

    PYTHONPATH=src python benchmarks/hadamard_sweep.py --json docs/sweeps/hadamard_sweep_h100.json
    PYTHONPATH=src python benchmarks/hadamard_sweep.py --quick --json /tmp/h.json   # a few configs
    PYTHONPATH=src python benchmarks/hadamard_sweep.py --decode --M 1 8 64 --json OUT   # decode rows
    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/hadamard_sweep.py --device cpu --quick \
        --n 384 --M 70 --json /tmp/h.json      # checks the script on a CPU; times meaningless

Timing: a CUDA graph of 16 back-to-back launches, each on a distinct fp16 input (M, n) and
output, median GPU µs per launch over several replays. The inputs of one graph add up to
16 × M × n × 2 bytes (336 MB at n = 5120, M = 2048), so a launch finds little of its
input in the 50 MB L2, as in a model where the scan writes y just before.

Check: every config's output (on one input) against the old kernel's: equal, or off by
one on at most 0.1% of the elements (fp32 summation orders differ). A config that
fails the check is kept in the JSON with ok = false and never chosen as best.

Config keys are those of ``_MMA_CONFIG`` in quamba/kernels/triton/hadamard_quant.py:
TILE_ROWS (GEMM tile rows = ROWS × M_PAD; ROWS, the rows a tile, is recorded too),
COLS (output columns a program, of the 2^k axis), ROW_BLOCKS (row tiles a program),
MIX (0 ieee / 1 tf32x3 / 2 bf16x3), MIX_2D (m-mix as a transposed 2-D dot or a batched
3-D one), MAX_K, num_warps, num_stages. The compiled kernel's registers, spills and
shared memory are recorded per config.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import platform

import torch
import triton
from _timing import graph_us

hq = importlib.import_module("quamba.kernels.triton.hadamard_quant")

CALLS = 16           # launches a graph, each on its own input and output
REPS = 9             # graph replays; the median is reported


def grid_configs(quick: bool, decode: bool = False) -> list[dict]:
    """Overrides of _MMA_CONFIG; {} is the module's defaults. decode: narrow column
    blocks and one row tile a program, so that a few rows still make several programs."""
    if decode:
        return [dict(TILE_ROWS=t, COLS=c, ROW_BLOCKS=1, num_warps=w, MAX_K=k)
                for t, c, w, k in itertools.product((32, 64), (16, 32, 64), (1, 2, 4), (128, 256))]
    if quick:
        return [{}, {"COLS": 128}, {"TILE_ROWS": 128, "num_warps": 8}, {"MIX_2D": False}]
    base = [dict(TILE_ROWS=t, COLS=c, num_warps=w)
            for t, c, w in itertools.product((32, 64, 128), (32, 64, 128), (4, 8))]
    extra = [
        {"COLS": 256, "num_warps": 8},                   # y read once, but a 64 x 256 fp32 F tile
        {"ROW_BLOCKS": 1}, {"ROW_BLOCKS": 2}, {"ROW_BLOCKS": 8}, {"ROW_BLOCKS": 16},
        {"num_stages": 2},                               # double-buffered y tile (120 KB shared)
        {"TILE_ROWS": 32, "num_stages": 3},
        {"MIX": 1},                                      # tf32x3 mix instead of bf16x3
        {"MIX_2D": False},                               # batched 3-D mix (repeats work when ROWS < warps)
        {"MAX_K": 256},                                  # n = 5120 as 20 x 256 (M_PAD 32)
        # With MAX_K 128 (n = 5120 as 40 x 128, M_PAD 64: one y row a 64-row tile).
        {"COLS": 128, "ROW_BLOCKS": 2}, {"COLS": 128, "ROW_BLOCKS": 8}, {"COLS": 128, "num_warps": 8},
        {"COLS": 128, "num_warps": 8, "ROW_BLOCKS": 8}, {"TILE_ROWS": 128, "COLS": 128, "num_warps": 8},
        {"num_stages": 2, "ROW_BLOCKS": 8}, {"COLS": 32, "ROW_BLOCKS": 8},
    ]
    seen, out = set(), [{}]
    for cfg in base + extra:
        key = tuple(sorted({**hq._MMA_CONFIG, **cfg}.items()))
        if key not in seen and key != tuple(sorted(hq._MMA_CONFIG.items())):
            seen.add(key)
            out.append(cfg)
    return out


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = (out.int() - ref.int()).abs()
    n_off = int((diff > 0).sum())
    max_diff = int(diff.max())
    return dict(max_diff=max_diff, n_off=n_off, frac_off=n_off / diff.numel(),
                ok=max_diff <= 1 and n_off <= max(2, int(1e-3 * diff.numel())))


def kernel_stats(fn, seen: set) -> list[dict]:
    """Registers, spills and shared memory of the kernels compiled since the last call."""
    out = []
    for cache in getattr(fn, "device_caches", {}).values():
        for key, k in list(cache[0].items()):
            if id(k) in seen:
                continue
            seen.add(id(k))
            try:
                out.append(dict(n_regs=getattr(k, "n_regs", None), n_spills=getattr(k, "n_spills", None),
                                shared=getattr(k.metadata, "shared", None), num_warps=k.metadata.num_warps,
                                num_stages=k.metadata.num_stages))
            except Exception as exc:  # noqa: BLE001 - the cache layout differs between Triton versions
                out.append(dict(error=repr(exc)))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", required=True)
    parser.add_argument("--n", type=int, nargs="+", default=[5120, 2560, 4096])
    parser.add_argument("--M", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--quick", action="store_true", help="four configs only")
    parser.add_argument("--decode", action="store_true", help="configs for a few rows (decode steps)")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test under TRITON_INTERPRET=1")
    args = parser.parse_args()

    dev = torch.device(args.device)
    configs = grid_configs(args.quick, args.decode)
    result = dict(device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                  torch=torch.__version__, triton=triton.__version__,
                  python=platform.python_version(), calls_per_graph=CALLS, reps=REPS,
                  defaults=dict(hq._MMA_CONFIG), min_rows=hq._MMA_MIN_ROWS, configs=configs,
                  rows=[], best={})
    seen_kernels: set = set()
    s = torch.tensor(0.02, device=dev)          # N(0, 1) rows: |y R| ~ 1, a few clip at ±127·0.02
    for n in args.n:
        m, p, A = hq._factor(n, dev)
        for M in args.M:
            ys = [torch.randn(M, n, dtype=torch.float16, device=dev) for _ in range(CALLS)]
            outs = [torch.empty(M, n, dtype=torch.int8, device=dev) for _ in range(CALLS)]
            bytes_moved = M * n * 3                 # fp16 in, int8 out
            ref = torch.empty(M, n, dtype=torch.int8, device=dev)
            hq._launch(ys[0], s, m, p, A, ref, hq._DEFAULT_MIX)
            us = graph_us(reps=REPS, calls=[lambda y=y, o=o: hq._launch(y, s, m, p, A, o, hq._DEFAULT_MIX)
                           for y, o in zip(ys, outs)])
            base = dict(n=n, M=M, kernel="fwht", us=us, GBps=bytes_moved / us / 1e3)
            result["rows"].append(base)
            print(base, flush=True)
            best = None
            for cfg in configs:
                full = {**hq._MMA_CONFIG, **cfg}
                plan = hq._mma_plan(n, dev, full)
                row = dict(n=n, M=M, kernel="mma", cfg=cfg or "default")
                if plan is not None:
                    row.update(ROWS=max(1, full["TILE_ROWS"] // plan[1]), M_PAD=plan[1], K=plan[2])
                try:
                    out = torch.empty_like(ref)
                    hq._launch_mma(ys[0], s, out, **cfg)
                    row.update(compare(out, ref))
                    row["compiled"] = kernel_stats(hq._hadamard_quant_mma_kernel, seen_kernels)
                    row["us"] = graph_us(reps=REPS, calls=[lambda y=y, o=o: hq._launch_mma(y, s, o, **cfg)
                                          for y, o in zip(ys, outs)])
                    row["GBps"] = bytes_moved / row["us"] / 1e3
                    row["speedup"] = us / row["us"]
                except Exception as exc:  # noqa: BLE001 - a sweep records failures and goes on
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                result["rows"].append(row)
                print(row, flush=True)
                if row.get("ok") and "us" in row and (best is None or row["us"] < best["us"]):
                    best = row
            if best is not None:
                result["best"][f"n={n},M={M}"] = dict(cfg=best["cfg"], us=best["us"], fwht_us=us,
                                                      speedup=best["speedup"])
                print("best", result["best"][f"n={n},M={M}"], flush=True)
            del ys, outs
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            with open(args.json, "w") as f:     # after every shape: a crash keeps what ran
                json.dump(result, f, indent=1)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
