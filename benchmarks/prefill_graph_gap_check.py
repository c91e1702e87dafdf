"""Where the GPU idles in a graphed prefill. The prefill profiles show ~40 µs of idle GPU before
every layer's first kernel (docs/profile_prefill2048_*: 2.4-2.6 ms of a 2.8b prefill), where one
per-block CUDA graph ends and the next begins; inside a graph the kernels follow each other within
about a microsecond. This times a batch-1 W8A8 prefill four ways:

- ``per_block``: as quamba runs it (one graph a block, replayed from Python), CUDA events around it;
- ``per_block_queued``: the same, enqueued behind a GPU sleep, so the host is far ahead and what
  is left is the GPU's own time;
- ``whole``: the whole forward captured as one graph (``QUAMBA_PREFILL_GRAPHS=0`` while capturing,
  so the blocks' kernels go straight into it), replayed;
- ``whole_queued``: that graph behind a GPU sleep.

plus the host's time to enqueue one per-block prefill, whether the logits are the same bits, the
memory each way's capture takes (peak allocated during the capturing call, and reserved after it,
both above what the model held before), and the host's time to walk the model's weights as the
per-block graphs' key does (``_weights_key``), which a whole-stack graph would have to check first.

    python benchmarks/prefill_graph_gap_check.py --json docs/sweeps/prefill_graph_gap_h100.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from quamba.eval import bench as B
from quamba.models.prefill_graphs import _weights_key

parser = argparse.ArgumentParser()
parser.add_argument("--shapes", default="130m,1.4b,2.8b")
parser.add_argument("--prompt-len", default="1024,2048")
parser.add_argument("--reps", type=int, default=10)
parser.add_argument("--json", required=True)
args = parser.parse_args()
# ~0.1 s at the H100's clock: longer than the host takes to enqueue a per-block prefill (5-9 ms)
QUEUE_SLEEP = 200_000_000


rows = []
with torch.inference_mode():
    for shape in args.shapes.split(","):
        config = B.shape_config(shape)
        model = B.random_w8a8_model(config)
        for length in (int(v) for v in args.prompt_len.split(",")):
            prompt = torch.randint(0, config.vocab_size, (1, length), device="cuda")
            run = lambda: model(prompt, num_last_tokens=1)   # noqa: E731
            row = {"shape": shape, "method": "w8a8", "batch": 1, "prompt_len": length, "layers": config.n_layer}
            run()                                    # eager: compile, autotune
            torch.cuda.synchronize()
            base, base_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
            torch.cuda.reset_peak_memory_stats()
            run()                                    # the per-block graphs' capture
            torch.cuda.synchronize()
            row["per_block_capture_peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            row["per_block_reserved_after_mib"] = (torch.cuda.memory_reserved() - base_reserved) / 2**20
            row["per_block_ms"] = B.median_ms(run, warmup=3, reps=args.reps)
            row["per_block_queued_ms"] = B.queued_ms(run, args.reps, QUEUE_SLEEP)
            hosts = []
            for _ in range(5):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                run()
                hosts.append((time.perf_counter() - t0) * 1e3)
            torch.cuda.synchronize()
            row["host_enqueue_ms"] = statistics.median(hosts)
            want = run().clone()
            previous = os.environ.get("QUAMBA_PREFILL_GRAPHS")
            os.environ["QUAMBA_PREFILL_GRAPHS"] = "0"
            try:
                run()
                torch.cuda.synchronize()
                base, base_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
                torch.cuda.reset_peak_memory_stats()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    got = run()
                graph.replay()
                torch.cuda.synchronize()
                row["whole_capture_peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
                row["whole_reserved_after_mib"] = (torch.cuda.memory_reserved() - base_reserved) / 2**20
                row["whole_same_logits"] = bool(torch.equal(got, want))
                row["whole_ms"] = B.median_ms(graph.replay, warmup=3, reps=args.reps)
                row["whole_queued_ms"] = B.queued_ms(graph.replay, args.reps, QUEUE_SLEEP)
                del graph, got
            finally:
                if previous is None:
                    os.environ.pop("QUAMBA_PREFILL_GRAPHS")
                else:
                    os.environ["QUAMBA_PREFILL_GRAPHS"] = previous
            # per-block minus one graph, both queued: the boundaries' idle time and whatever else
            # the per-block path adds (its pair copies, when any)
            walks = []
            for _ in range(5):
                t0 = time.perf_counter()
                _weights_key(model)
                walks.append((time.perf_counter() - t0) * 1e3)
            row["weights_key_host_ms"] = statistics.median(walks)
            row["idle_per_layer_us"] = (row["per_block_queued_ms"] - row["whole_queued_ms"]) * 1e3 / config.n_layer
            rows.append(row)
            print(json.dumps(row), flush=True)
        del model
        torch.cuda.empty_cache()

json.dump({"environment": B.environment(), "command": "python benchmarks/prefill_graph_gap_check.py --shapes "
           + args.shapes + " --prompt-len " + args.prompt_len, "rows": rows}, open(args.json, "w"), indent=1)
