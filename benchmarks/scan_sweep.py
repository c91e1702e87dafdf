"""Sweep of the prefill selective scan on the GPU: serial vs chunked kernels, tile configs,
dt_proj fused into the scan vs its own launch.

    PYTHONPATH=src python benchmarks/scan_sweep.py --json docs/sweeps/scan_sweep_h100.json

mamba-2.8b shapes (dim 5120, dstate 16, dt_rank 160), batch 1 by default, int8 inputs laid
out as FusedQBlock passes them (u and z strided halves of in_proj's output, dt_low, B and C
strided slices of x_proj's). Each point is the median of 20 calls timed with CUDA events,
after warm-up (compilation) calls. Every config's output is also checked against the serial
kernel (relative error) and the fused-dt output against the two-launch one (bit for bit), so
a miscompile shows here too. Compiled register and spill counts are recorded per kernel.

A decode step (seqlen 1) with dt_proj fused vs as its own launch is timed as a CUDA graph of
back-to-back calls (eager timing of a 3 µs kernel measures the host).

Config: (BLOCK_D, CHUNK, num_warps, STATE_ROWS) of ``_selective_scan_chunked_kernel``; the
thread layout wants BLOCK_D * (16 // STATE_ROWS) >= 32 * num_warps.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform

import torch
import triton

from _timing import graph_us

from quamba.eval.bench import median_ms
from quamba.kernels.triton import int8_linear_quant, selective_scan_int8

scan_mod = importlib.import_module("quamba.kernels.triton.selective_scan")

DIM, DSTATE, DT_RANK = 5120, 16, 160
# Candidates that compile for sm_90 without spills (checked offline with Triton 3.6's ptxas):
# 16 state entries a thread per step tile, except where noted.
CONFIGS = [
    (16, 8, 4, 2),    # the default
    (16, 16, 8, 1),
    (8, 16, 4, 1),
    (16, 8, 4, 1),
    (8, 8, 2, 2),
    (16, 16, 4, 2),   # 32 entries a thread
    (32, 16, 8, 2),   # 32 entries a thread
    (16, 4, 2, 4),
    (8, 4, 1, 4),
    (32, 8, 4, 4),    # 32 entries a thread
]


def i8(*shape):
    return torch.randint(-127, 128, shape, dtype=torch.int8, device="cuda")


def make_inputs(batch: int, seqlen: int) -> tuple[dict, dict]:
    s = lambda v: torch.tensor(v, device="cuda")
    xz = i8(batch, seqlen, 2 * DIM)
    xdbl = i8(batch, seqlen, DT_RANK + 2 * DSTATE)
    args = dict(
        u_q=xz[..., :DIM], u_scale=s(0.02), dt_q=i8(batch, seqlen, DIM), dt_scale=s(0.01),
        A=-torch.exp(torch.rand(DIM, DSTATE, device="cuda") * 2.5),
        B_q=xdbl[..., DT_RANK:DT_RANK + DSTATE], B_scale=s(0.03),
        C_q=xdbl[..., DT_RANK + DSTATE:], C_scale=s(0.03),
        D=torch.randn(DIM, device="cuda"), z_q=xz[..., DIM:], z_scale=s(0.04),
        dt_bias=torch.randn(DIM, device="cuda") - 4,
        initial_state=torch.randn(batch, DIM, DSTATE, device="cuda"),
    )
    proj = dict(dt_low_q=xdbl[..., :DT_RANK], dt_low_scale=s(0.05), dt_w_q=i8(DIM, DT_RANK),
                dt_w_scale=torch.rand(DIM, device="cuda") * 4e-4)
    return args, proj


def _event_ms(fn, reps: int) -> float:
    return median_ms(fn, 3, reps)   # eager: 3 warm-up calls, median of reps


def rel_err(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def compiled_stats() -> list[dict]:
    out = []
    kernels = (("chunked", scan_mod._selective_scan_chunked_kernel), ("serial", scan_mod._selective_scan_kernel))
    for label, fn in kernels:
        for cache in getattr(fn, "device_caches", {}).values():
            for k in list(cache[0].values()):
                try:
                    consts = {}
                    for key, val in getattr(getattr(k, "src", None), "constants", {}).items():
                        idx = key[0] if isinstance(key, tuple) else key
                        name = fn.arg_names[idx] if isinstance(idx, int) else str(key)
                        if name.isupper():
                            consts[name] = val
                    out.append(dict(kernel=label, num_warps=k.metadata.num_warps, n_regs=getattr(k, "n_regs", None),
                                    n_spills=getattr(k, "n_spills", None), constants=consts))
                except Exception as exc:  # the cache layout differs between Triton versions
                    out.append(dict(kernel=label, error=repr(exc)))
    return out


def set_mode(impl: str, config=None, dt_proj: str = "fused") -> None:
    """dt_proj "fused" computes dt inside the scan for every shape (decode batches included),
    "launch" runs it first; the library's own routing picks per shape (see selective_scan.py)."""
    scan_mod._PREFILL_IMPL = impl
    scan_mod._PREFILL_DT_PROJ = dt_proj
    scan_mod._FUSED_DT_MAX_DECODE_ROWS = 1 << 30 if dt_proj == "fused" else 0
    if config is not None:
        scan_mod._CHUNKED_CONFIG = tuple(config)
        scan_mod._CHUNKED_CONFIG_WIDE = scan_mod._CHUNKED_CONFIG_FEW = None   # the config as forced


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seqlen", type=int, nargs="*", default=[512, 2048, 4096])
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--configs", default=None,
                        help='"BLOCK_D,CHUNK,WARPS,ROWS;..." instead of the built-in list')
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--no-decode", action="store_true")
    parser.add_argument("--decode-batch", type=int, nargs="+", default=[1, 64],
                        help="batch sizes of the decode-step comparison (dt_proj fused vs its own launch)")
    parser.add_argument("--json", default=None)
    opts = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA device"
    configs = CONFIGS if opts.configs is None else [
        tuple(int(v) for v in c.split(",")) for c in opts.configs.split(";")]
    default = dict(impl=scan_mod._PREFILL_IMPL, config=scan_mod._CHUNKED_CONFIG, dt_proj=scan_mod._PREFILL_DT_PROJ)
    torch.manual_seed(0)
    rows = []

    def record(**row):
        rows.append(row)
        cfg = row.get("config")
        print(f"{row['what']:<26} b={row['batch']:<3} L={row['seqlen']:<5} "
              f"{'' if cfg is None else ','.join(map(str, cfg)):<12} {row['ms']:8.4f} ms"
              f"  {row.get('note', '')}", flush=True)

    for batch in opts.batch:
        for seqlen in opts.seqlen:
            args, proj = make_inputs(batch, seqlen)
            fused_args = {**args, "dt_q": None, **proj}
            set_mode("serial")
            y_ref, h_ref = selective_scan_int8(**args)
            ms = _event_ms(lambda: selective_scan_int8(**args), opts.reps)
            record(what="serial", batch=batch, seqlen=seqlen, config=None, ms=ms)
            ms = _event_ms(lambda: selective_scan_int8(**fused_args), opts.reps)
            record(what="serial+fused_dt", batch=batch, seqlen=seqlen, config=None, ms=ms)
            dtq = int8_linear_quant(proj["dt_low_q"], proj["dt_w_q"], proj["dt_low_scale"], proj["dt_w_scale"],
                                    None, args["dt_scale"])
            ms = _event_ms(lambda: int8_linear_quant(proj["dt_low_q"], proj["dt_w_q"], proj["dt_low_scale"],
                                                    proj["dt_w_scale"], None, args["dt_scale"]), opts.reps)
            record(what="dt_proj alone", batch=batch, seqlen=seqlen, config=None, ms=ms)
            for cfg in configs:
                bd, _, warps, rows_ = cfg
                note = "" if bd * (DSTATE // rows_) >= 32 * warps else "warps spill onto time"
                set_mode("chunked", cfg)
                try:
                    y, h = selective_scan_int8(**args)
                    err = dict(y_rel_err_vs_serial=rel_err(y, y_ref), h_rel_err_vs_serial=rel_err(h, h_ref))
                    ms = _event_ms(lambda: selective_scan_int8(**args), opts.reps)
                    record(what="chunked", batch=batch, seqlen=seqlen, config=cfg, ms=ms,
                           note=f"{note} y err {err['y_rel_err_vs_serial']:.1e} h err {err['h_rel_err_vs_serial']:.1e}",
                           **err)
                    yf, hf = selective_scan_int8(**fused_args)
                    yl, hl = selective_scan_int8(dt_q=dtq, **{k: v for k, v in args.items() if k != "dt_q"})
                    exact = bool(torch.equal(yf, yl) and torch.equal(hf, hl))
                    ms = _event_ms(lambda: selective_scan_int8(**fused_args), opts.reps)
                    record(what="chunked+fused_dt", batch=batch, seqlen=seqlen, config=cfg, ms=ms,
                           fused_equals_two_launches=exact, note="" if exact else "FUSED != TWO LAUNCHES")
                except Exception as exc:  # a config that does not compile is a result too
                    record(what="chunked", batch=batch, seqlen=seqlen, config=cfg, ms=float("nan"),
                           note=f"FAILED: {exc!r}"[:300])
            set_mode("chunked", default["config"], "launch")
            ms = _event_ms(lambda: selective_scan_int8(**fused_args), opts.reps)
            record(what="chunked+dt_proj launch", batch=batch, seqlen=seqlen, config=default["config"], ms=ms)
            del args, proj, fused_args

    if not opts.no_decode:
        for batch in opts.decode_batch:
            args, proj = make_inputs(batch, 1)
            args["initial_state"] = state = torch.randn(batch, DIM, DSTATE, device="cuda")
            fused_args = {**args, "dt_q": None, **proj, "state_out": state}
            set_mode(default["impl"], default["config"])
            us = graph_us([lambda: selective_scan_int8(**fused_args)] * 64)
            record(what="decode fused_dt", batch=batch, seqlen=1, config=None, ms=us / 1e3, note=f"{us:.2f} us")
            set_mode(default["impl"], default["config"], "launch")

            def two_launches():
                dtq = int8_linear_quant(proj["dt_low_q"], proj["dt_w_q"], proj["dt_low_scale"], proj["dt_w_scale"],
                                        None, args["dt_scale"])
                selective_scan_int8(**{**args, "dt_q": dtq}, state_out=state)
            us = graph_us([two_launches] * 64)
            record(what="decode dt_proj+scan", batch=batch, seqlen=1, config=None, ms=us / 1e3, note=f"{us:.2f} us")

    set_mode(default["impl"], default["config"], default["dt_proj"])
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                  python=platform.python_version(), dim=DIM, dstate=DSTATE, dt_rank=DT_RANK,
                  default=dict(default, config=list(default["config"])), rows=rows, compiled=compiled_stats())
    best = {}
    for r in rows:
        if r["what"] in ("chunked", "chunked+fused_dt") and r["ms"] == r["ms"]:
            key = (r["what"], r["batch"], r["seqlen"])
            if key not in best or r["ms"] < best[key]["ms"]:
                best[key] = r
    print("\nfastest per (kernel, batch, seqlen):")
    for (what, batch, seqlen), r in sorted(best.items()):
        print(f"  {what:<18} b={batch} L={seqlen}: {r['config']} {r['ms']:.4f} ms")
    spills = [c for c in result["compiled"] if c.get("n_spills")]
    print(f"compiled kernels: {len(result['compiled'])}, with spills: {spills if spills else 'none'}")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
        print("wrote", opts.json)


if __name__ == "__main__":
    main()
