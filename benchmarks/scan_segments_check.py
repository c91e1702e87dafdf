"""Is the prefill scan bound by the sequential chain along time? The same number of tokens
(2048 by default, mamba-2.8b's dim 5120) scanned as 1 x 2048, 2 x 1024, ... 16 x 128
sequences: if splitting the sequence across more programs makes the kernel much faster, a
segment-parallel scan (states of segments combined afterwards) pays. Graph-timed on
distinct inputs. Writes JSON.

    python benchmarks/scan_segments_check.py --json OUT
"""

import argparse
import json


from _scan_inputs import int8_scan_inputs
from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import selective_scan_int8

parser = argparse.ArgumentParser()
parser.add_argument("--tokens", type=int, default=2048)
parser.add_argument("--dim", type=int, default=5120)
parser.add_argument("--json", required=True)
args = parser.parse_args()
d, n = args.dim, 16


rows = []
for batch in (1, 2, 4, 8, 16, 32):
    seqlen = args.tokens // batch
    sets = [int8_scan_inputs(batch, seqlen, d, n) for _ in range(4)]
    us = graph_us([lambda a=a: selective_scan_int8(**a) for a in sets])
    rows.append({"batch": batch, "seqlen": seqlen, "us": us})
    print(rows[-1], flush=True)
json.dump({"environment": B.environment(), "dim": d, "tokens": args.tokens, "rows": rows}, open(args.json, "w"), indent=1)
