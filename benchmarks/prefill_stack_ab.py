"""A/B of the prefill's CUDA graphs: one graph of the whole layer stack (``QUAMBA_PREFILL_GRAPHS=1``,
the default) against one graph a block (``=block``), alternated in one process on the same model.

For each shape, method and prompt length, and each mode in turn (block, stack, block, stack):

- ``ms``: a batch-1 prefill (logits of the last position), CUDA events, median;
- ``queued_ms``: the same enqueued behind a GPU sleep, so the host is far ahead (the GPU's own time);
- ``host_ms``: the host's time to enqueue one prefill (what the GPU waits for when it is idle:
  for the stack, the key check before its one replay);
- ``capture_peak_mib``: peak allocated above the model during the capturing call (first round
  only: later rounds find their graphs captured, and that call replays);
- ``cached_ms``: a prefill into a cache that is reused between calls (as ``generate`` allocates
  one of the same size each time), and ``churn_peak_mib`` / ``churn_reserved_mib``: six caches
  allocated one after another, each prefilled twice, peak allocated and reserved above the model;
- ``same_bits``: the logits equal those of the first mode's run.

    python benchmarks/prefill_stack_ab.py --json docs/sweeps/prefill_stack_ab_h100.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from quamba.eval import bench as B

parser = argparse.ArgumentParser()
parser.add_argument("--shapes", default="130m,1.4b,2.8b")
parser.add_argument("--methods", default="w8a8,fp16")
parser.add_argument("--prompt-len", default="1024,2048,4096")
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--reps", type=int, default=10)
parser.add_argument("--json", required=True)
args = parser.parse_args()
QUEUE_SLEEP = 200_000_000   # ~0.1 s on the GPU: longer than the host takes to enqueue a prefill


def mib(n: int) -> float:
    return round(n / 2**20, 1)


def host_ms(run) -> float:
    times = []
    for _ in range(5):
        torch.cuda.synchronize()
        torch.cuda._sleep(QUEUE_SLEEP)     # the host never waits on the GPU while it enqueues
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    return statistics.median(times)


def measure(model, prompt, first_round: bool) -> dict:
    run = lambda: model(prompt, num_last_tokens=1)   # noqa: E731
    row = {}
    run()                                            # a new key: eager (compile, autotune)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()                                            # capture
    torch.cuda.synchronize()
    row["capture_peak_mib"] = mib(torch.cuda.max_memory_allocated() - base) if first_round else None
    row["ms"] = B.median_ms(run, warmup=3, reps=args.reps)
    row["queued_ms"] = B.queued_ms(run, args.reps, QUEUE_SLEEP)
    row["host_ms"] = host_ms(run)
    logits = run().clone()
    cache = model.allocate_cache(1)

    def cached():
        cache.seqlen_offset = 0
        model(prompt, cache, num_last_tokens=1)
    cached()
    cached()
    row["cached_ms"] = B.median_ms(cached, warmup=2, reps=args.reps)
    del cache
    torch.cuda.synchronize()
    base, base_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(6):
        churn = model.allocate_cache(1)
        for _ in range(2):
            churn.seqlen_offset = 0
            model(prompt, churn, num_last_tokens=1)
        del churn
    torch.cuda.synchronize()
    row["churn_peak_mib"] = mib(torch.cuda.max_memory_allocated() - base)
    row["churn_reserved_mib"] = mib(torch.cuda.memory_reserved() - base_reserved)
    return row, logits


rows = []
with torch.inference_mode():
    for shape in args.shapes.split(","):
        config = B.shape_config(shape)
        for method in args.methods.split(","):
            model = B.random_w8a8_model(config) if method == "w8a8" else B.random_fp_model(config)
            for length in (int(v) for v in args.prompt_len.split(",")):
                prompt = torch.randint(0, config.vocab_size, (1, length), device="cuda")
                first = None
                for rnd in range(args.rounds):
                    for mode in ("block", "1"):
                        os.environ["QUAMBA_PREFILL_GRAPHS"] = mode
                        row, logits = measure(model, prompt, rnd == 0)
                        first = logits if first is None else first
                        row.update(shape=shape, method=method, prompt_len=length, round=rnd,
                                   mode="stack" if mode == "1" else "block",
                                   same_bits=bool(torch.equal(logits, first)))
                        print(json.dumps(row), flush=True)
                        rows.append(row)
            del model
            torch.cuda.empty_cache()
os.environ.pop("QUAMBA_PREFILL_GRAPHS")

summary = []
for key in sorted({(r["shape"], r["method"], r["prompt_len"]) for r in rows}):
    def med(mode, field):
        return statistics.median(r[field] for r in rows if (r["shape"], r["method"], r["prompt_len"]) == key
                                 and r["mode"] == mode and r[field] is not None)
    line = {"shape": key[0], "method": key[1], "prompt_len": key[2]}
    for field in ("ms", "queued_ms", "host_ms", "cached_ms", "capture_peak_mib", "churn_peak_mib",
                  "churn_reserved_mib"):
        line[field] = {"block": med("block", field), "stack": med("stack", field)}
    summary.append(line)
    print(json.dumps(line), flush=True)
with open(args.json, "w") as f:
    json.dump({"environment": B.environment(), "command": "python benchmarks/prefill_stack_ab.py " +
               " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
               "rows": rows, "summary": summary}, f, indent=1)
