"""GPU timing shared by the benchmark scripts (imported as ``_timing``: the scripts run as
``python benchmarks/NAME.py``, which puts this folder on the path).

``graph_us`` times kernels the way a decode step or a graphed prefill runs them: captured
in a CUDA graph back to back, so neither host launch cost nor the first call's
compilation shows. Give it calls on distinct inputs (weights) to keep L2 cold.
Eager timing of one call is ``quamba.eval.bench.median_ms``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

__all__ = ["captured", "graph_us"]


def captured(calls: Sequence[Callable[[], object]]) -> torch.cuda.CUDAGraph:
    """A CUDA graph of ``calls`` in order, replayed once (its first replay's set-up done)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for c in calls:
            c()
    graph.replay()
    torch.cuda.synchronize()
    return graph


def graph_us(calls: Sequence[Callable[[], object]], reps: int = 7) -> float:
    """Median GPU µs per call of a CUDA graph replaying ``calls`` in order (after two
    warm-up calls and one warm-up replay). Without CUDA (the Triton interpreter, to
    check a script's logic) one pass of wall time instead."""
    if not torch.cuda.is_available():
        t0 = time.perf_counter()
        for c in calls:
            c()
        return (time.perf_counter() - t0) * 1e6 / len(calls)
    for c in calls[:2]:
        c()
    torch.cuda.synchronize()
    graph = captured(calls)
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / len(calls))
    del graph
    return statistics.median(times)
