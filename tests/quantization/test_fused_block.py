"""The fused Triton W8A8 block computes what the reference block does.

Runs on CUDA when there is one, else on the CPU under TRITON_INTERPRET=1 (small
shapes); skipped only when Triton itself is missing. The reference rounds where the
kernels round (the norm quantized from fp32, y handed on in fp16), so what differs is
fp32 association alone: the epilogues' last bits, the chunked scan's order. That
flips an int8 rounding only now and then (one layer: 150 dB for one token, 47 dB for
five, one flip); a wrong scale or layout would give < 10 dB.
"""

import pytest
import torch

pytest.importorskip("triton")

from quamba.eval.data import calibration_samples  # noqa: E402
from quamba.models.mamba import Block  # noqa: E402
from quamba.quantization.config import get_method  # noqa: E402
from quamba.quantization.fused_block import FusedQBlock  # noqa: E402
from quamba.quantization.inspect import sqnr  # noqa: E402
from quamba.quantization.quantize import quantize  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def qmodel():
    # the embedded model and demo text, so that this also runs on a GPU machine without ../shared
    from quamba.api import load
    from quamba.cli import DEMO_CALIB
    from quamba.eval.data import read_text, tokenize_text
    from quamba.models.tokenizer import load_tokenizer

    fp = load(None, dtype="fp32", device="cpu")
    ids = tokenize_text(read_text(DEMO_CALIB), load_tokenizer(fp.source_dir))
    q = quantize(fp, get_method("quamba"), calibration_samples(ids, 2, 128), show_progress=False)
    return q.to(DEVICE)


@pytest.mark.parametrize("seqlen", [1, 5])
def test_one_fused_layer_matches_reference(qmodel, seqlen):
    layer = qmodel.backbone.layers[3]
    torch.manual_seed(seqlen)
    hidden = torch.randn(2, seqlen, 192, device=DEVICE)
    residual = torch.randn(2, seqlen, 192, device=DEVICE)
    with torch.no_grad():
        layer.__class__ = Block
        ref_out, ref_res = layer(hidden, residual)
        layer.__class__ = FusedQBlock
        out, res = layer(hidden, residual)
    layer.__class__ = Block
    assert torch.equal(res, ref_res)
    assert sqnr(ref_out, out.float()) > 40


def _prefill_then_steps(model, ids, cache, prompt_len=5):
    """The prompt's first tokens in one call, the rest one token a call, through ``cache``."""
    return torch.cat([model(ids[:, :prompt_len], cache)]
                     + [model(ids[:, t:t + 1], cache) for t in range(prompt_len, ids.shape[1])], 1)


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.float16])
def test_fused_model_prefill_and_decode(qmodel, state_dtype):
    """A prefill into a cache and single-token steps after it: the Triton path against the
    reference run the same way (the state kept in the same dtype between calls). With an
    fp32 state, one call over all tokens agrees with the steps to fp32 rounding. An fp16
    state is rounded once per call, in both paths alike: the reference's own one-call and
    stepwise outputs then differ by 38-42 dB (measured over four prompts on the H100), so
    the steps are compared with the reference's steps instead."""
    ids = torch.randint(0, 8192, (1, 7), device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(0))
    try:
        qmodel.ssm_state_dtype = state_dtype
        with torch.no_grad():
            qmodel.select_backend("reference")
            ref, ref_steps = qmodel(ids), _prefill_then_steps(qmodel, ids, qmodel.allocate_cache(1))
            assert qmodel.select_backend("triton") == "triton"
            full = qmodel(ids)
            cache = qmodel.allocate_cache(1)
            assert cache.layers[0].conv_state.dtype == torch.int8
            assert cache.layers[0].ssm_state.dtype == state_dtype
            steps = _prefill_then_steps(qmodel, ids, cache)
    finally:
        qmodel.select_backend("reference")
        qmodel.ssm_state_dtype = torch.float32
    # One int8 rounding flipped by fp32 association costs ~45 dB; a wrong scale or layout < 10.
    assert sqnr(ref, full.float()) > 40
    assert sqnr(ref_steps.float(), steps.float()) > 40
    if state_dtype == torch.float32:
        assert sqnr(full.float(), steps.float()) > 60


@pytest.mark.skipif(DEVICE != "cuda", reason="prefill CUDA graphs need a GPU")
def test_prefill_graph_is_not_replayed_on_a_state_of_another_dtype(qmodel):
    """A cache whose fp16 SSM state lies at the address of an earlier fp32 one (as when the
    caching allocator hands a freed fp32 cache's memory to a new fp16 cache) gets a prefill
    graph of its own. Replaying the fp32 state's graph wrote fp32 states into the fp16
    buffer: the prompt's logits were right and every step after it wrong (4-22 dB)."""
    from quamba.models.mamba import InferenceCache, LayerCache

    ids = torch.randint(0, 8192, (1, 7), device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(1))
    n = qmodel.config.d_state
    try:
        assert qmodel.select_backend("triton") == "triton"
        with torch.no_grad():
            cache32 = qmodel.allocate_cache(1)
            for _ in range(3):                                # eager, capture, replay: the fp32 graph
                qmodel(ids[:, :5], cache32)
            aliased = InferenceCache([LayerCache(layer.conv_state.zero_(),
                                                 layer.ssm_state.view(torch.float16)[..., :n].zero_())
                                      for layer in cache32.layers])
            assert aliased.layers[0].ssm_state.data_ptr() == cache32.layers[0].ssm_state.data_ptr()
            got = _prefill_then_steps(qmodel, ids, aliased)
            qmodel.ssm_state_dtype = torch.float16
            want = _prefill_then_steps(qmodel, ids, qmodel.allocate_cache(1))
    finally:
        qmodel.select_backend("reference")
        qmodel.ssm_state_dtype = torch.float32
    assert torch.equal(got, want)


def test_fp16_model_generates_what_the_reference_does(qmodel, tmp_path):
    """The deployed form (fp16 checkpoint, fp16 model): both backends pick the same greedy
    tokens. Under the interpreter, whose fp32 arithmetic is the CPU's, the prompt's logits
    are bit-identical. Before the reference rounded y to fp16 and quantized the fp32 norm,
    ~0.2% of y's int8 values differed and greedy decoding of mamba1-ref-31m on the GPU
    kept only its first 5 of 64 tokens."""
    from quamba.quantization.checkpoint import load_quantized, save_quantized
    from quamba.models.generate import generate

    save_quantized(qmodel.to("cpu"), tmp_path / "q")
    qmodel.to(DEVICE)
    model = load_quantized(tmp_path / "q", dtype=torch.float16, device=DEVICE)
    ids = torch.tensor([[0, 464, 1708, 302, 262, 1230, 318, 257, 2060]], device=DEVICE) % 8192
    with torch.no_grad():
        model.select_backend("reference")
        ref_logits = model(ids)
        ref_tokens = generate(model, ids[0], 12)
        assert model.select_backend("triton") == "triton"
        logits = model(ids)
        tokens = generate(model, ids[0], 12)
    assert torch.equal(tokens, ref_tokens)
    if DEVICE == "cpu":
        assert torch.equal(logits, ref_logits)
    else:  # the GPU's exp, FMA contraction and reduction order move the last bits
        assert sqnr(ref_logits.float(), logits.float()) > 40


def test_exact_numerics_give_the_cpu_references_bits(qmodel, tmp_path, monkeypatch):
    """QUAMBA_NUMERICS=exact (quamba.kernels.numerics): the deployed fp16 model through the
    Triton path (on the GPU, or the interpreter) gives the CPU reference's logits bit for bit
    over a prefill and decode steps, so the same greedy tokens. On the GPU the fast path does
    not (test_fp16_model_generates_what_the_reference_does allows 40 dB there): its exp and
    summation orders move last bits, and with them near-tied tokens."""
    from quamba.models.generate import generate
    from quamba.quantization.checkpoint import load_quantized, save_quantized

    save_quantized(qmodel.to("cpu"), tmp_path / "q")
    qmodel.to(DEVICE)
    ref_model = load_quantized(tmp_path / "q", dtype=torch.float16, device="cpu")
    model = load_quantized(tmp_path / "q", dtype=torch.float16, device=DEVICE)
    monkeypatch.setenv("QUAMBA_NUMERICS", "exact")
    ids = torch.tensor([[0, 464, 1708, 302, 262, 1230, 318]]) % 8192
    steps = 24 if DEVICE == "cuda" else 3
    with torch.no_grad():
        ref_model.select_backend("reference")
        assert model.select_backend("triton") == "triton"
        ref_cache, cache = ref_model.allocate_cache(1), model.allocate_cache(1)
        ref_logits = _prefill_then_steps(ref_model, ids, ref_cache, prompt_len=5)
        logits = _prefill_then_steps(model, ids.to(DEVICE), cache, prompt_len=5)
        assert torch.equal(logits.cpu(), ref_logits)
        for ref_layer, layer in zip(ref_cache.layers, cache.layers):
            assert torch.equal(layer.ssm_state.cpu(), ref_layer.ssm_state)
        assert torch.equal(generate(model, ids[0].to(DEVICE), steps).cpu(), generate(ref_model, ids[0], steps))


def test_state_matrix_follows_a_log_writes():
    """The mixer's cached A = -exp(A_log) is recomputed when A_log is written in place
    (load_state_dict) or replaced, never served stale."""
    from quamba.quantization.config import get_method
    from quamba.quantization.qmixer import QMambaMixer
    from quamba.models.config import MambaConfig

    config = MambaConfig(d_model=16, n_layer=1, vocab_size=32)
    mixer = QMambaMixer(config, get_method("quamba"), device="cpu")
    mixer.ssm.A_log.data = torch.zeros_like(mixer.ssm.A_log)
    assert torch.equal(mixer.A, -torch.ones_like(mixer.ssm.A_log))
    with torch.no_grad():
        mixer.ssm.A_log.fill_(1.0)                      # in place, as load_state_dict does
    assert torch.allclose(mixer.A, -torch.full_like(mixer.ssm.A_log, 2.718281828))
    A64 = mixer.state_matrix(torch.float64)            # exact numerics' A, cached beside the fp32 one
    assert A64.dtype == torch.float64 and torch.equal(A64, -torch.exp(torch.ones_like(A64)))
    mixer.ssm.A_log = torch.nn.Parameter(torch.full_like(mixer.ssm.A_log, 2.0), requires_grad=False)
    assert torch.allclose(mixer.A, -torch.full_like(mixer.ssm.A_log, 7.389056))


@pytest.mark.skipif(DEVICE != "cuda", reason="prefill CUDA graphs need a GPU")
@pytest.mark.parametrize("graphs", ["1", "block"])
def test_w8a8_prefill_graphs_replay_what_eager_gives(qmodel, monkeypatch, graphs):
    """A W8A8 prefill long enough for the tiled GEMMs (the TMA kernel on Hopper), through
    the CUDA graphs (eager, capture, replays; the blocks update one buffer pair in place;
    one graph of the whole stack, or one a block) equals the same prompts run eagerly, with
    and without a cache; a different prompt gives different logits (the graphs read their
    inputs)."""
    prompts = [torch.randint(0, 8192, (1, 160), device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(s))
               for s in range(4)]
    monkeypatch.setenv("QUAMBA_PREFILL_GRAPHS", graphs)
    from quamba.models.prefill_graphs import PrefillGraphs

    owners, real_capture = [], PrefillGraphs._capture
    monkeypatch.setattr(PrefillGraphs, "_capture",
                        lambda self, owner, *a, **k: owners.append(owner) or real_capture(self, owner, *a, **k))
    try:
        assert qmodel.select_backend("triton") == "triton"
        with torch.no_grad():
            graphed = [qmodel(ids).clone() for ids in prompts]          # eager, capture, replay, replay
            caches = [qmodel.allocate_cache(1) for _ in range(3)]
            cached = [qmodel(prompts[0], c).clone() for c in caches]     # a graph per cache
            monkeypatch.setenv("QUAMBA_PREFILL_GRAPHS", "0")
            eager = [qmodel(ids).clone() for ids in prompts]
            eager_cached = qmodel(prompts[0], qmodel.allocate_cache(1)).clone()
    finally:
        qmodel.select_backend("reference")
    # One graph of the whole stack for each key (no cache, then each cache), or one a block.
    assert owners and all((owner is qmodel) == (graphs == "1") for owner in owners)
    for g, e in zip(graphed, eager):
        assert torch.equal(g, e)
    for c in cached:
        assert torch.equal(c, eager_cached)
    assert not torch.equal(graphed[2], graphed[3])


@pytest.mark.skipif(DEVICE != "cuda", reason="prefill CUDA graphs need a GPU")
def test_w8a8_prefill_stack_graph_sees_a_rescaled_tensor(qmodel, monkeypatch):
    """B's scale is merged into x_proj's output-scale vector on the host, and a graph bakes that
    vector in. Written in place after the stack graph was captured, the next prefill computes
    the vector again, then captures anew, and gives what the rescaled model gives eagerly."""
    ids = torch.randint(0, 8192, (1, 160), device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(5))
    scale = qmodel.backbone.layers[1].mixer.ssm.B_scale
    original = scale.clone()
    try:
        assert qmodel.select_backend("triton") == "triton"
        with torch.no_grad():
            before = [qmodel(ids).clone() for _ in range(3)]          # eager, capture, replay
            scale.mul_(1.5)
            after = [qmodel(ids).clone() for _ in range(3)]
            monkeypatch.setenv("QUAMBA_PREFILL_GRAPHS", "0")
            eager = qmodel(ids).clone()
    finally:
        with torch.no_grad():
            scale.copy_(original)
        qmodel.select_backend("reference")
    assert not torch.equal(eager, before[0])
    for got in after:
        assert torch.equal(got, eager)


@pytest.mark.parametrize("batch,early,chain_switch", [(1, True, "1"), (2, True, "1"), (3, False, "1"),
                                                      (1, True, "0")])
def test_decode_step_starts_in_proj_and_out_proj_early_where_it_pays(qmodel, batch, early, chain_switch,
                                                                     monkeypatch):
    """The early starts (docs/kernels.md, "Starting the next kernel early") are asked for
    where they were measured to pay: the norm's up to two sequences (with in_proj's early weight
    blocks: 4 under the trigger chain, 1 without it), the Hadamard's up to two (out_proj on the
    rows kernel), and the trigger chain of x_proj, the scan and out_proj up to two; never in a
    prefill. QUAMBA_DECODE_TRIGGER_CHAIN=0 gives the step as it was before the chain."""
    from quamba.kernels import triton as tk

    monkeypatch.setenv("QUAMBA_DECODE_TRIGGER_CHAIN", chain_switch)
    chain = early and chain_switch == "1"

    seen = {}
    for name, flag in (("rmsnorm_quant", "early_trigger"), ("int8_linear_conv_step", "early_weight"),
                       ("hadamard_quant", "early_trigger"), ("int8_linear_quant", "early_trigger"),
                       ("selective_scan_int8", "early_trigger"), ("int8_linear", "early_trigger")):
        real = getattr(tk, name)

        def spy(*a, _real=real, _name=name, _flag=flag, **k):
            seen.setdefault(_name, []).append(k.get(_flag, False))
            return _real(*a, **k)
        monkeypatch.setattr(tk, name, spy)
    layer = qmodel.backbone.layers[1]
    hidden = torch.randn(batch, 1, 192, device=DEVICE)
    try:
        assert qmodel.select_backend("triton") == "triton"
        with torch.no_grad():
            layer(hidden, torch.randn_like(hidden), qmodel.allocate_cache(batch).layers[1])
            layer(torch.randn(batch, 3, 192, device=DEVICE), None)   # a prefill: none of them
    finally:
        qmodel.select_backend("reference")
    assert seen["rmsnorm_quant"] == [early, False]
    assert seen["int8_linear_conv_step"] == [(4 if chain else 1) if early else 0]   # in_proj's early blocks
    assert seen["hadamard_quant"] == [early, False]
    assert seen["int8_linear_quant"] == [chain, False, False]   # x_proj; then the prefill's in_proj, x_proj
    assert seen["selective_scan_int8"] == [chain, False]
    assert seen["int8_linear"] == [chain, False]                # out_proj


@pytest.mark.parametrize("value,blocks", [(None, 4), ("1", 1), ("8", 8), ("3", None), ("four", None)])
def test_in_proj_early_blocks_switch(value, blocks, monkeypatch):
    from quamba.quantization import fused_block

    if value is None:
        monkeypatch.delenv("QUAMBA_IN_PROJ_EARLY_BLOCKS", raising=False)
    else:
        monkeypatch.setenv("QUAMBA_IN_PROJ_EARLY_BLOCKS", value)
    if blocks is None:
        with pytest.raises(ValueError, match=f"QUAMBA_IN_PROJ_EARLY_BLOCKS={value!r}"):
            fused_block._in_proj_early_blocks()
    else:
        assert fused_block._in_proj_early_blocks() == blocks


@pytest.mark.skipif(DEVICE != "cuda", reason="the early starts only change scheduling under PDL on a GPU")
@pytest.mark.parametrize("batch", [1, 2, 8])
def test_early_starts_change_no_bit_of_a_graphed_decode(qmodel, batch, monkeypatch):
    """The decode step captured with and without the early starts, over a few steps with a
    state carried between them: the same logits to the bit (a kernel that read, before its
    wait, something its neighbour was still writing would show here)."""
    from quamba.models.cuda_graph import GraphedDecoder

    ids = torch.randint(0, 8192, (batch, 4), device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(batch))
    runs = []
    try:
        qmodel.select_backend("triton")
        for early in ("1", "0"):
            monkeypatch.setenv("QUAMBA_IN_PROJ_EARLY", early)
            monkeypatch.setenv("QUAMBA_OUT_PROJ_EARLY", early)
            monkeypatch.setenv("QUAMBA_DECODE_TRIGGER_CHAIN", early)
            dec = GraphedDecoder(qmodel, batch)
            runs.append(torch.stack([dec.step(ids[:, t]).clone() for t in range(ids.shape[1])]))
            del dec
    finally:
        qmodel.select_backend("reference")
    assert torch.isfinite(runs[0]).all()
    assert torch.equal(runs[0], runs[1])
