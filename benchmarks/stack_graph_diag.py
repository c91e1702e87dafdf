"""Diagnose the dropped StackGraphs prefill default: whether its key stays stable from call to
call, what each call captures and allocates, and the host cost of its checks. It runs against
that code only, which was reverted:

    git checkout b906885 -- src/quamba/models/prefill_graphs.py src/quamba/models/mamba.py src/quamba/quantization/fused_block.py
    OUT=docs/sweeps python benchmarks/stack_graph_diag.py      # then git checkout HEAD -- those files

Writes $OUT/stack_diag_h100.json (one row a call: host wall time with a sync, allocated and peak
MiB above the model, the stack graphs held, the per-block shapes seen; then the host ms of
stack_graphable and of the weights key for each prompt length).
"""

import json
import os
import statistics
import time

import torch

from quamba.eval import bench as B
from quamba.models import prefill_graphs as PG

out = []
with torch.inference_mode():
    config = B.shape_config("2.8b")
    model = B.random_w8a8_model(config)
    torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    for L in (1024, 2048, 4096):
        prompt = torch.randint(0, config.vocab_size, (1, L), device="cuda")
        for call in range(4):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(prompt, num_last_tokens=1)
            torch.cuda.synchronize()
            st = PG.StackGraphs._models.get(model)
            entries = [] if st is None else [(k[1], v is not None) for k, v in st.entries.items()]
            row = dict(L=L, call=call, ms=(time.perf_counter() - t0) * 1e3,
                       alloc_mib=(torch.cuda.memory_allocated() - base) / 2**20,
                       peak_mib=(torch.cuda.max_memory_allocated() - base) / 2**20,
                       reserved_mib=torch.cuda.memory_reserved() / 2**20,
                       stack_entries=entries, per_block_shapes=len(PG.PrefillGraphs._shapes))
            out.append(row); print(json.dumps(row), flush=True)
        hidden = model.backbone.embedding(prompt)
        ts = []
        for _ in range(5):
            t0 = time.perf_counter(); PG.stack_graphable(model, hidden, None); t1 = time.perf_counter()
            st.weights_key(model); t2 = time.perf_counter()
            ts.append(((t1 - t0) * 1e3, (t2 - t1) * 1e3))
        row = dict(L=L, graphable_ms=statistics.median(a for a, _ in ts), weights_key_ms=statistics.median(b for _, b in ts))
        out.append(row); print(json.dumps(row), flush=True)
json.dump(out, open(os.environ["OUT"] + "/stack_diag_h100.json", "w"), indent=1)
