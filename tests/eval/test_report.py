"""`quamba report` from small fixture JSONs: Markdown tables, PNG plots, graceful skips."""

from __future__ import annotations

import json

import pytest

from quamba.eval.report import pareto_front, read_bench, write_report

MIB = 2 ** 20


def _eval(method: str, acc1: float, acc2: float, size_mib: float) -> dict:
    return {"model": "/m/mamba1-ref-31m", "method": method, "weight_bytes": int(size_mib * MIB),
            "average_acc": (acc1 + acc2) / 2,
            "metrics": {"quamba_lastword": {"acc": {"value": acc1, "stderr": 0.02},
                                            "perplexity": {"value": 90.0, "stderr": 9.0}},
                        "quamba_cloze_mc": {"acc": {"value": acc2, "stderr": 0.02},
                                            "acc_norm": {"value": acc2 + 0.01, "stderr": 0.02}}}}


@pytest.fixture()
def inputs(tmp_path):
    files = {
        "compare.json": {"fp_ppl": 20.4, "model": "/m/mamba1-ref-31m", "tokens": 4096, "text": "val.txt",
                         "methods": [{"method": "fp16", "ppl": 20.4, "ppl_ratio": 1.0, "weight_bytes": 60 * MIB, "size_ratio": 1.0},
                                     {"method": "w8a8-naive", "ppl": 25.0, "ppl_ratio": 1.23, "weight_bytes": 33 * MIB, "size_ratio": 0.55},
                                     {"method": "quamba", "ppl": 20.9, "ppl_ratio": 1.02, "weight_bytes": 33 * MIB, "size_ratio": 0.55}]},
        "fp.json": _eval("fp", 0.40, 0.50, 60),
        "naive.json": _eval("w8a8-naive", 0.30, 0.45, 33),
        "quamba.json": _eval("quamba", 0.39, 0.49, 33),
        # quamba bench's long form: rows tagged by kind
        "bench.json": {"rows": [
            {"shape": "130m", "method": m, "kind": "memory", "batch": b, "weight_bytes": w, "peak_bytes": w + 40 * b * MIB}
            for m, w in (("fp16", 260 * MIB), ("w8a8", 140 * MIB)) for b in (8, 1)] + [
            {"shape": "130m", "method": m, "kind": "decode", "batch": b, "ms_per_token": t * b}
            for m, t in (("fp16", 0.9), ("w8a8", 0.6)) for b in (1, 8)] + [
            {"shape": "130m", "method": m, "kind": "prefill", "batch": 1, "prompt_len": n, "ms": t * n / 1024}
            for m, t in (("fp16", 9.0), ("w8a8", 7.0)) for n in (1024, 2048)]},
        # the wide form from the issue: one row per model and method
        "bench_wide.json": [{"model": "2.8b", "method": "fp16", "prefill_ms": 37.7, "decode_ms_per_token": 3.9,
                             "peak_mem_bytes": 6000 * MIB, "weight_bytes": 5540 * MIB},
                            {"model": "2.8b", "method": "w8a8", "prefill_ms": 30.0, "decode_ms_per_token": 2.4,
                             "peak_mem_bytes": 3300 * MIB, "weight_bytes": 2900 * MIB}],
    }
    for name, data in files.items():
        (tmp_path / name).write_text(json.dumps(data))
    return tmp_path


def test_pareto_front():
    points = [(1.0, 0.5), (2.0, 0.6), (1.5, 0.4), (3.0, 0.6)]
    assert pareto_front(points) == [0, 1]
    assert pareto_front([(1.0, 30.0), (2.0, 20.0), (3.0, 25.0)], higher_is_better=False) == [0, 1]


def test_read_bench_folds_the_long_form(inputs):
    rows = {r["method"]: r for r in read_bench(inputs / "bench.json")}
    assert rows["w8a8"]["decode_ms_per_token"] == pytest.approx(0.6)     # batch 1
    assert rows["w8a8"]["prefill_ms"] == pytest.approx(7.0 * 2)          # the longest prompt
    assert rows["fp16"]["peak_mem_bytes"] == 300 * MIB and rows["w8a8"]["model"] == "130m"   # batch 1's peak


def test_report_writes_markdown_and_plots(inputs, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    result = write_report(out, compare=[inputs / "compare.json"],
                          evals=[inputs / f for f in ("fp.json", "naive.json", "quamba.json")],
                          bench=[inputs / "bench.json", inputs / "bench_wide.json"])
    md = result.markdown.read_text()
    assert "## Accuracy" in md and "| quamba |" in md and "+7.50 pts" in md  # naive: 0.45 -> 0.375
    assert "## Perplexity and size" in md and "## Latency and memory" in md
    names = {p.name for p in result.plots}
    assert {"quality_vs_latency_130m.png", "quality_vs_latency_2.8b.png", "quality_vs_size.png",
            "memory_vs_size.png"} <= names
    for path in result.plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({path.name})" in md


def test_report_without_bench_skips_those_plots(inputs, tmp_path):
    pytest.importorskip("matplotlib")
    result = write_report(tmp_path / "r", compare=[inputs / "compare.json"])
    assert [p.name for p in result.plots] == ["quality_vs_size.png"]   # perplexity vs size only
    assert any("latency" in n for n in result.notes) and any("memory" in n for n in result.notes)
    assert "## Notes" in result.markdown.read_text()


def test_report_cli_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from quamba.cli import app

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(app, ["report", "--eval", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not valid JSON" in result.output
