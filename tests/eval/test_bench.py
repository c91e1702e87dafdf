"""`quamba bench`'s bookkeeping, on rows made up here (the timings themselves need a GPU)."""

import pytest
import torch

from quamba.errors import QuambaError
from quamba.eval.bench import ratios, run_bench, table

GIB = 2**30


def _rows():
    rows = []
    for method, weights, ms in (("w8a8", 2.7, 2.6), ("mamba-ssm-fp16", 5.2, 4.2)):
        for batch, extra in ((1, 0.3), (64, 1.5)):
            rows.append({"shape": "2.8b", "method": method, "kind": "decode", "batch": batch,
                         "ms_per_token": ms * (1 + batch / 64)})
            rows.append({"shape": "2.8b", "method": method, "kind": "memory", "batch": batch,
                         "weight_bytes": weights * GIB, "peak_bytes": (weights + extra) * GIB,
                         "peak_reserved_bytes": (weights + 2 * extra) * GIB})
    return rows


def test_ratios_pair_each_batch_with_the_anchor():
    got = {(r["kind"], r["batch"]): r["ratio"] for r in ratios(_rows())}
    assert got[("memory", 1)] == pytest.approx(3.0 / 5.5)        # the batch-1 workload's peak
    assert got[("memory", 64)] == pytest.approx(4.2 / 6.7)
    assert got[("decode", 64)] == pytest.approx(2.6 / 4.2)
    assert all(r["vs"] == "mamba-ssm-fp16" for r in ratios(_rows()))


def test_table_labels_memory_by_batch():
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(table(_rows()))
    text = console.export_text()
    assert "peak memory to b=1" in text and "peak memory to b=64" in text and "0.55x" in text
    assert "reserved 3.30" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_bench_without_a_gpu_says_so():
    with pytest.raises(QuambaError, match="needs a CUDA GPU"):
        run_bench(["130m"], ["w8a8"], [16], [1])
