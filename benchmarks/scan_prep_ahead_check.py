"""The chunked prefill scan with and without building the next chunk's maps ahead
(selective_scan's _PREP_AHEAD), over tile configurations (BLOCK_D, CHUNK, num_warps,
STATE_ROWS): graph-timed on distinct inputs laid out as the W8A8 block passes them, each
output compared bit for bit with the default configuration's. Writes JSON.

    python benchmarks/scan_prep_ahead_check.py --json docs/sweeps/scan_prep_ahead_h100.json
"""

import argparse
import importlib
import json
import sys
import time

import torch
from _scan_inputs import float_scan_inputs, int8_scan_inputs
from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import selective_scan, selective_scan_int8

scan_mod = importlib.import_module("quamba.kernels.triton.selective_scan")
CONFIGS = [(16, 8, 4, 2), (32, 8, 4, 2), (16, 16, 4, 2), (32, 16, 4, 2), (32, 8, 4, 4), (32, 16, 4, 4)]
SHAPES = [("int8", 1, 2048, 5120), ("int8", 1, 2048, 4096), ("int8", 1, 1024, 5120), ("int8", 2, 2048, 5120),
          ("int8", 8, 256, 5120), ("fp16", 1, 2048, 5120)]

parser = argparse.ArgumentParser()
parser.add_argument("--json", required=True)
parser.add_argument("--quick", action="store_true", help="the first shape and two configs (a logic check)")
args = parser.parse_args()
shapes, configs = (SHAPES[:1], CONFIGS[:2]) if args.quick else (SHAPES, CONFIGS)

rows = []
default_cfg, wide, ahead = scan_mod._CHUNKED_CONFIG, scan_mod._CHUNKED_CONFIG_WIDE, scan_mod._PREP_AHEAD
try:
    scan_mod._CHUNKED_CONFIG_WIDE = None          # each config is forced through _CHUNKED_CONFIG
    scan_mod._PREFILL_SEGMENTS = 1                # the whole sequence in one scan
    for dtype, batch, seqlen, dim in shapes:
        scan = selective_scan_int8 if dtype == "int8" else selective_scan
        sets = [int8_scan_inputs(batch, seqlen, dim) for _ in range(3)]
        if dtype != "int8":
            sets = [float_scan_inputs(a) for a in sets]
        scan_mod._CHUNKED_CONFIG, scan_mod._PREP_AHEAD = default_cfg, False
        ref = scan(**sets[0])[0]
        for cfg in configs:
            for prep_ahead in (False, True):
                scan_mod._CHUNKED_CONFIG, scan_mod._PREP_AHEAD = cfg, prep_ahead
                y = scan(**sets[0])[0]
                us = graph_us([lambda a=a: scan(**a) for a in sets])
                rows.append(dict(dtype=dtype, batch=batch, seqlen=seqlen, dim=dim, config=cfg, prep_ahead=prep_ahead,
                                 us=us, same_bits=bool(torch.equal(y, ref)),
                                 rel_err=((y.float() - ref.float()).norm() / ref.float().norm()).item()))
                print(rows[-1], flush=True)
finally:
    scan_mod._CHUNKED_CONFIG, scan_mod._CHUNKED_CONFIG_WIDE, scan_mod._PREP_AHEAD = default_cfg, wide, ahead
    scan_mod._PREFILL_SEGMENTS = None
json.dump({"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "environment": B.environment(), "rows": rows}, open(args.json, "w"), indent=1)
