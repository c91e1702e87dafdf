"""The chunked prefill scan's tile configurations against the number of sequences: graph-timed
on distinct int8 inputs (laid out as the W8A8 block passes them), each output checked against
the default configuration's. Configs are (BLOCK_D, CHUNK, num_warps, STATE_ROWS), each forced (the
wide and small-tile rules off); without --configs the first two are selective_scan's _CHUNKED_CONFIG
and _CHUNKED_CONFIG_WIDE. The programs column counts sequences, not segments (a long sequence of a
narrow model may be cut into segments: more programs). Writes JSON.

    python benchmarks/scan_config_check.py --json docs/sweeps/scan_config_h100.json
"""

import argparse
import importlib
import json
import sys


from _scan_inputs import float_scan_inputs, int8_scan_inputs
from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import selective_scan, selective_scan_int8

scan_mod = importlib.import_module("quamba.kernels.triton.selective_scan")
CONFIGS = [(16, 8, 4, 2), (32, 8, 4, 4), (32, 16, 4, 4), (16, 4, 2, 4), (16, 8, 2, 2)]
SHAPES = [(1, 2048), (1, 4096), (2, 1024), (2, 2048), (3, 1024), (4, 512), (4, 2048), (8, 1024), (16, 512),
          (64, 128)]

parser = argparse.ArgumentParser()
parser.add_argument("--dims", default="5120,2048", help="d_inner of the shapes (2.8b: 5120, 370m: 2048)")
parser.add_argument("--dtypes", default="int8,fp16", help="int8: the W8A8 scan; fp16: the float one (fp16 model)")
parser.add_argument("--configs", help="semicolon-separated BLOCK_D,CHUNK,num_warps,STATE_ROWS (default: the list above)")
parser.add_argument("--shapes", help="comma-separated BATCHxSEQLEN (default: the list above)")
parser.add_argument("--json", required=True)
args = parser.parse_args()
if args.configs:
    CONFIGS = [tuple(int(v) for v in c.split(",")) for c in args.configs.split(";")]
if args.shapes:
    SHAPES = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
n = 16


rows = []
default, wide, few = scan_mod._CHUNKED_CONFIG, scan_mod._CHUNKED_CONFIG_WIDE, scan_mod._CHUNKED_CONFIG_FEW
try:
    # each config below is forced through _CHUNKED_CONFIG
    scan_mod._CHUNKED_CONFIG_WIDE = scan_mod._CHUNKED_CONFIG_FEW = None
    for dtype in args.dtypes.split(","):
        scan = selective_scan_int8 if dtype == "int8" else selective_scan
        for d in map(int, args.dims.split(",")):
            for batch, seqlen in SHAPES:
                sets = [int8_scan_inputs(batch, seqlen, d, n) for _ in range(3)]
                if dtype != "int8":
                    sets = [float_scan_inputs(a) for a in sets]
                ref = scan(**sets[0])[0].float()
                for cfg in CONFIGS:
                    scan_mod._CHUNKED_CONFIG = cfg
                    y = scan(**sets[0])[0].float()
                    us = graph_us([lambda a=a: scan(**a) for a in sets])
                    rows.append(dict(dtype=dtype, dim=d, batch=batch, seqlen=seqlen, config=cfg, us=us,
                                     programs=batch * -(-d // cfg[0]),
                                     rel_err=((y - ref).norm() / ref.norm()).item()))
                    print(rows[-1], flush=True)
                    scan_mod._CHUNKED_CONFIG = default
finally:
    scan_mod._CHUNKED_CONFIG, scan_mod._CHUNKED_CONFIG_WIDE, scan_mod._CHUNKED_CONFIG_FEW = default, wide, few
json.dump({"command": "python " + " ".join(sys.argv), "environment": B.environment(), "dstate": n, "configs": CONFIGS,
           "rows": rows}, open(args.json, "w"),
          indent=1)
