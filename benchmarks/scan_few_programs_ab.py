"""A/B of the chunked prefill scan's configuration rule for few programs (selective_scan's
_CHUNKED_CONFIG_FEW on / None), through the real dispatch (segments and the wide rule as
in a model): int8 inputs laid out as the W8A8 block passes them, graph-timed on distinct
inputs, alternated twice. Writes JSON.

    python benchmarks/scan_few_programs_ab.py --json docs/sweeps/scan_few_programs_ab_h100.json
"""

import argparse
import importlib
import json
import sys
import time

from _scan_inputs import int8_scan_inputs
from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton import selective_scan_int8

scan_mod = importlib.import_module("quamba.kernels.triton.selective_scan")
# (batch, seqlen, d_inner): mamba-1.4b's 4096, 790m's 3072, 370m's 2048, 130m's 1536, 2.8b's 5120.
SHAPES = [(1, 1024, 4096), (1, 2048, 4096), (1, 4096, 4096), (2, 2048, 4096), (1, 512, 3072), (1, 2048, 3072),
          (1, 512, 2048), (2, 512, 2048), (1, 2048, 2048), (1, 512, 1536), (1, 2048, 1536), (1, 2048, 5120)]

parser = argparse.ArgumentParser()
parser.add_argument("--json", required=True)
args = parser.parse_args()

few = scan_mod._CHUNKED_CONFIG_FEW
rows = []
try:
    for batch, seqlen, dim in SHAPES:
        sets = [int8_scan_inputs(batch, seqlen, dim) for _ in range(3)]
        for rnd in range(2):
            for label, cfg in (("default", None), ("few", few)):
                scan_mod._CHUNKED_CONFIG_FEW = cfg
                chosen = scan_mod._chunked_config(batch * scan_mod._segment_count(batch, seqlen, dim, sets[0]["u_q"].device),
                                                  dim, 16, sets[0]["u_q"].device, True)
                us = graph_us([lambda a=a: selective_scan_int8(**a) for a in sets])
                rows.append(dict(batch=batch, seqlen=seqlen, dim=dim, round=rnd, rule=label, config=chosen, us=us))
                print(rows[-1], flush=True)
finally:
    scan_mod._CHUNKED_CONFIG_FEW = few
json.dump({"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "environment": B.environment(), "few": few, "rows": rows}, open(args.json, "w"), indent=1)
