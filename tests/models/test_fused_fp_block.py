"""The fused fp block (models/fused_block.py) computes what the reference Block does.

On a GPU the fused path is what ``Block.forward`` takes by itself; on the CPU it
runs under TRITON_INTERPRET=1 when asked for with QUAMBA_KERNELS=triton. The
interpreter runs a prefill scan of the tiny model's width in about three
seconds a layer, so on the CPU the model keeps only its first layers; on a GPU
all eight, plus the prefill graphs.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn

pytest.importorskip("triton")

from quamba.api import load  # noqa: E402
from quamba.models import mamba  # noqa: E402
from quamba.models.fused_block import fused_path_applies  # noqa: E402
from quamba.models.mamba import LayerCache, MambaMixer  # noqa: E402
from quamba.quantization.config import ACTIVATION_POINTS  # noqa: E402

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"


def _tiny(dtype: str, cpu_layers: int = 2):
    model = load(None, dtype=dtype, device=DEVICE)
    if not ON_GPU:
        keep = cpu_layers
        model.backbone.layers = nn.ModuleList(list(model.backbone.layers)[:keep])
        model.config = dataclasses.replace(model.config, n_layer=keep)
    return model.eval()


@pytest.fixture
def fused_calls(monkeypatch):
    """The blocks that took the fused path, in call order (a GPU prefill's whole-stack graph
    counts each of its layers)."""
    from quamba.models.prefill_graphs import PrefillGraphs

    calls = []
    real, real_stack = mamba.fused_forward, PrefillGraphs.run_stack

    def spy(block, *args, **kwargs):
        calls.append(block)
        return real(block, *args, **kwargs)

    def spy_stack(model, layers, *args, **kwargs):
        calls.extend(layers)
        return real_stack(model, layers, *args, **kwargs)

    monkeypatch.setattr(mamba, "fused_forward", spy)
    monkeypatch.setattr(PrefillGraphs, "run_stack", staticmethod(spy_stack))
    return calls


def _ids(batch: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 8192, (batch, seqlen), generator=torch.Generator().manual_seed(seed)).to(DEVICE)


def _session(model, ids):
    """Prefill into a fresh cache, a prefill continued from it, then one-token decode steps."""
    cache = model.allocate_cache(ids.shape[0])
    with torch.no_grad():
        logits = [model(ids[:, :3], cache), model(ids[:, 3:6], cache)]
        logits += [model(ids[:, t:t + 1], cache) for t in range(6, ids.shape[1])]
    return logits, cache


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm())


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.float16])
def test_fused_model_matches_reference(monkeypatch, fused_calls, state_dtype):
    """Also with an fp16 state between calls: both paths round it once per call."""
    model = _tiny("fp32", cpu_layers=1)
    model.ssm_state_dtype = state_dtype
    tol = 1e-4 if state_dtype == torch.float32 else 2e-3
    ids = _ids(1, 9)
    monkeypatch.setenv("QUAMBA_KERNELS", "reference")
    ref, ref_cache = _session(model, ids)
    assert not fused_calls
    monkeypatch.setenv("QUAMBA_KERNELS", "triton")
    out, cache = _session(model, ids)
    assert len(fused_calls) == len(model.backbone.layers) * len(out)
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r, rtol=tol, atol=tol)
    assert cache.seqlen_offset == ref_cache.seqlen_offset == 9
    for layer, ref_layer in zip(cache.layers, ref_cache.layers):
        assert layer.ssm_state.dtype == ref_layer.ssm_state.dtype == state_dtype
        torch.testing.assert_close(layer.conv_state, ref_layer.conv_state, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.ssm_state.float(), ref_layer.ssm_state.float(), rtol=tol, atol=1e-5)


def test_fused_fp16_block_matches_reference(monkeypatch, fused_calls):
    """One fp16 block: a prefill with an incoming residual and no cache, then a
    decode step of batch 2 from a cache (both states updated in place)."""
    block = _tiny("fp16").backbone.layers[1]
    d_model, d_inner, d_state = 192, 384, 16
    g = torch.Generator().manual_seed(1)

    def randn(*shape, dtype=torch.float32, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=DEVICE, dtype=dtype)

    hidden, residual = randn(1, 3, d_model, dtype=torch.float16), randn(1, 3, d_model, scale=5.0)
    step, step_residual = randn(2, 1, d_model, dtype=torch.float16), randn(2, 1, d_model, scale=5.0)
    cache = LayerCache(randn(2, d_inner, 3, dtype=torch.float16), randn(2, d_inner, d_state))
    ref_cache = LayerCache(cache.conv_state.clone(), cache.ssm_state.clone())
    conv_ptr, ssm_ptr = cache.conv_state.data_ptr(), cache.ssm_state.data_ptr()
    with torch.no_grad():
        monkeypatch.setenv("QUAMBA_KERNELS", "reference")
        ref_out, ref_res = block(hidden, residual)
        ref_step, ref_step_res = block(step, step_residual, ref_cache)
        monkeypatch.setenv("QUAMBA_KERNELS", "triton")
        out, res = block(hidden, residual)
        out_step, step_res = block(step, step_residual, cache)
    assert len(fused_calls) == 2
    assert out.dtype == torch.float16 and res.dtype == torch.float32
    assert torch.equal(res, ref_res) and torch.equal(step_res, ref_step_res)
    assert _rel_err(out, ref_out) < 3e-3
    assert _rel_err(out_step, ref_step) < 3e-3
    assert cache.conv_state.data_ptr() == conv_ptr and cache.ssm_state.data_ptr() == ssm_ptr
    assert torch.equal(cache.conv_state, ref_cache.conv_state)
    assert _rel_err(cache.ssm_state, ref_cache.ssm_state) < 1e-4


def test_tap_falls_back_to_reference(monkeypatch, fused_calls):
    """A calibration tap must see every activation: that block runs the reference mixer."""
    model = _tiny("fp32")
    ids = _ids(2, 1)
    seen = []
    monkeypatch.setenv("QUAMBA_KERNELS", "reference")
    with torch.no_grad():
        ref = model(ids)
    monkeypatch.setenv("QUAMBA_KERNELS", "triton")
    tapped = model.backbone.layers[0].mixer
    tapped.tap = lambda name, t: (seen.append(name), t)[1]
    try:
        with torch.no_grad():
            out = model(ids)
    finally:
        tapped.tap = None
    assert set(seen) == set(ACTIVATION_POINTS)
    assert fused_calls == list(model.backbone.layers)[1:]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_dispatch_conditions(monkeypatch, fused_calls):
    model = _tiny("fp32")
    block = model.backbone.layers[0]
    hidden = torch.zeros(1, 1, 192, device=DEVICE)
    monkeypatch.setenv("QUAMBA_KERNELS", "triton")
    with torch.no_grad():
        assert fused_path_applies(block, hidden, None)
        assert not fused_path_applies(block, hidden.to(torch.int32), None)
        # An online transform. Set and restored by hand: how monkeypatch restores a submodule
        # (nn.Module keeps it in _modules, not __dict__) differs between pytest versions.
        identity = block.mixer.x_proj_pre
        block.mixer.x_proj_pre = nn.Sequential()
        try:
            assert not fused_path_applies(block, hidden, None)
        finally:
            block.mixer.x_proj_pre = identity
        monkeypatch.setattr(block, "residual_in_fp32", False)
        assert not fused_path_applies(block, hidden, None)
        monkeypatch.setattr(block, "residual_in_fp32", True)
        monkeypatch.setenv("QUAMBA_KERNELS", "reference")
        assert not fused_path_applies(block, hidden, None)
        if not ON_GPU:  # CPU tensors take the (slow) interpreter only when asked for
            monkeypatch.delenv("QUAMBA_KERNELS")
            assert not fused_path_applies(block, hidden, None)
    monkeypatch.setenv("QUAMBA_KERNELS", "triton")
    assert fused_path_applies(block, hidden, None)  # grad mode, but nothing requires grad
    assert not fused_path_applies(block, hidden.clone().requires_grad_(), None)  # the kernels have no backward
    block.norm.weight.requires_grad_(True)        # any trainable weight of the block, not only in_proj's
    try:
        assert not fused_path_applies(block, hidden, None)
    finally:
        block.norm.weight.requires_grad_(False)

    # A mixer that is not exactly MambaMixer (the quantized one shares Block) keeps the reference.
    class OtherMixer(MambaMixer):
        pass

    block.mixer.__class__ = OtherMixer
    try:
        with torch.no_grad():
            block(hidden, None)
    finally:
        block.mixer.__class__ = MambaMixer
    assert not fused_calls


@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a GPU")
def test_prefill_graphs_replay_the_eager_forward(fused_calls):
    """Calls 2 and 3 of a prefill shape capture and replay per-block CUDA graphs."""
    model = _tiny("fp16")
    ids = _ids(2, 37)
    runs = []
    with torch.inference_mode():
        for _ in range(3):
            cache = model.allocate_cache(2)
            logits = model(ids, cache).clone()
            runs.append((logits, [layer.ssm_state.clone() for layer in cache.layers]))
            logits = model(ids[:, :1], cache)   # decode continues from the graph-written state
            runs[-1] += (logits.clone(),)
    assert fused_calls
    eager = runs[0]
    for logits, states, step in runs[1:]:
        torch.testing.assert_close(logits, eager[0], rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(step, eager[2], rtol=1e-3, atol=1e-3)
        for s, e in zip(states, eager[1]):
            torch.testing.assert_close(s, e, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a GPU")
def test_prefill_graphs_after_a_freed_model(fused_calls):
    """A model freed after its prefill graphs were captured takes its graphs (and their
    memory pool) with it; the next model with the same prompt shape captures afresh
    (this used to fail inside the CUDA caching allocator)."""
    import gc

    ids = _ids(1, 33)
    for _ in range(2):
        model = _tiny("fp16")
        with torch.inference_mode():
            outs = [model(ids).clone() for _ in range(3)]   # eager, capture, replay
        torch.testing.assert_close(outs[2], outs[0], rtol=1e-3, atol=1e-3)
        del model
        gc.collect()


@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a GPU")
def test_a_freed_model_leaves_no_prefill_memory_behind():
    """The prefill graphs' shared buffers and pool go with the last block that used them
    (they used to stay allocated after the model was freed, inflating the next
    model's peak memory in `quamba bench`). No fused_calls spy here: it would keep
    the blocks alive. A first model runs the same prefill beforehand, so that cuBLAS's
    workspaces for the default and the (shared) capture stream exist already: they are
    global, and must not be freed under other tests' live graphs."""
    import gc

    from quamba.models.prefill_graphs import PrefillGraphs

    def allocated():
        gc.collect()
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()

    def prefills(model):
        with torch.inference_mode():
            for _ in range(3):                       # eager, capture, replay
                model(_ids(1, 65))

    prefills(_tiny("fp16"))
    before = allocated()
    model = _tiny("fp16")
    prefills(model)
    assert any(key[1] == (1, 65, model.config.d_model) for key in PrefillGraphs._shapes)
    del model
    assert allocated() == before
    assert not any(key[1][:2] == (1, 65) for key in PrefillGraphs._shapes)


@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a GPU")
def test_prefill_graph_replays_new_prompts(monkeypatch, fused_calls, stack_captures):
    """A captured prefill graph replayed on other prompts of the same shape gives what the
    eager kernels give on them (the graph reads its inputs, it did not bake them in)."""
    model = _tiny("fp16")
    prompts = [_ids(1, 33, seed=s) for s in range(4)]
    with torch.inference_mode():
        graphed = [model(ids).clone() for ids in prompts]       # eager, capture, replay, replay
        monkeypatch.setenv("QUAMBA_PREFILL_GRAPHS", "0")
        eager = [model(ids).clone() for ids in prompts]
    assert stack_captures == [model]                             # captured once, then replayed
    for g, e in zip(graphed, eager):
        torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(graphed[2], graphed[3])          # different prompts, different logits


@pytest.fixture
def stack_captures(monkeypatch):
    """The owners (blocks, or models for their whole-stack graphs) of each prefill graph captured."""
    from quamba.models.prefill_graphs import PrefillGraphs

    owners = []
    real = PrefillGraphs._capture

    def spy(self, owner, *args, **kwargs):
        owners.append(owner)
        return real(self, owner, *args, **kwargs)

    monkeypatch.setattr(PrefillGraphs, "_capture", spy)
    return owners


@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a GPU")
def test_prefill_stack_graph_gives_what_the_block_graphs_give(monkeypatch, stack_captures):
    """One graph of the whole layer stack (the default) computes what one graph a block does,
    with and without a cache (the states it writes in place included), on new prompts too."""
    model = _tiny("fp16")
    prompts = [_ids(1, 33, seed=s) for s in range(4)]

    def prefills():
        with torch.inference_mode():
            plain = [model(ids).clone() for ids in prompts]        # eager, capture, replay, replay
            cached = []
            for _ in range(3):
                cache = model.allocate_cache(1)
                logits = model(prompts[0], cache).clone()
                cached.append((logits, [layer.ssm_state.clone() for layer in cache.layers]))
        return plain, cached

    stack = prefills()
    assert stack_captures and all(owner is model for owner in stack_captures)
    monkeypatch.setenv("QUAMBA_PREFILL_GRAPHS", "block")
    stack_captures.clear()
    blocks = prefills()
    assert stack_captures and all(owner is not model for owner in stack_captures)
    for s, b in zip(stack[0], blocks[0]):
        torch.testing.assert_close(s, b, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(stack[0][2], stack[0][3])
    for (s, s_states), (b, b_states) in zip(stack[1], blocks[1]):
        torch.testing.assert_close(s, b, rtol=1e-3, atol=1e-3)
        for x, y in zip(s_states, b_states):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)


def _change_weights(model, how: str) -> list:
    """Change the model so that a stack graph captured before must not replay; return what must
    stay alive meanwhile (so the new weights cannot land where the old ones were)."""
    import copy

    layer = model.backbone.layers[1]
    with torch.no_grad():
        if how == "A_log in place":          # A = -exp(A_log) is derived on the host and baked in
            layer.mixer.A_log.mul_(0.5)
            return []
        if how == "moved":                   # .to() moves every weight
            old = [p.data for p in model.parameters()]
            model.cpu().cuda()
            layer.norm.weight.mul_(1.5)
            return old
        if how == "part moved":              # .to() on a part of a layer moves its weights only
            old = [p.data for p in layer.mixer.parameters()]
            layer.mixer.cpu().cuda()
            layer.mixer.D.mul_(3.0)
            return old
        if how == "assigned":                # a parameter replaced by another
            old = layer.norm.weight
            layer.norm.weight = nn.Parameter(old * 1.5, requires_grad=False)
            return [old]
        if how == "layer swapped":           # a layer replaced by another
            old = model.backbone.layers[1]
            model.backbone.layers[1] = copy.deepcopy(old)
            model.backbone.layers[1].norm.weight.mul_(1.5)
            return [old]
    raise ValueError(how)


@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("how", ["A_log in place", "moved", "part moved", "assigned", "layer swapped"])
def test_prefill_stack_graph_sees_changed_weights(monkeypatch, stack_captures, how):
    """The stack's key does not walk the model's modules on the host (that cost as much as the
    graph saves): replaced weights or layers bump an epoch, each graph keeps the addresses it
    reads (moved by .to()) and the versions of its host-derived values' sources. After each
    change the graphed prefill gives what the changed model gives eagerly."""
    model = _tiny("fp16")
    ids = _ids(1, 33)
    with torch.inference_mode():
        before = [model(ids).clone() for _ in range(3)]           # eager, capture, replay
    assert stack_captures == [model]
    keep = _change_weights(model, how)
    with torch.inference_mode():
        after = [model(ids).clone() for _ in range(3)]            # eager, capture, replay
        monkeypatch.setenv("QUAMBA_PREFILL_GRAPHS", "0")
        eager = model(ids).clone()
    del keep
    assert stack_captures == [model, model]
    assert not torch.allclose(eager, before[0], rtol=1e-2, atol=1e-2)
    for got in after:
        torch.testing.assert_close(got, eager, rtol=1e-3, atol=1e-3)


def _tiny_with_a_stack_graph():
    """The fp16 tiny model and a prompt whose stack graph has been run eagerly, captured and
    replayed."""
    model, ids = _tiny("fp16"), _ids(1, 33)
    with torch.inference_mode():
        for _ in range(3):
            model(ids)
    return model, ids


@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a GPU")
def test_prefill_stack_graph_steps_aside_for_a_tap(stack_captures):
    """A tap set after the stack graph was captured (as calibration does) sends the next
    prefill through the reference path, where the tap sees the activations: the stack keeps
    its answer to "does every layer fit the kernels" only until a tap or a module changes."""
    model, ids = _tiny_with_a_stack_graph()
    seen = []
    with torch.inference_mode():
        model.backbone.layers[1].mixer.tap = lambda name, tensor: seen.append(name) or tensor
        model(ids)
        model.backbone.layers[1].mixer.tap = None
        model(ids)
    assert stack_captures == [model]
    assert "y" in seen and len(seen) == len(set(seen))            # one tapped prefill, not two


@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a GPU")
def test_prefill_stack_graph_steps_aside_for_a_layer_hook(stack_captures):
    """A forward hook on a layer (registered after the capture, which bumps nothing) sends the
    prefill layer by layer, where the hook runs: the stack graph does not call the layers."""
    model, ids = _tiny_with_a_stack_graph()
    seen = []
    with torch.inference_mode():
        handle = model.backbone.layers[2].register_forward_hook(lambda *args: seen.append(1))
        model(ids)
        handle.remove()
        model(ids)
    assert stack_captures == [model] and seen == [1]
