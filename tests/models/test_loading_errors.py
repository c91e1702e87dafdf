"""Bad model folders give one-line QuambaErrors that name the file or field."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from quamba.api import load
from quamba.errors import QuambaError
from quamba.models.config import MambaConfig


def copy_model(src, dst):
    shutil.copytree(src, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


def test_missing_folder(tmp_path):
    with pytest.raises(QuambaError, match="no such model folder"):
        load(tmp_path / "nope")


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(QuambaError, match="state-spaces/mamba-130m: could not fetch"):
        load("state-spaces/mamba-130m")


def test_folder_without_weights(tiny_dir, tmp_path):
    d = copy_model(tiny_dir, tmp_path / "m")
    (d / "model.safetensors").unlink()
    with pytest.raises(QuambaError, match="no weights"):
        load(d)


def test_unsupported_config_field(tiny_dir, tmp_path):
    d = copy_model(tiny_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["ssm_cfg"] = {"layer": "Mamba2"}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(QuambaError, match="ssm_cfg.layer='Mamba2'"):
        load(d)
    cfg["ssm_cfg"] = {"headdim": 64}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(QuambaError, match="headdim"):
        load(d)


def test_shape_mismatch_names_the_tensor(tiny_dir, tmp_path):
    d = copy_model(tiny_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["ssm_cfg"] = {"d_state": 8}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(QuambaError, match=r"A_log'? has shape \(384, 16\)"):
        load(d)


def test_truncated_safetensors(tiny_dir, tmp_path):
    d = copy_model(tiny_dir, tmp_path / "m")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(QuambaError, match="corrupt or truncated"):
        load(d)


def test_missing_tensor(tiny_dir, tmp_path):
    d = copy_model(tiny_dir, tmp_path / "m")
    state = load_file(d / "model.safetensors")
    del state["backbone.layers.3.mixer.D"]
    save_file(state, d / "model.safetensors")
    with pytest.raises(QuambaError, match="layers.3.mixer.D"):
        load(d)


def test_pytorch_bin_and_sharded_safetensors_load(tiny_dir, tiny_model, tmp_path):
    state = load_file(tiny_dir / "model.safetensors")
    ids = torch.randint(0, 8192, (1, 16))
    with torch.no_grad():
        want = tiny_model(ids)
    # pytorch_model.bin as mamba-ssm writes it (head stored too)
    d = tmp_path / "bin"
    d.mkdir()
    shutil.copy(tiny_dir / "config.json", d)
    torch.save({**state, "lm_head.weight": state["backbone.embedding.weight"]}, d / "pytorch_model.bin")
    with torch.no_grad():
        assert torch.equal(load(d, dtype="fp32")(ids), want)
    # sharded safetensors with an index
    d = tmp_path / "sharded"
    d.mkdir()
    shutil.copy(tiny_dir / "config.json", d)
    names = sorted(state)
    halves = {"a.safetensors": names[: len(names) // 2], "b.safetensors": names[len(names) // 2:]}
    for fname, keys in halves.items():
        save_file({k: state[k] for k in keys}, d / fname)
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: f for f, keys in halves.items() for k in keys}}))
    with torch.no_grad():
        assert torch.equal(load(d, dtype="fp32")(ids), want)


def test_config_layouts_agree():
    ssm = MambaConfig.from_dict({"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {},
                                 "pad_vocab_size_multiple": 8})
    hf = MambaConfig.from_dict({"hidden_size": 768, "num_hidden_layers": 24, "vocab_size": 50280,
                                "state_size": 16, "expand": 2, "conv_kernel": 4, "time_step_rank": 48,
                                "model_type": "mamba"})
    assert ssm == hf and ssm.vocab_size == 50280 and ssm.d_inner == 1536
    with pytest.raises(QuambaError, match="model_type 'mamba2'"):
        MambaConfig.from_dict({"hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 8, "model_type": "mamba2"})


def test_a_folder_given_as_a_string_loads_as_a_path(tiny_dir):
    """The loaders take str as well as Path (a string once raised a TypeError in them)."""
    from quamba.models.loading import load_fp_model

    from_text, from_path = load_fp_model(str(tiny_dir)), load_fp_model(tiny_dir)
    assert all(torch.equal(a, b) for a, b in zip(from_text.state_dict().values(), from_path.state_dict().values()))
