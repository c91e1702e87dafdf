"""What invalidates a prefill stack graph, checked on the CPU (the graphs themselves need a GPU:
tests/models/test_fused_fp_block.py replays them there after each of these changes).

A stack graph reads every weight by address and keys on a process-wide model epoch instead of
walking the model before each replay (models/prefill_graphs.py). So whatever moves or replaces a
weight, or changes which path a layer takes, must bump the epoch; an in-place write must not
need to (the graph reads the new values), and a forward must not bump it (or no graph would
ever replay).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from quamba.api import load
from quamba.errors import QuambaError
from quamba.models import prefill_graphs as pg
from quamba.models.mamba import InferenceCache, LayerCache


@pytest.fixture(scope="module")
def model():
    return load(None, dtype="fp32", device="cpu").eval()


def _bumps(action) -> bool:
    before = pg._model_epoch
    action()
    return pg._model_epoch != before


def _swap_layer(model):
    model.backbone.layers[1] = copy.deepcopy(model.backbone.layers[1])


@pytest.mark.parametrize("name,action", [
    ("model .to()", lambda m: m.to(torch.float32)),
    ("mixer .to()", lambda m: m.backbone.layers[0].mixer.to(torch.float32)),
    ("norm .to()", lambda m: m.backbone.layers[0].norm.float()),
    ("parameter assigned", lambda m: setattr(m.backbone.layers[0].norm, "weight",
                                             nn.Parameter(m.backbone.layers[0].norm.weight.detach().clone()))),
    ("buffer registered", lambda m: m.backbone.layers[0].register_buffer("probe", torch.zeros(1))),
    ("layer swapped", _swap_layer),
    ("tap set", lambda m: setattr(m.backbone.layers[0].mixer, "tap", None)),
    ("load_state_dict(assign=True)", lambda m: m.load_state_dict(m.state_dict(), assign=True)),
])
def test_changes_that_move_or_replace_weights_bump_the_epoch(model, name, action):
    assert _bumps(lambda: action(model)), name


def test_forwards_and_in_place_writes_do_not_bump_the_epoch(model):
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        assert not _bumps(lambda: model(ids))
        cache = model.allocate_cache(1)
        assert not _bumps(lambda: (model(ids, cache), model(ids[:, :1], cache)))
        # Read by address, an in-place write needs no new graph (host-derived values are
        # checked by their sources' version counters instead: graph_baked_sources).
        assert not _bumps(lambda: model.backbone.layers[0].mixer.D.mul_(1.0))


def test_the_stack_steps_aside_for_hooks_taps_and_other_layers(model, monkeypatch):
    """stack_graphable past its CUDA conditions (patched to pass here; the interpreter makes
    the layers' own conditions pass): its kept answer follows taps and layer swaps, and layer
    hooks, which the stack would not call, send the prefill layer by layer."""
    monkeypatch.setattr(pg, "graphable", lambda hidden, residual: True)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("QUAMBA_KERNELS", "triton")
    pytest.importorskip("triton")
    hidden = torch.zeros(1, 5, model.config.d_model)
    layer = model.backbone.layers[1]
    with torch.no_grad():                     # the kernels have no backward
        assert pg.stack_graphable(model, hidden, None)
        handle = layer.register_forward_hook(lambda *args: None)
        assert not pg.stack_graphable(model, hidden, None)
        handle.remove()
        layer.mixer.tap = lambda name, tensor: tensor
        assert not pg.stack_graphable(model, hidden, None)
        layer.mixer.tap = None
        assert pg.stack_graphable(model, hidden, None)
        fused_class = type(layer)

        class Unfused(fused_class):
            def fits_kernels(self) -> bool:
                return False

        layer.__class__ = Unfused                 # bumps nothing: the kept answer keys on layer types
        assert not pg.stack_graphable(model, hidden, None)
        layer.__class__ = fused_class
        assert pg.stack_graphable(model, hidden, None)
        monkeypatch.setenv("QUAMBA_PREFILL_GRAPHS", "block")
        assert not pg.stack_graphable(model, hidden, None)
        monkeypatch.setenv("QUAMBA_PREFILL_GRAPHS", "sometimes")
        with pytest.raises(QuambaError, match="QUAMBA_PREFILL_GRAPHS='sometimes'"):
            pg.stack_graphable(model, hidden, None)


def test_a_cache_of_another_state_dtype_at_the_same_addresses_is_another_key(model):
    """A freed fp32 cache's memory can come back as an fp16 one: the stack must not replay the
    graph that writes fp32 states there (in any layer, not only the first)."""
    cache = model.allocate_cache(1)
    n = model.config.d_state
    aliased = InferenceCache([LayerCache(layer.conv_state, layer.ssm_state.view(torch.float16)[..., :n])
                              if i == len(cache.layers) - 1 else layer for i, layer in enumerate(cache.layers)])
    assert aliased.layers[-1].ssm_state.data_ptr() == cache.layers[-1].ssm_state.data_ptr()
    assert pg._layer_caches_key(aliased) != pg._layer_caches_key(cache)
    assert pg._layer_caches_key(cache) == pg._layer_caches_key(cache) and pg._layer_caches_key(None) is None
