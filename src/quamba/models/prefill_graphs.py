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
``QUAMBA_PREFILL_GRAPHS=0`` turns this off.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections import OrderedDict

import torch

from quamba.kernels.numerics import exact_numerics

from quamba.models.cuda_graph import capture_stream

__all__ = ["PrefillGraphs", "graphable"]


def graphable(hidden: torch.Tensor, residual: torch.Tensor | None) -> bool:
    """Prefill on CUDA, no autograd, not inside another capture (a graphed decode step)."""
    if not hidden.is_cuda or hidden.dim() != 3 or hidden.shape[1] <= 1 or torch.is_grad_enabled():
        return False
    if os.environ.get("QUAMBA_PREFILL_GRAPHS", "1") == "0" or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
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
    def run(cls, block, hidden, residual, cache):
        key = (hidden.device, tuple(hidden.shape), hidden.dtype)
        st = cls._shapes.get(key)
        if st is not None and st.captured and len(st.graphs) == 0:
            # Every block that had graphs here is gone, and with its graphs the private
            # pool was released: capturing into that pool again would fail. Start afresh.
            st = None
        if st is None:
            st = cls._shapes[key] = cls(hidden)
            while len(cls._shapes) > cls.MAX_SHAPES:
                cls._shapes.popitem(last=False)
        cls._shapes.move_to_end(key)
        if block not in cls._watched:
            cls._watched.add(block)
            weakref.finalize(block, cls._drop_unused)
        st.calls[block] = st.calls.get(block, 0) + 1
        if st.calls[block] < 2:
            return block._forward_kernels(hidden, residual, cache)
        if st.h is None:
            shape, dtype, device = st.like
            st.h = torch.empty(shape, dtype=dtype, device=device)
            st.r = torch.empty(shape, dtype=torch.float32, device=device)
        # The previous block's output is already in the pair; anything else is copied in.
        if hidden.data_ptr() != st.h.data_ptr():
            st.h.copy_(hidden)
        if residual is not None and residual.data_ptr() != st.r.data_ptr():
            st.r.copy_(residual)
        gkey = (residual is None, _cache_key(cache), _weights_key(block), exact_numerics())
        graphs = st.graphs.get(block)
        if graphs is None:
            graphs = st.graphs[block] = OrderedDict()
        graph = graphs.get(gkey)
        if graph is None:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=st.pool, stream=capture_stream(hidden.device)):
                out, res = block._forward_kernels(st.h, None if residual is None else st.r, cache,
                                                  out=(st.h, st.r))
                # The blocks write straight into the pair; copy only what a block could not.
                if out.data_ptr() != st.h.data_ptr():
                    st.h.copy_(out)
                if res.data_ptr() != st.r.data_ptr():
                    st.r.copy_(res)
            del out, res
            graphs[gkey] = graph
            st.captured = True
            while len(graphs) > cls.MAX_GRAPHS_PER_BLOCK:
                graphs.popitem(last=False)
        graph.replay()
        return st.h, st.r
