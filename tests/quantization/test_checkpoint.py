"""Quantized checkpoints: bit-identical reload, half the size, clear errors on damage."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from quamba.api import load
from quamba.errors import QuambaError
from quamba.eval.data import calibration_samples
from quamba.quantization.checkpoint import load_quantized, save_quantized
from quamba.quantization.config import get_method
from quamba.quantization.quantize import quantize


@pytest.fixture(scope="module")
def ref_quamba(ref_model, calib_ids):
    return quantize(ref_model, get_method("quamba"), calibration_samples(calib_ids, 4, 256), show_progress=False)


@pytest.fixture(scope="module")
def saved(ref_quamba, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "quamba-w8a8"
    return save_quantized(ref_quamba, out, source_dir=ref_quamba.source_dir if hasattr(ref_quamba, "source_dir")
                          else None)


def test_reload_is_bit_identical(ref_quamba, tmp_path):
    out = save_quantized(ref_quamba, tmp_path / "q", storage_dtype=None)
    again = load(out, dtype="fp32", device="cpu")
    ids = torch.randint(0, 8192, (2, 40))
    with torch.no_grad():
        assert torch.equal(again(ids), ref_quamba(ids))
    # fp16 storage (the default) reloads bit-identically with itself
    first = load(save_quantized(again, tmp_path / "a"), dtype="fp32")
    second = load(save_quantized(first, tmp_path / "b"), dtype="fp32")
    as_text = load_quantized(str(tmp_path / "b"))          # a folder given as a string reads alike
    with torch.no_grad():
        assert torch.equal(first(ids), second(ids))
        assert torch.equal(as_text(ids), second(ids))


def test_size_is_about_half_of_fp16(saved, ref_dir, ref_model, calib_ids, tmp_path):
    fp16_bytes = (ref_dir / "model.safetensors").stat().st_size
    # the fp16 embedding alone is 17% of this small model: the mixers halve, the total reaches 60%
    assert (saved / "model.safetensors").stat().st_size <= 0.60 * fp16_bytes
    config = get_method("quamba").with_overrides(quantize_embedding=True)
    small = quantize(ref_model, config, calibration_samples(calib_ids, 2, 128), show_progress=False)
    out = save_quantized(small, tmp_path / "int8-emb")
    assert (out / "model.safetensors").stat().st_size <= 0.55 * fp16_bytes
    ids = torch.randint(0, 8192, (1, 32))
    with torch.no_grad():
        assert torch.equal(load(out, dtype="fp32")(ids), load(save_quantized(load(out, dtype="fp32"), tmp_path / "again"),
                                                              dtype="fp32")(ids))
    cfg = json.loads((saved / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["method"] == "quamba" and qc["version"] == 1 and qc["hadamard_size"] == 1280
    assert "backbone.layers.0.mixer.x_proj.input_scale" in qc["scale_tensors"]
    assert load_file(saved / "model.safetensors")["backbone.layers.0.mixer.in_proj.weight"].dtype == torch.int8


def test_existing_folder_needs_force(ref_quamba, saved):
    with pytest.raises(QuambaError, match="already exists; pass --force"):
        save_quantized(ref_quamba, saved)
    before = (saved / "model.safetensors").read_bytes()
    save_quantized(ref_quamba, saved, force=True)
    assert (saved / "model.safetensors").read_bytes() == before
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def _damaged_copy(saved, tmp_path, edit_state=None, edit_config=None):
    import shutil
    d = tmp_path / "damaged"
    shutil.copytree(saved, d)
    if edit_state:
        state = load_file(d / "model.safetensors")
        edit_state(state)
        save_file(state, d / "model.safetensors")
    if edit_config:
        cfg = json.loads((d / "config.json").read_text())
        edit_config(cfg)
        (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_missing_scale(saved, tmp_path):
    d = _damaged_copy(saved, tmp_path, edit_state=lambda s: s.pop("backbone.layers.4.mixer.ssm.B_scale"))
    with pytest.raises(QuambaError, match="missing tensor.*layers.4.mixer.ssm.B_scale"):
        load(d)


def test_scale_of_wrong_shape(saved, tmp_path):
    def edit(state):
        state["backbone.layers.1.mixer.out_proj.weight_scale"] = torch.ones(3)
    d = _damaged_copy(saved, tmp_path, edit_state=edit)
    with pytest.raises(QuambaError, match=r"out_proj.weight_scale' has shape \(3,\), expected \(\)"):
        load(d)


def test_unknown_format_version(saved, tmp_path):
    d = _damaged_copy(saved, tmp_path, edit_config=lambda c: c["quantization_config"].update(version=7))
    with pytest.raises(QuambaError, match="format version 7 is not supported"):
        load(d)


def test_float_where_int8_expected(saved, tmp_path):
    def edit(state):
        key = "backbone.layers.0.mixer.in_proj.weight"
        state[key] = state[key].float()
    d = _damaged_copy(saved, tmp_path, edit_state=edit)
    with pytest.raises(QuambaError, match="in_proj.weight' should be int8"):
        load(d)
