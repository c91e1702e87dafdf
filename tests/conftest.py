"""Shared fixtures: the real trained models and texts in ../shared (see its README)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels run in its interpreter (on small shapes). It must be
# set before anything imports triton: @triton.jit reads it when a kernel is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
REF_DIR = SHARED / "models" / "mamba1-ref-31m"
TINY_DIR = SHARED / "models" / "mamba1-tiny-3m"
CALIB_TXT = SHARED / "data" / "calib.txt"
VAL_TXT = SHARED / "data" / "val.txt"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests need ../shared beside the checkout (see shared/README.md)")
    return path


@pytest.fixture(scope="session")
def ref_dir() -> Path:
    return _require(REF_DIR)


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return _require(TINY_DIR)


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    from quamba.api import load
    return load(tiny_dir, dtype="fp32", device="cpu")


@pytest.fixture(scope="session")
def ref_model(ref_dir):
    from quamba.api import load
    return load(ref_dir, dtype="fp32", device="cpu")


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    from quamba.models.tokenizer import load_tokenizer
    return load_tokenizer(tiny_dir)


@pytest.fixture(scope="session")
def val_ids(tokenizer):
    from quamba.eval.data import read_text, tokenize_text
    return tokenize_text(read_text(_require(VAL_TXT)), tokenizer)


@pytest.fixture(scope="session")
def calib_ids(tokenizer):
    from quamba.eval.data import read_text, tokenize_text
    return tokenize_text(read_text(_require(CALIB_TXT)), tokenizer)


def transformers_reference(model_dir: Path):
    """transformers' MambaForCausalLM with our checkpoint's weights (the independent reference)."""
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    from quamba.models.loading import read_model_config

    _, cfg = read_model_config(model_dir)
    hf_cfg = transformers.MambaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer,
        state_size=cfg.d_state, expand=cfg.expand, conv_kernel=cfg.d_conv, time_step_rank=cfg.dt_rank,
        use_conv_bias=cfg.conv_bias, use_bias=cfg.bias, residual_in_fp32=cfg.residual_in_fp32,
        tie_word_embeddings=cfg.tie_embeddings, layer_norm_epsilon=cfg.norm_eps)
    model = transformers.MambaForCausalLM(hf_cfg).eval()
    state = {k.replace("backbone.embedding.", "backbone.embeddings."): v.float()
             for k, v in load_file(model_dir / "model.safetensors").items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    model.tie_weights()
    return model
