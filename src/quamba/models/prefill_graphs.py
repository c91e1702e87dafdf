"""Prefill through per-shape CUDA graphs of each fused block.

Prefill (seqlen > 1) of a fused block is host-bound when launched from Python
(each kernel wrapper costs far more host time than its kernel at a few thousand
tokens), so from the second call with the same (batch, seqlen) each block
replays a CUDA graph of itself. Used by both fused blocks (the fp one in
models/fused_block.py, the W8A8 one in quantization/fused_block.py): a block
only needs ``_forward_kernels(hidden, residual, cache, out=None) -> (out, residual_fp32)``,
capturable (no host syncs, no allocations that outlive it but its outputs); given
``out=(hidden_buf, residual_buf)`` it should write its results there (no copy);
the buffers are its own inputs (in place), so it must finish reading hidden
before it writes the output, and update residual element by element, each read
before it is written.
A model whose every layer runs its kernels goes one step further: one graph of the whole
layer stack (``PrefillGraphs.run_stack``), so no graph ends between layers. Where one
per-block graph ended and the next began, the H100 idled 12-51 µs a layer, 2.4 ms of a
2.8b prefill of 2048 tokens (benchmarks/prefill_graph_gap_check.py, docs/benchmarks.md).
``QUAMBA_PREFILL_GRAPHS=0`` turns both off, ``QUAMBA_PREFILL_GRAPHS=block`` keeps the
per-block graphs only (A/B runs).

What a replay must not miss is checked on the host before it, with the GPU waiting, so the
stack's key is cheap: a process-wide model epoch (:func:`model_changed`), bumped where a
parameter, buffer or submodule is assigned anywhere (nn.Module's global registration hooks:
``load_state_dict(assign=True)``, layer swaps), by a backend switch and by a tap; the cache
states' addresses; and, kept with each graph, the version counters of the few tensors whose
host-derived values a capture bakes in (A = -exp(A_log), merged scale vectors:
``Block.graph_baked_sources``). ``.to()`` on a block, its mixer or its norm bumps the epoch too
(``MovesGraphedWeights``). A weight written in place needs nothing: the graph reads it. What
these do not see, call ``model_changed()`` after: ``.to()`` on a single linear layer inside a
mixer, ``p.data = t``, assigning a layer's ``__class__``.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections import OrderedDict

import torch
from torch.nn.modules import module as _nn_module

from quamba.errors import QuambaError
from quamba.kernels.numerics import exact_numerics

from quamba.models.cuda_graph import capture_stream

__all__ = ["MovesGraphedWeights", "PrefillGraphs", "graphable", "model_changed", "stack_graphable"]


def _graphs_mode() -> str:
    mode = os.environ.get("QUAMBA_PREFILL_GRAPHS", "1")
    if mode not in ("0", "1", "block"):
        raise QuambaError(f"QUAMBA_PREFILL_GRAPHS={mode!r}: use 1 (one graph of the layer stack), block "
                          f"(one graph a block) or 0 (no graphs)")
    return mode


def graphable(hidden: torch.Tensor, residual: torch.Tensor | None) -> bool:
    """Prefill on CUDA, no autograd, not inside another capture (a graphed decode step)."""
    if not hidden.is_cuda or hidden.dim() != 3 or hidden.shape[1] <= 1 or torch.is_grad_enabled():
        return False
    if _graphs_mode() == "0" or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return False
    if residual is not None and residual.dtype != torch.float32:
        return False
    return not torch.cuda.is_current_stream_capturing()


def _cache_key(cache) -> tuple | None:
    """A graph writes the conv and SSM states in place, by address, in the dtype and layout
    it was captured with. A later cache can reuse a freed one's memory with another state
    dtype (``ssm_state_dtype`` switched between fp32 and fp16): the same addresses must not
    replay the old graph, which would write fp32 states into an fp16 buffer."""
    if cache is None:
        return None
    return tuple((t.data_ptr(), t.dtype, tuple(t.shape), t.stride()) for t in (cache.conv_state, cache.ssm_state))


_model_epoch = 0


def model_changed(*_hook_args) -> None:
    """Invalidate every stack graph captured so far, and every stack's kept answer to whether
    its layers fit the kernels: some parameter, buffer or submodule was replaced, or a
    layer's path changed. Called by nn.Module's global registration hooks (registered below),
    ``select_backend``, ``MambaMixer.tap``'s setter and ``.to()`` on a block, mixer or norm
    (``MovesGraphedWeights``); call it after changing weights or a layer's path by other means
    (``.to()`` on a single linear layer, ``p.data = t``, assigning ``residual_in_fp32``)."""
    global _model_epoch
    _model_epoch += 1


# Assigning a parameter, buffer or submodule anywhere. Process-wide: building any module
# elsewhere in the process costs the stack graphs one eager call and a recapture, no more.
for _register in (_nn_module.register_module_parameter_registration_hook,
                  _nn_module.register_module_buffer_registration_hook,
                  _nn_module.register_module_module_registration_hook):
    _register(model_changed)


class MovesGraphedWeights:
    """Mixin for the modules of a layer: ``.to()`` / ``.half()`` / ``.cuda()`` on one of them
    (or anything above it) moves weights that captured graphs read by address."""

    def _apply(self, fn, recurse=True):
        model_changed()
        return super()._apply(fn, recurse)


_stack_fits: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # model -> (key, every layer fits)


def stack_graphable(model, hidden: torch.Tensor, cache) -> bool:
    """Whether one graph can hold this prefill through ``model``'s whole layer stack: the
    per-block conditions, no forward hooks on the layers (the stack does not call them), every
    layer fitting the fused kernels (``fits_kernels``: its own structure, kept per model epoch
    and layer types, since asking 64 layers cost ~0.9 ms of host time on the GPU machine, with
    the GPU waiting), and the inputs fitting them (the same for every layer, so asked of the
    first)."""
    if not graphable(hidden, None) or _graphs_mode() == "block":
        return False
    layers = model.backbone.layers
    if _nn_module._global_forward_pre_hooks or _nn_module._global_forward_hooks:   # process-wide hooks
        return False
    if any(layer._forward_hooks or layer._forward_pre_hooks for layer in layers):
        return False
    key = (_model_epoch, tuple(map(type, layers)))
    fits = _stack_fits.get(model)
    if fits is None or fits[0] != key:
        fits = _stack_fits[model] = (key, all(getattr(layer, "fits_kernels", None) is not None
                                              and layer.fits_kernels() for layer in layers))
    return fits[1] and layers[0].runs_kernels(hidden, None if cache is None else cache.layers[0])


def _layer_caches_key(cache) -> tuple | None:
    """``_cache_key`` of a whole model's cache, cheaper (the stack's key is checked on the host
    before every replay): every state's address and dtype, and the first layer's shapes and
    strides (InferenceCache.allocate lays every layer out alike)."""
    if cache is None:
        return None
    return (_cache_key(cache.layers[0]),
            tuple(v for layer in cache.layers for t in (layer.conv_state, layer.ssm_state)
                  for v in (t.data_ptr(), t.dtype)))


def _baked_versions(sources) -> tuple:
    return tuple(t._version for t in sources)


def _weights_key(block) -> tuple:
    """Where the block's weights live and how often they were written: a graph reads
    them by address, so replaced (``.to()``) or rewritten (``load_state_dict``) weights
    must not replay a graph captured before. Inference tensors have no version counter."""
    return tuple((t.data_ptr(), 0 if t.is_inference() else t._version)
                 for t in itertools.chain(block.parameters(), block.buffers()))


class PrefillGraphs:
    """CUDA graphs of fused block forwards, per (device, batch, seqlen, dtype).

    All blocks of one shape share a graph memory pool and one (hidden, residual)
    buffer pair, which every block updates in place: it reads hidden and residual
    from the pair and writes its output and the new residual back into it, so the
    next block takes them with no copy. In place is safe because a block is done
    with its input hidden once the residual add + RMSNorm has read it (out_proj
    writes the output last), and that kernel reads each residual row before it
    writes it. A ping-pong of two pairs would hold twice the memory (63 MB more at
    the 2.8b shape and 4096 tokens). The pool is shared because
    graphs are replayed in the order they were captured (layer order) and nothing
    a graph allocates outlives it except through the pair, so the pool holds about
    one block's intermediates. Hence a block's outputs are valid only until the next
    block with the same shape runs, and a block given the pair as its input
    overwrites it: a caller that keeps a layer's hidden state (per-layer outputs,
    two blocks fed the same input) must clone it first. A layer stack, which hands
    each output to the next block and drops it, needs no copies.

    A block is captured on its second call with a shape (the first compiles and
    autotunes its kernels eagerly); the cache tensors' addresses are part of the
    key (a graph writes the states in place). At most ``MAX_SHAPES`` shapes are
    kept, least recently used dropped. Graphs are held by weak reference to
    their block: a freed model's graphs go with it (and a shape's buffers with
    the last block that used them), and a new block that reuses
    a freed one's id never replays a graph of someone else's weights.
    """

    MAX_SHAPES = 2
    MAX_GRAPHS_PER_BLOCK = 4
    _shapes: OrderedDict = OrderedDict()
    _watched: weakref.WeakSet = weakref.WeakSet()   # blocks with a finalizer registered (one each)

    def __init__(self, hidden: torch.Tensor):
        self.pool = torch.cuda.graph_pool_handle()
        # The pair is allocated at the first capture, not here: a prompt length seen
        # once (eager) needs none, and the eager first call's activations would
        # otherwise peak on top of it.
        self.like = (tuple(hidden.shape), hidden.dtype, hidden.device)
        self.h: torch.Tensor | None = None
        self.r: torch.Tensor | None = None
        self.calls: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.graphs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.stack_keys: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # per model: keys run once
        self.captured = False

    @classmethod
    def _drop_unused(cls) -> None:
        """Called as a block dies (one finalizer per block, however many shapes it ran):
        drops every shape entry no live block uses any more, so the pair buffers and the
        graph pool go with the last model that used them (a freed model leaves no GPU
        memory behind). Dead weak references are cleared before finalizers run, so the
        dying block no longer counts."""
        for key, st in list(cls._shapes.items()):
            if not any(True for _ in st.calls.keys()):
                del cls._shapes[key]

    @classmethod
    def _shape_state(cls, owner, hidden) -> "PrefillGraphs":
        """The shape's pool and pair, with ``owner`` (a block, or a model for its stack)
        counted as a user of it."""
        key = (hidden.device, tuple(hidden.shape), hidden.dtype)
        st = cls._shapes.get(key)
        if st is not None and st.captured and not any(st.graphs.values()):
            # Every owner that had graphs here is gone, and with its graphs the private
            # pool was released: capturing into that pool again would fail. Start afresh.
            st = None
        if st is None:
            st = cls._shapes[key] = cls(hidden)
            while len(cls._shapes) > cls.MAX_SHAPES:
                cls._shapes.popitem(last=False)
        cls._shapes.move_to_end(key)
        if owner not in cls._watched:
            cls._watched.add(owner)
            weakref.finalize(owner, cls._drop_unused)
        st.calls[owner] = st.calls.get(owner, 0) + 1
        return st

    def _load_pair(self, hidden, residual) -> None:
        if self.h is None:
            shape, dtype, device = self.like
            self.h = torch.empty(shape, dtype=dtype, device=device)
            self.r = torch.empty(shape, dtype=torch.float32, device=device)
        # The previous block's output is already in the pair; anything else is copied in.
        if hidden.data_ptr() != self.h.data_ptr():
            self.h.copy_(hidden)
        if residual is not None and residual.data_ptr() != self.r.data_ptr():
            self.r.copy_(residual)

    def _capture(self, owner, gkey, forward) -> torch.cuda.CUDAGraph:
        """Capture ``forward(h, r)``, which must leave its results in the pair, into the
        shape's pool; kept as one of ``owner``'s graphs under ``gkey``."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=capture_stream(self.h.device)):
            forward(self.h, self.r)
        graphs = self.graphs.get(owner)
        if graphs is None:
            graphs = self.graphs[owner] = OrderedDict()
        graphs[gkey] = graph
        self.captured = True
        while len(graphs) > self.MAX_GRAPHS_PER_BLOCK:
            graphs.popitem(last=False)
        return graph

    def _graph(self, owner, gkey) -> torch.cuda.CUDAGraph | None:
        graphs = self.graphs.get(owner)
        graph = None if graphs is None else graphs.get(gkey)
        if graph is not None:
            graphs.move_to_end(gkey)
        return graph

    @staticmethod
    def _run_block(block, h, r, residual_given: bool, cache) -> None:
        out, res = block._forward_kernels(h, r if residual_given else None, cache, out=(h, r))
        # The blocks write straight into the pair; copy only what a block could not.
        if out.data_ptr() != h.data_ptr():
            h.copy_(out)
        if res.data_ptr() != r.data_ptr():
            r.copy_(res)

    @classmethod
    def run(cls, block, hidden, residual, cache):
        st = cls._shape_state(block, hidden)
        if st.calls[block] < 2:
            return block._forward_kernels(hidden, residual, cache)
        st._load_pair(hidden, residual)
        gkey = (residual is None, _cache_key(cache), _weights_key(block), exact_numerics())
        graph = st._graph(block, gkey)
        if graph is None:
            graph = st._capture(block, gkey, lambda h, r: cls._run_block(block, h, r, residual is not None, cache))
        graph.replay()
        return st.h, st.r

    @classmethod
    def run_stack(cls, model, layers, hidden, cache):
        """``layers`` (all of ``model``'s, each ``runs_kernels``) over the embedded prompt
        ``hidden`` as one graph: returns (hidden, fp32 residual) after the last layer, in
        the shape's pair (valid until the next prefill of that shape). A key's first call
        returns None: the caller runs the layers' ``_forward_kernels`` eagerly (they compile
        and autotune, and the host-derived values are computed; the caller's own loop frees
        each layer's input as it goes). Its second call captures, later ones replay.

        The key holds the model epoch (see :func:`model_changed`: a replaced or moved
        parameter, buffer or layer), the cache states' addresses and dtypes (the graph writes
        them in place) and the numerics mode. The graph keeps the version counters of the
        tensors its layers' baked values came from; a moved one makes the key new again.
        Checking every weight's address instead cost ~1.1 ms of host time a 2.8b prefill on
        the GPU machine (1150 tensors; docs/sweeps/prefill_stack_ab_ptrs_h100.json), with
        the GPU waiting. Inference tensors have no version counter: an in-place write to
        one (only possible in inference mode) is not seen."""
        st = cls._shape_state(model, hidden)
        gkey = (_model_epoch, _layer_caches_key(cache), exact_numerics())
        seen = st.stack_keys.setdefault(model, OrderedDict())
        graph = st._graph(model, gkey)
        if graph is not None and _baked_versions(graph.baked_sources) != graph.baked_versions:
            # A baked value's source was written: one eager call (which recomputes it), then a
            # new capture. The stale graph is kept until then: it may be all that holds the
            # shape's pool, which a capture cannot reuse once released.
            if not graph.stale:
                graph.stale = True
                seen.pop(gkey, None)
            graph = None
        if graph is None and gkey not in seen:
            seen[gkey] = None
            while len(seen) > 2 * cls.MAX_GRAPHS_PER_BLOCK:
                seen.popitem(last=False)
            return None
        st._load_pair(hidden, None)
        if graph is None:
            def forward(h, r):
                for i, layer in enumerate(layers):
                    cls._run_block(layer, h, r, i > 0, None if cache is None else cache.layers[i])

            graph = st._capture(model, gkey, forward)
            graph.baked_sources = [t for layer in layers for t in layer.graph_baked_sources() if not t.is_inference()]
            graph.baked_versions = _baked_versions(graph.baked_sources)
            graph.stale = False
            # Graphs of an earlier epoch can never replay, and their lists hold old weights.
            graphs = st.graphs[model]
            for old_key in [k for k in graphs if k[0] != _model_epoch]:
                del graphs[old_key]
        graph.replay()
        return st.h, st.r
