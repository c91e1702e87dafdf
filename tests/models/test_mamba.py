import pytest
import torch

from quamba.api import load
from quamba.models.generate import generate, sample_next


def test_step_by_step_equals_full_forward(tiny_model):
    torch.manual_seed(1)
    ids = torch.randint(0, 8192, (2, 37))
    with torch.no_grad():
        full = tiny_model(ids)
        cache = tiny_model.allocate_cache(2)
        prefix = tiny_model(ids[:, :20], cache)
        steps = [tiny_model(ids[:, t:t + 1], cache) for t in range(20, 37)]
    stepped = torch.cat([prefix] + steps, dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-4, atol=1e-4)
    assert cache.seqlen_offset == 37


@pytest.mark.parametrize("state_dtype", [torch.float16, torch.bfloat16])
def test_half_precision_state_decodes_close_to_fp32_state(tiny_model, state_dtype):
    """ssm_state_dtype rounds the state kept between calls (the scan still computes in
    fp32): the cache is allocated in it, and decoding drifts from the fp32-state run
    by a few roundings, no more."""
    torch.manual_seed(2)
    ids = torch.randint(0, 8192, (2, 24))

    def session():
        cache = tiny_model.allocate_cache(2)
        with torch.no_grad():
            out = [tiny_model(ids[:, :8], cache)] + [tiny_model(ids[:, t:t + 1], cache) for t in range(8, 24)]
        return torch.cat(out, 1), cache

    ref, ref_cache = session()
    try:
        tiny_model.ssm_state_dtype = state_dtype
        out, cache = session()
    finally:
        tiny_model.ssm_state_dtype = torch.float32          # the fixture is shared
    assert ref_cache.layers[0].ssm_state.dtype == torch.float32
    assert all(layer.ssm_state.dtype == state_dtype for layer in cache.layers)
    torch.testing.assert_close(out[:, :8], ref[:, :8])     # the prefill does not read the stored state
    err = float((out - ref).norm() / ref.norm())
    assert 0 < err < 20 * torch.finfo(state_dtype).eps, err


def test_ssm_state_dtype_is_checked(tiny_model):
    from quamba.errors import QuambaError

    with pytest.raises(QuambaError, match="ssm_state_dtype must be one of"):
        tiny_model.ssm_state_dtype = torch.int8
    assert tiny_model.ssm_state_dtype == torch.float32


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_runs_close_to_fp32(tiny_dir, tiny_model, dtype):
    half = load(tiny_dir, dtype=dtype, device="cpu")
    ids = torch.randint(0, 8192, (1, 32))
    with torch.no_grad():
        ref = tiny_model(ids)
        out = half(ids).float()
    assert half(ids).dtype == half.dtype
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.8


def test_greedy_generation_matches_argmax_of_forward(tiny_model, tokenizer):
    prompt = torch.tensor(tokenizer.encode("In the beginning God created"))
    new = generate(tiny_model, prompt, 12)
    seq = torch.cat([prompt, new])
    with torch.no_grad():
        logits = tiny_model(seq[None, :-1])
    # each generated token is the argmax of a full forward over everything before it
    assert torch.equal(logits[0, len(prompt) - 1:].argmax(-1), new)


def test_sampling_filters():
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0]])
    g = torch.Generator().manual_seed(0)
    picks = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(50)}
    assert picks <= {0, 1}
    picks = {int(sample_next(logits, 1.0, top_p=0.5, generator=g)) for _ in range(50)}
    assert picks == {0}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pipelined loop is the CUDA path")
def test_gpu_generation_gives_the_step_by_step_tokens():
    """On CUDA generate() queues each step before reading the token that feeds it; the
    tokens (greedy, an eos stop, seeded sampling) are those of a loop that reads every token first."""
    from quamba.models.cuda_graph import GraphedDecoder

    model = load(None, dtype="fp32", device="cuda")     # the embedded tiny model
    prompt = torch.tensor([464, 1708, 302, 262, 1230], device="cuda")
    new = generate(model, prompt, 24)
    with torch.inference_mode():
        decoder = GraphedDecoder(model, 1)
        logits, want = decoder.prefill(prompt[None]), []
        for _ in range(24):
            next_id = logits.argmax(-1)
            want.append(int(next_id.item()))
            logits = decoder.step(next_id)
    assert new.tolist() == want and len(set(want)) > 1     # a repeated token would hide an off-by-one
    eos = want[7]
    assert generate(model, prompt, 24, eos_id=eos).tolist() == want[:want.index(eos) + 1]
    # Sampling draws from the generator in the same order as the step-by-step loop.
    sampled = generate(model, prompt, 24, temperature=1.0, seed=3)
    with torch.inference_mode():
        decoder, generator = GraphedDecoder(model, 1), torch.Generator(device="cuda").manual_seed(3)
        logits, want = decoder.prefill(prompt[None]), []
        for _ in range(24):
            next_id = sample_next(logits, 1.0, generator=generator)
            want.append(int(next_id.item()))
            logits = decoder.step(next_id)
    assert sampled.tolist() == want


def test_generation_stops_at_eos(tiny_model):
    eos = 0
    prompt = torch.tensor([5, 6, 7])
    new = generate(tiny_model, prompt, 200, temperature=1.0, seed=0, eos_id=eos)
    assert len(new) == 200 or new[-1].item() == eos
