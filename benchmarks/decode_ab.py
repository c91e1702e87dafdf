"""A/B of one CUDA-graphed decode step under environment switches (GPU only).

Each variant captures its own graph of the same random-weight model (switches are
read at capture time), times 200 replays one at a time (median; the host's launch gap
included) and 10 runs of 64 replays queued behind a GPU sleep (median per replay: the GPU's
step alone, the less noisy number), and keeps the logits: switches
that only change scheduling (QUAMBA_PDL) must give bit-identical logits.

    python benchmarks/decode_ab.py --shape 2.8b --batch 1 --variant QUAMBA_PDL=0 --variant QUAMBA_PDL=1 --json OUT
"""

import argparse
import datetime
import json
import os
import shlex
import sys

import torch
import triton

from quamba.eval import bench as B
from quamba.models.cuda_graph import GraphedDecoder

parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="2.8b")
parser.add_argument("--method", default="w8a8", choices=["w8a8", "fp16"])
parser.add_argument("--batch", type=int, default=1)
parser.add_argument("--variant", action="append", default=[], help="NAME=VALUE[,NAME=VALUE]")
parser.add_argument("--json", required=True)
args = parser.parse_args()

config = B.shape_config(args.shape)
model = (B.random_w8a8_model if args.method == "w8a8" else B.random_fp_model)(config)
ids = torch.randint(0, config.vocab_size, (args.batch,), device="cuda")
rows, first = [], None
for variant in args.variant or [""]:
    env = dict(kv.split("=", 1) for kv in variant.split(",") if kv)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    dec = GraphedDecoder(model, args.batch)
    logits = dec.step(ids).clone()
    one_replay = B.median_ms(lambda: dec.step(ids), 20, 200)
    queued = B.queued_replay_ms(dec)   # no host launch gap between the replays
    first = logits if first is None else first
    rows.append({"variant": variant, "ms_per_token": one_replay, "ms_per_token_queued": queued,
                 "logits_equal_first_variant": bool(torch.equal(first, logits))})
    print(rows[-1], flush=True)
    del dec
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "command": "python " + shlex.join(sys.argv), "shape": args.shape,
           "method": args.method, "batch": args.batch, "rows": rows}, open(args.json, "w"), indent=1)
