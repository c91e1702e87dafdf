"""The fp model computes the same function as transformers' MambaForCausalLM."""

import shutil

import pytest
import torch
import torch.nn.functional as F

from conftest import transformers_reference
from quamba.api import load
from quamba.eval.data import eval_windows
from quamba.eval.perplexity import perplexity


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module")
def hf_ref(ref_dir):
    return transformers_reference(ref_dir)


def test_logits_match_transformers(ref_model, hf_ref):
    torch.manual_seed(0)
    ids = torch.randint(0, 8192, (2, 200))
    with torch.no_grad():
        ours = ref_model(ids)
        theirs = hf_ref(ids).logits
    assert rel_err(ours, theirs) <= 1e-4


def test_perplexity_matches_transformers(ref_model, hf_ref, val_ids):
    windows = eval_windows(val_ids, 1024, max_windows=1)  # transformers' CPU path is slow: one window
    ours = perplexity(ref_model, windows, show_progress=False)
    with torch.no_grad():
        logits = hf_ref(windows).logits
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
    assert abs(ours.ppl / torch.exp(nll).item() - 1) < 0.01
    assert ours.tokens == 1023


def test_transformers_layout_loads_the_same(ref_model, hf_ref, tmp_path):
    hf_ref.save_pretrained(tmp_path / "hf")
    shutil.copy(ref_model.source_dir / "tokenizer.json", tmp_path / "hf")
    loaded = load(tmp_path / "hf", dtype="fp32", device="cpu")
    assert loaded.config == ref_model.config
    ids = torch.randint(0, 8192, (1, 64))
    with torch.no_grad():
        assert torch.equal(loaded(ids), ref_model(ids))
