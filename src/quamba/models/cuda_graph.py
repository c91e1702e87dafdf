"""Decoding through a CUDA graph: one graph launch per token.

A decode step of a Mamba model is hundreds of small kernels (about eleven per
layer for W8A8); launched from Python each costs more host time than GPU time.
Captured once per batch size, the step replays with a single launch. The graph
reads its input ids from, and writes logits and the recurrent state to, fixed
buffers: prefill writes into ``decoder.cache`` in place, then ``step`` replays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from quamba.models.mamba import InferenceCache

__all__ = ["GraphedDecoder", "capture_stream"]

_CAPTURE_STREAMS: dict[int, torch.cuda.Stream] = {}


def capture_stream(device: torch.device) -> torch.cuda.Stream:
    """One side stream per device for every warm-up and capture (decode and prefill graphs):
    cuBLAS keeps a workspace (32 MiB on Hopper) for each stream it has run on, so a fresh
    stream per graph would leave one more behind each time."""
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    if index not in _CAPTURE_STREAMS:
        _CAPTURE_STREAMS[index] = torch.cuda.Stream(device=index)
    return _CAPTURE_STREAMS[index]


class GraphedDecoder:
    def __init__(self, model, batch: int, warmup: int = 2):
        if model.device.type != "cuda":
            raise ValueError("CUDA graphs need a model on a CUDA device")
        self.model = model
        self.cache: InferenceCache = model.allocate_cache(batch)
        self.ids = torch.zeros(batch, 1, dtype=torch.long, device=model.device)
        side = capture_stream(model.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(warmup):  # compiles and autotunes every kernel before capture
                model(self.ids, self.cache)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph, stream=side):
            self.logits = model(self.ids, self.cache)[:, -1]
        self.reset()

    def reset(self) -> None:
        """Zero the recurrent state (a new sequence)."""
        for layer in self.cache.layers:
            layer.conv_state.zero_()
            layer.ssm_state.zero_()
        self.cache.seqlen_offset = 0

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Run the prompt eagerly into the graph's cache; returns the last logits (batch, vocab)."""
        with torch.inference_mode():
            return self.model(input_ids, self.cache, num_last_tokens=1)[:, -1]

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (batch,) or (batch, 1) -> logits (batch, vocab); a view of a fixed buffer."""
        self.ids.copy_(ids.view(-1, 1))
        self.graph.replay()
        return self.logits
