"""One sequence's prefill scan cut into S segments (selective_scan_segments): graph-timed at
batch 1 against S = 1 (the whole sequence in one pass), int8 (W8A8) and fp16 inputs, for the
d_inner of mamba-790m (3072), 370m (2048) and 130m (1536) by default. Each output is checked against
S = 1's (relative error of y and of the final state). "rule" is what _segment_count picks.
Writes JSON.

    python benchmarks/scan_segments_sweep.py --json docs/sweeps/scan_segments_sweep_h100.json
"""

import argparse
import importlib
import json

import torch

from _scan_inputs import float_scan_inputs, int8_scan_inputs
from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import selective_scan, selective_scan_int8

scan_mod = importlib.import_module("quamba.kernels.triton.selective_scan")
seg_mod = importlib.import_module("quamba.kernels.triton.selective_scan_segments")
N = 16
parser = argparse.ArgumentParser()
parser.add_argument("--dims", default="3072,2048,1536")
parser.add_argument("--lengths", default="512,1024,2048,4096")
parser.add_argument("--segments", default="1,2,4,8,16")
parser.add_argument("--dtypes", default="int8,fp16")
parser.add_argument("--correct-configs", default="",
                    help="(BLOCK_D, CHUNK, num_warps) of the correction kernel to try, 'a,b,c;d,e,f' (default: its own)")
parser.add_argument("--json", required=True)
args = parser.parse_args()


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


rows = []
try:
    for dtype in args.dtypes.split(","):
        scan = selective_scan_int8 if dtype == "int8" else selective_scan
        for d in map(int, args.dims.split(",")):
            for length in map(int, args.lengths.split(",")):
                sets = [int8_scan_inputs(1, length, d, N) for _ in range(3)]
                if dtype != "int8":
                    sets = [float_scan_inputs(a) for a in sets]
                scan_mod._PREFILL_SEGMENTS = None
                rule = scan_mod._segment_count(1, length, d, torch.device("cuda"), dtype == "int8")
                scan_mod._PREFILL_SEGMENTS = 1
                ref_y, ref_h = scan(**sets[0])
                default = seg_mod._CORRECT_CONFIG
                configs = [tuple(map(int, c.split(","))) for c in args.correct_configs.split(";") if c] or [default]
                for segments in map(int, args.segments.split(",")):
                    for config in configs if segments > 1 else [default]:
                        scan_mod._PREFILL_SEGMENTS, seg_mod._CORRECT_CONFIG = segments, config
                        y, h = scan(**sets[0])
                        us = graph_us([lambda a=a: scan(**a) for a in sets])
                        rows.append(dict(dtype=dtype, dim=d, seqlen=length, segments=segments, rule=rule, us=us,
                                         correct_config=config, y_rel_err=rel(y, ref_y), state_rel_err=rel(h, ref_h)))
                        print(rows[-1], flush=True)
                seg_mod._CORRECT_CONFIG = default
finally:
    scan_mod._PREFILL_SEGMENTS = None
json.dump({"environment": B.environment(), "dstate": N, "rows": rows}, open(args.json, "w"), indent=1)
