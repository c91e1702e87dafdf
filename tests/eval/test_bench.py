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


def test_bench_cli_teaches_gen():
    from typer.testing import CliRunner

    from quamba.cli import app

    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0 and "--gen" in result.output


def test_measure_writes_a_memory_row_after_each_decode_batch(monkeypatch):
    """_measure's bookkeeping with the CUDA memory counters faked: one memory row per decode
    batch, each the peak so far (reset once after the build), with the weight bytes."""
    from quamba.eval import bench

    peak = {"allocated": 0, "reserved": 0}
    resets = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: resets.append(1))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: peak["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a: peak["reserved"])

    def decode_ms(batch):
        peak["allocated"] += 10 * batch
        peak["reserved"] += 20 * batch
        return 1.0 + batch, {"gen": 7}

    model = torch.nn.Linear(4, 4, bias=False)           # 16 fp32 weights = 64 bytes
    seen = []
    rows = bench._measure(model, 100, [], [1, 8], 3, decode_ms, seen.append)
    assert rows == seen and len(resets) == 1
    assert [(r["kind"], r["batch"]) for r in rows] == [("decode", 1), ("memory", 1), ("decode", 8), ("memory", 8)]
    assert rows[1] == {"kind": "memory", "batch": 1, "weight_bytes": 64, "peak_bytes": 10, "peak_reserved_bytes": 20}
    assert rows[3]["peak_bytes"] == 90 and rows[3]["peak_reserved_bytes"] == 180
    assert rows[2]["tokens_per_s"] == pytest.approx(8 / 9.0 * 1e3) and rows[2]["gen"] == 7


def test_environment_records_the_kernel_switches(monkeypatch):
    """A bench JSON says which QUAMBA_* switches it ran with (an A/B run's command line does not)."""
    from quamba.eval.bench import environment

    monkeypatch.setenv("QUAMBA_PREFILL_GEMM", "pointer")
    monkeypatch.delenv("QUAMBA_PDL", raising=False)
    env = environment()
    assert env["switches"]["QUAMBA_PREFILL_GEMM"] == "pointer"
    assert "QUAMBA_PDL" not in env["switches"]


def test_int8_embedding_bench_model_has_an_int8_head():
    """The w8a8-int8emb rows' model: embedding and (tied) head int8, logits finite (CPU reference path)."""
    from quamba.eval.bench import METHODS, random_w8a8_model
    from quamba.models.config import MambaConfig
    from quamba.quantization.qembedding import QEmbedding, QLMHead

    assert "w8a8-int8emb" in METHODS
    config = MambaConfig(d_model=64, n_layer=2, vocab_size=96)
    model = random_w8a8_model(config, device="cpu", dtype=torch.float32, int8_embedding=True)
    assert isinstance(model.backbone.embedding, QEmbedding) and isinstance(model.lm_head, QLMHead)
    assert model.lm_head.source is model.backbone.embedding
    with torch.no_grad():
        logits = model(torch.randint(0, 96, (1, 5)))
    assert logits.shape == (1, 5, 96) and torch.isfinite(logits).all() and logits.abs().max() > 0
