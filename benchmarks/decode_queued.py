"""Per-token decode time of the W8A8 model two ways (GPU only): one replay of the CUDA-graphed
step timed alone (the host's launch gap included, how `run_bench.py` timed decode before
--gen) and 64 replays queued behind a GPU sleep (the host out of the way, what a loop that
does not sync each token gets).

    python benchmarks/decode_queued.py --shape 2.8b --json docs/sweeps/decode_queued_2.8b_h100.json
"""

import argparse
import json

import torch

from quamba.eval import bench as B
from quamba.models.cuda_graph import GraphedDecoder

parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="2.8b")
parser.add_argument("--batch", default="1,8,64")
parser.add_argument("--json", required=True)
args = parser.parse_args()

model = B.random_w8a8_model(B.shape_config(args.shape))
rows = []
for batch in (int(b) for b in args.batch.split(",")):
    decoder = GraphedDecoder(model, batch)
    ids = torch.randint(0, model.config.vocab_size, (batch,), device="cuda")
    alone = B.median_ms(lambda: decoder.step(ids), 20, 100)
    queued = B.queued_replay_ms(decoder)
    rows.append(dict(shape=args.shape, batch=batch, one_replay_ms=alone, queued_ms=queued))
    print(rows[-1], flush=True)
    del decoder
json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows},
          open(args.json, "w"), indent=1)
