"""The command line: JSON outputs, one-line errors, no overwrite without --force."""

import json

import torch

from typer.testing import CliRunner

from quamba.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_ppl_json_on_embedded_model():
    result = invoke("ppl", "--seq-len", 256, "--max-windows", 2, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["tokens"] == 2 * 255 and 1 < out["ppl"] < 1000


def test_generate_json():
    result = invoke("generate", "-p", "In the beginning", "-n", 5, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert 1 <= len(out["tokens"]) <= 5


def test_generate_with_an_fp16_state(monkeypatch):
    from quamba.models.mamba import InferenceCache

    caches = []
    real = InferenceCache.allocate.__func__

    def spy(cls, *args, **kwargs):
        caches.append(real(cls, *args, **kwargs))
        return caches[-1]

    monkeypatch.setattr(InferenceCache, "allocate", classmethod(spy))
    result = invoke("generate", "-p", "In the beginning", "-n", 5, "--device", "cpu", "--state-dtype", "fp16", "--json")
    assert result.exit_code == 0, result.output
    assert 1 <= len(json.loads(result.stdout)["tokens"]) <= 5
    assert caches and all(layer.ssm_state.dtype == torch.float16 for c in caches for layer in c.layers)
    result = invoke("generate", "-n", 2, "--device", "cpu", "--state-dtype", "int8")
    assert result.exit_code == 1 and "--state-dtype" in result.output and "Traceback" not in result.output


def test_exact_numerics_errors_are_one_line(monkeypatch):
    result = invoke("generate", "-n", 2, "--device", "cpu", "--exact")
    assert result.exit_code == 1 and "--exact applies to quantized models only" in result.output
    monkeypatch.setenv("QUAMBA_NUMERICS", "fastest")
    result = invoke("generate", "-n", 2, "--device", "cpu")
    assert result.exit_code == 1 and "QUAMBA_NUMERICS='fastest' is not a numerics mode" in result.output
    assert "Traceback" not in result.output


def test_errors_are_one_line(tmp_path):
    result = invoke("ppl", tmp_path / "missing", "--device", "cpu")
    assert result.exit_code == 1
    assert "error:" in result.output and "no such model folder" in result.output
    assert "Traceback" not in result.output
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = invoke("ppl", "--text", empty, "--device", "cpu")
    assert result.exit_code == 1 and "the file is empty" in result.output
    short = tmp_path / "short.txt"
    short.write_text("a few words")
    result = invoke("ppl", "--text", short, "--device", "cpu")
    assert result.exit_code == 1 and "shorter than one window" in result.output


def test_quantize_then_ppl_of_the_folder_and_no_overwrite(tmp_path, monkeypatch):
    out = tmp_path / "int8"
    args = ("quantize", "--out", out, "--samples", 4, "--seq-len", 128, "--device", "cpu", "--json")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["method"] == "quamba"
    result = invoke("ppl", out, "--seq-len", 128, "--max-windows", 2, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    fast_ppl = json.loads(result.stdout)["ppl"]
    # --exact sets QUAMBA_NUMERICS for the process: monkeypatch puts the variable back afterwards.
    monkeypatch.setenv("QUAMBA_NUMERICS", "fast")
    result = invoke("ppl", out, "--seq-len", 128, "--max-windows", 2, "--device", "cpu", "--exact", "--json")
    assert result.exit_code == 0, result.output
    exact_ppl = json.loads(result.stdout)["ppl"]
    assert abs(exact_ppl / fast_ppl - 1) < 1e-3   # the same model; fp64 against fp32 in the last bits
    result = invoke("generate", out, "-p", "In the beginning", "-n", 3, "--device", "cpu", "--exact", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["tokens"]) == 3
    before = (out / "model.safetensors").read_bytes()
    result = invoke(*args)
    assert result.exit_code == 1 and "already exists; pass --force" in result.output
    assert (out / "model.safetensors").read_bytes() == before
    result = invoke("quantize", "--out", tmp_path / "x", "--method", "nope", "--device", "cpu")
    assert result.exit_code == 1 and "unknown method 'nope'" in result.output


def test_compare_table(tmp_path):
    result = invoke("compare", "--methods", "fp16,w8a8-naive,quamba", "--samples", 4, "--calib-seq-len", 128,
                    "--seq-len", 256, "--max-windows", 2, "--device", "cpu", "--json-out", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "c.json").read_text())
    assert [m["method"] for m in data["methods"]] == ["fp16", "w8a8-naive", "quamba"]
    assert data["methods"][2]["size_ratio"] < 0.8
