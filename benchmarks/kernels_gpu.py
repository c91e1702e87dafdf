"""Time the Triton kernels on mamba-2.8b shapes against measured ceilings.

    PYTHONPATH=src python benchmarks/kernels_gpu.py --json docs/kernels_h100.json

GPU times come from CUDA-graph replays timed by ``triton.testing.do_bench``
(median), the launches cycling over input sets that together are 3x the L2
(see ``timed``); "eager" is the wall-clock per call of plain Python calls.
Ceilings measured in the same run: a device-to-device copy (bytes read +
written), torch._int_mm and fp16 torch.mm at 8192^3 on random data (eager
do_bench, L2 flushed). For every kernel the fewest bytes it must move (each
input read once, each output written once) over its GPU time gives GB/s;
matmuls also report TOPS.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import sys
import time

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

from quamba.kernels.triton import (causal_conv1d_int8, int8_linear, rmsnorm_quant, selective_scan,
                                   selective_scan_int8)

lin_mod = importlib.import_module("quamba.kernels.triton.int8_linear")
scan_mod = importlib.import_module("quamba.kernels.triton.selective_scan")
had_mod = importlib.import_module("quamba.kernels.triton.hadamard_quant")

D_MODEL, D_INNER, D_STATE, DT_RANK = 2560, 5120, 16, 160
LINEARS = {  # name: (N, K, has_bias)
    "in_proj": (2 * D_INNER, D_MODEL, False),
    "x_proj": (DT_RANK + 2 * D_STATE, D_INNER, False),
    "dt_proj": (D_INNER, DT_RANK, True),
    "out_proj": (D_MODEL, D_INNER, False),
}
MS = [1, 8, 64, 2048]
DEV = torch.device("cuda")
L2_BYTES = 50 * 2**20   # replaced by the device's value in main()
RESULTS: list[dict] = []


def bench(fn) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def timed(make_call, set_bytes: int) -> tuple[float, float]:
    """(GPU ms per launch, eager wall ms per call) for the launch make_call() returns.

    GPU time: a CUDA graph of many launches replayed under do_bench, divided by
    the launch count; the launches cycle over enough independent input sets
    (each from its own make_call()) that together they are 3x the L2, so every
    launch reads its operands from HBM. This removes the host's launch cost,
    which on this machine is larger than most decode kernels (see eager).
    Eager: wall-clock per call of back-to-back eager calls, i.e. what a Python
    decode loop without graphs would see (max of host and device time)."""
    n = max(1, min(128, -(-3 * L2_BYTES // max(set_bytes, 1))))
    calls = [make_call() for _ in range(n)]
    for c in calls:                      # compile, autotune, allocate the split-K counters
        c()
    torch.cuda.synchronize()
    reps = max(1, -(-32 // n))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for c in calls:
            c()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            for c in calls:
                c()
    gpu_ms = do_bench(g.replay, warmup=10, rep=100, return_mode="median") / (reps * n)
    del g
    count = max(64, n)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(count):
        calls[i % n]()
    torch.cuda.synchronize()
    eager_ms = (time.perf_counter() - t0) * 1e3 / count
    return gpu_ms, eager_ms


def i8(*shape):
    return torch.randint(-127, 128, shape, dtype=torch.int8, device=DEV)


def s(v):
    return torch.tensor(v, device=DEV)


def record(kind, name, shape, ms, nbytes, ops=None, eager_ms=None, **extra):
    r = dict(kind=kind, name=name, shape=shape, ms=ms, eager_ms=eager_ms, gb_s=nbytes / ms / 1e6,
             bytes=nbytes)
    if ops is not None:
        r["tops"] = ops / ms / 1e9
    r.update(extra)
    RESULTS.append(r)
    return r


def ceilings():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device=DEV).random_(0, 255)
    b = torch.empty_like(a)
    copy_gbs = 2 * n / bench(lambda: b.copy_(a)) / 1e6
    del a, b
    m = 8192
    x, w = i8(m, m), i8(m, m)
    int8_tops = 2 * m ** 3 / bench(lambda: torch._int_mm(x, w.t())) / 1e9
    xh, wh = torch.randn(m, m, device=DEV, dtype=torch.float16), torch.randn(m, m, device=DEV, dtype=torch.float16)
    fp16_tflops = 2 * m ** 3 / bench(lambda: torch.mm(xh, wh.t())) / 1e9
    # Triton int8 GEMM on the same square problem: tensor-core efficiency check.
    xs, ws = s(0.01), torch.rand(m, device=DEV) * 1e-3
    tri_tops = 2 * m ** 3 / bench(lambda: int8_linear(x, w, xs, ws)) / 1e9
    return dict(copy_gb_s=copy_gbs, int8_mm_tops=int8_tops, fp16_mm_tflops=fp16_tflops,
                triton_int8_8192_tops=tri_tops)


def bench_linears():
    for name, (N, K, has_bias) in LINEARS.items():
        for M in MS:
            nbytes = N * K + M * K + 2 * M * N

            def tri():
                w_q, ws, x_q, xs = i8(N, K), torch.rand(N, device=DEV) * 1e-3, i8(M, K), s(0.01)
                bias = torch.randn(N, device=DEV, dtype=torch.float16) if has_bias else None
                return lambda: int8_linear(x_q, w_q, xs, ws, bias)

            def fp16():
                w = torch.randn(N, K, device=DEV, dtype=torch.float16)
                x = torch.randn(M, K, device=DEV, dtype=torch.float16)
                bias = torch.randn(N, device=DEV, dtype=torch.float16) if has_bias else None
                return lambda: F.linear(x, w, bias)

            def int_mm():
                w_q, x_q = i8(N, K), i8(M, K)
                return lambda: torch._int_mm(x_q, w_q.t())

            t, te = timed(tri, nbytes)
            t16, te16 = timed(fp16, 2 * nbytes)
            t_int = timed(int_mm, nbytes + 2 * M * N)[0] if M > 16 else None
            record("linear", name, dict(M=M, N=N, K=K), t, nbytes, 2 * M * N * K, eager_ms=te,
                   torch_fp16_ms=t16, torch_fp16_eager_ms=te16,
                   torch_fp16_gb_s=(2 * N * K + 2 * M * K + 2 * M * N) / t16 / 1e6,
                   torch_int_mm_ms=t_int, path="gemv" if M <= lin_mod.DECODE_MAX_M else "gemm")


def sweep_gemv():
    """The decode kernel's block shape and split-K at M = 1 (GPU time, graphs)."""
    out = []
    for name in ("in_proj", "out_proj"):
        N, K, _ = LINEARS[name]
        M = 1

        def make():
            w_q, ws, x_q, xs = i8(N, K), torch.rand(N, device=DEV) * 1e-3, i8(M, K), s(0.01)
            return lambda: int8_linear(x_q, w_q, xs, ws)

        for bn in (32, 64, 128):
            for bk in (256,):
                for pps in (1, 2, 4):
                    lin_mod._GEMV_OVERRIDE = dict(BLOCK_N=bn, BLOCK_K=bk, PROGRAMS_PER_SM=pps)
                    cfg = lin_mod._gemv_config(M, N, K, DEV)
                    t, _ = timed(make, N * K)
                    out.append(dict(name=name, M=M, BLOCK_N=bn, BLOCK_K=bk, programs_per_sm=pps,
                                    split_k=cfg["SPLIT_K"], ms=t, gb_s=(N * K + M * K + 2 * M * N) / t / 1e6))
    lin_mod._GEMV_OVERRIDE = None
    return out


def bench_conv():
    for b, L in ((1, 1), (8, 1), (64, 1), (1, 2048)):
        nbytes = 2 * b * L * D_INNER + 2 * b * D_INNER * 3 + D_INNER * 8

        def make():
            w_q, ws = i8(D_INNER, 4), torch.rand(D_INNER, device=DEV) * 1e-2
            bias = torch.randn(D_INNER, device=DEV)
            x_q = i8(b, L, 2 * D_INNER)[..., :D_INNER]    # the strided slice of in_proj's output
            st, xs, os_ = i8(b, D_INNER, 3), s(0.05), s(0.02)
            return lambda: causal_conv1d_int8(x_q, xs, w_q, ws, bias, st, os_)

        t, te = timed(make, nbytes + b * L * D_INNER)
        record("conv", "causal_conv1d_int8", dict(b=b, L=L, d=D_INNER), t, nbytes, eager_ms=te)


def bench_scan():
    us, dts, bs, cs, zs = s(.02), s(.01), s(.03), s(.03), s(.04)
    for b, L in ((1, 1), (8, 1), (64, 1), (1, 2048), (4, 2048)):
        nbytes = 3 * b * L * D_INNER + 2 * b * L * D_STATE + 2 * b * L * D_INNER + 8 * b * D_INNER * D_STATE

        def make():
            A = -torch.exp(torch.rand(D_INNER, D_STATE, device=DEV))
            D, dtb = torch.randn(D_INNER, device=DEV), torch.randn(D_INNER, device=DEV) - 4
            xz = i8(b, L, 2 * D_INNER)
            u, z, dt = xz[..., :D_INNER], xz[..., D_INNER:], i8(b, L, D_INNER)
            xdbl = i8(b, L, DT_RANK + 2 * D_STATE)
            B, C = xdbl[..., DT_RANK:DT_RANK + D_STATE], xdbl[..., DT_RANK + D_STATE:]
            h0 = torch.randn(b, D_INNER, D_STATE, device=DEV)
            return lambda: selective_scan_int8(u, us, dt, dts, A, B, bs, C, cs, D, z, zs, dtb, h0)

        # The default (the chunked kernel for L > 1), then the serial kernel's block/chunk
        # variants (these knobs only reach the serial kernel; benchmarks/scan_sweep.py
        # sweeps the chunked one).
        variants = [(None, 8, None)] + ([(None, 8, "serial"), (16, 4, "serial"), (16, 16, "serial"),
                                         (32, 8, "serial")] if L > 1 else [])
        for bd, chunk, impl in variants:
            scan_mod._BLOCK_D_OVERRIDE, scan_mod._CHUNK = bd, chunk
            if impl is not None:
                scan_mod._PREFILL_IMPL = impl
            t, te = timed(make, nbytes)
            record("scan", "selective_scan_int8", dict(b=b, L=L, d=D_INNER, n=D_STATE), t, nbytes,
                   eager_ms=te, block_d=bd or "auto", chunk=chunk if L > 1 else 1,
                   kernel=impl or "default", default=bd is None and impl is None, us_per_step=t * 1e3 / L)
            scan_mod._PREFILL_IMPL = "chunked"
        scan_mod._BLOCK_D_OVERRIDE, scan_mod._CHUNK = None, 8
        nbytes16 = 2 * (4 * b * L * D_INNER + 2 * b * L * D_STATE) + 8 * b * D_INNER * D_STATE

        def make16():
            A = -torch.exp(torch.rand(D_INNER, D_STATE, device=DEV))
            D, dtb = torch.randn(D_INNER, device=DEV), torch.randn(D_INNER, device=DEV) - 4
            u16, z16, dt16 = (torch.randn(b, L, D_INNER, device=DEV, dtype=torch.float16) for _ in range(3))
            B16, C16 = (torch.randn(b, L, D_STATE, device=DEV, dtype=torch.float16) for _ in range(2))
            h0 = torch.randn(b, D_INNER, D_STATE, device=DEV)
            return lambda: selective_scan(u16, dt16, A, B16, C16, D, z16, dtb, True, h0)

        t, te = timed(make16, nbytes16)
        record("scan", "selective_scan_fp16", dict(b=b, L=L, d=D_INNER, n=D_STATE), t, nbytes16,
               eager_ms=te, us_per_step=t * 1e3 / L)


def bench_hadamard():
    n = D_INNER
    m, p, A = had_mod._factor(n, DEV)
    sc = s(0.05)
    for M in (1, 64, 2048, 8192):
        for mix in (0, 1, 2):
            def make():
                y = torch.randn(M, n, device=DEV, dtype=torch.float16)
                out = torch.empty(M, n, dtype=torch.int8, device=DEV)
                return lambda: had_mod._launch(y, sc, m, p, A, out, mix)

            t, te = timed(make, 3 * M * n)
            record("hadamard", "hadamard_quant", dict(M=M, n=n), t, 3 * M * n, eager_ms=te,
                   mix=["rank1-loop", "dot-ieee", "dot-tf32x3"][mix], default=mix == had_mod._DEFAULT_MIX)

        def dense():
            y = torch.randn(M, n, device=DEV, dtype=torch.float16)
            R16 = torch.randn(n, n, device=DEV, dtype=torch.float16)
            return lambda: y @ R16

        t, te = timed(dense, 4 * M * n + 2 * n * n)
        record("hadamard", "dense fp16 y@R (torch, no quant)", dict(M=M, n=n), t, 4 * M * n + 2 * n * n,
               eager_ms=te)


def bench_rmsnorm():
    sc = s(0.05)
    for M in (1, 64, 2048, 8192):
        nbytes = M * D_MODEL * (2 + 4 + 4 + 1) + 2 * D_MODEL

        def make():
            h = torch.randn(M, D_MODEL, device=DEV, dtype=torch.float16)
            r = torch.randn(M, D_MODEL, device=DEV)
            w = torch.rand(D_MODEL, device=DEV, dtype=torch.float16)
            return lambda: rmsnorm_quant(h, r, w, 1e-5, sc)

        t, te = timed(make, nbytes)
        record("rmsnorm", "rmsnorm_quant", dict(M=M, d=D_MODEL), t, nbytes, eager_ms=te)


def inspect_compiled():
    """Which matrix instructions the compiled int8 kernels use (PTX / SASS)."""
    info = []
    for label, fn in (("gemm", lin_mod._int8_gemm_kernel), ("gemv", lin_mod._int8_gemv_kernel)):
        for cache in fn.device_caches.values():
            for key, k in list(cache[0].items()):
                try:
                    ptx = k.asm["ptx"]
                    try:
                        sass = k.asm["sass"]
                    except Exception as exc:  # nvdisasm missing
                        sass = f"<no sass: {exc}>"
                    meta = k.metadata
                    info.append(dict(
                        kernel=label, num_warps=meta.num_warps, num_stages=meta.num_stages,
                        shared=getattr(meta, "shared", None), n_regs=getattr(k, "n_regs", None),
                        n_spills=getattr(k, "n_spills", None),
                        ptx_wgmma=ptx.count("wgmma.mma_async"), ptx_mma_sync=ptx.count("mma.sync"),
                        wgmma_shapes=sorted({ln.split()[0] for ln in ptx.splitlines() if "wgmma.mma_async" in ln}),
                        sass_igmma=sass.count("IGMMA"), sass_imma=sass.count("IMMA"),
                    ))
                except Exception as exc:
                    info.append(dict(kernel=label, error=repr(exc)))
    return info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-sweep", action="store_true")
    args = ap.parse_args()
    global L2_BYTES
    props = torch.cuda.get_device_properties(DEV)
    L2_BYTES = props.L2_cache_size
    env = dict(device=props.name, sms=props.multi_processor_count, torch=torch.__version__,
               l2_bytes=props.L2_cache_size, triton=triton.__version__, cuda=torch.version.cuda, python=platform.python_version(),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               command=" ".join(sys.argv))
    print(env, flush=True)
    ceil = ceilings()
    print("ceilings", ceil, flush=True)
    sweep, best_gemv, compiled = [], {}, []

    def dump():
        doc = dict(env=env, ceilings=ceil, results=RESULTS, gemv_sweep=sweep,
                   gemv_best=list(best_gemv.values()), compiled=compiled,
                   gemm_autotune={str(k): str(v) for k, v in lin_mod._int8_gemm_tuned.cache.items()})
        if args.json:   # written after every step, so a run cut short still leaves its numbers
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=1, default=str)

    for step in (bench_linears, bench_conv, bench_scan, bench_hadamard, bench_rmsnorm):
        step()
        print("done", step.__name__, flush=True)
        dump()
    compiled.extend(inspect_compiled())
    if not args.no_sweep:
        sweep.extend(sweep_gemv())
    for r in sweep:
        k = (r["name"], r["M"])
        if k not in best_gemv or r["ms"] < best_gemv[k]["ms"]:
            best_gemv[k] = r
    dump()

    bw, tops = ceil["copy_gb_s"], ceil["int8_mm_tops"]
    print(f"\n{'kernel':<28}{'shape':<36}{'gpu ms':>9}{'eager':>8}{'GB/s':>7}{'%bw':>6}{'TOPS':>7}{'%i8':>6}  extra")
    for r in RESULTS:
        shape = ",".join(f"{k}={v}" for k, v in r["shape"].items())
        extra = ""
        if r["kind"] == "linear":
            extra = f"fp16 {r['torch_fp16_ms']:.4f}ms ({r['torch_fp16_gb_s']:.0f} GB/s)"
            if r["torch_int_mm_ms"]:
                extra += f" _int_mm {r['torch_int_mm_ms']:.4f}ms"
        elif "mix" in r:
            extra = r["mix"] + (" *" if r["default"] else "")
        elif "block_d" in r:
            extra = (f"block_d={r['block_d']} chunk={r['chunk']} {r['us_per_step']:.3f}us/step"
                     + (" *" if r["default"] else ""))
        t = f"{r['tops']:7.1f}{100 * r['tops'] / tops:6.1f}" if "tops" in r else " " * 13
        print(f"{r['kind'] + ':' + r['name']:<28.28}{shape:<36}{r['ms']:9.4f}{r['eager_ms']:8.3f}{r['gb_s']:7.0f}"
              f"{100 * r['gb_s'] / bw:6.1f}{t}  {extra}")
    for r in best_gemv.values():
        print("best gemv", r)
    seen = set()
    for c in compiled:   # one line per distinct instruction mix
        key = (c.get("kernel"), tuple(c.get("wgmma_shapes", ())), c.get("sass_imma"), c.get("n_spills"))
        if key not in seen:
            seen.add(key)
            print("compiled", c)


if __name__ == "__main__":
    main()
