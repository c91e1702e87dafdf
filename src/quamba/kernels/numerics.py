"""Numerics mode: ``fast`` (default) or ``exact`` (the same bits on the CPU and the GPU).

The W8A8 model's integer work (the int8 GEMMs' int32 sums) is exact everywhere and its
fp32 epilogues round alike on both backends. What is left differs in the last bits between
a CPU and a GPU: the transcendental functions (the GPU's ``ex2.approx`` against PyTorch's
SLEEF on the CPU), and the order of long float sums (a chunked scan, a tree reduction, a
tensor-core tile). A last bit that moves y across an fp16 rounding boundary, or a logit
across another one, is enough to flip a near-tie in greedy decoding a few tokens later.

``QUAMBA_NUMERICS=exact`` computes exactly that float work in fp64 and rounds the result
once, at the point where the fast path hands it on (to fp32, then to int8 or fp16): the
RMSNorms, the conv's dequantize + bias + SiLU, the selective scan (its whole recurrence),
the Hadamard rotation and the LM head. Where the two sides' fp64 results are k fp64 ulps
apart (different exp implementations, sums in another order, a long recurrence or a
cancellation make k larger than 1), they round to different fp32 values only where the
value lies within k ulps of an fp32 rounding boundary: about k * 2^-29 of the values. So
outputs are the same bits almost always, not by construction (the Hadamard's fp16 sums are
the exception: exact in fp64 in any order). Measured on mamba1-ref-31m on an H100: 17 of 17
prompts give the same 64 greedy tokens, and the logits compared are bit-identical
(docs/benchmarks.md); a 2.8b model rounds millions of values a token, so a rare mismatch
there is expected. Slower (the GPU scan runs its serial kernel in fp64), so it is a mode for
checking and for reproducible outputs, not for serving.

For quantized models: a float model's GEMMs sum floats in an order each device chooses, so
the CLI's ``--exact`` refuses one (under the variable, only its norms and head would change).
Read when a model runs; a CUDA graph keeps the mode it was captured in, and a reference
model's cache belongs to the mode it was allocated in (its conv state is fp64 in exact mode).
"""

from __future__ import annotations

import os

import torch

__all__ = ["NUMERICS_ENV", "exact_linear", "exact_numerics", "fp32_eps"]

NUMERICS_ENV = "QUAMBA_NUMERICS"
_MODES = ("fast", "exact")


def exact_numerics() -> bool:
    """True when ``QUAMBA_NUMERICS=exact``; a clear error for an unknown value."""
    mode = os.environ.get(NUMERICS_ENV, "fast")
    if mode not in _MODES:
        from quamba.errors import QuambaError

        raise QuambaError(f"{NUMERICS_ENV}={mode!r} is not a numerics mode: use one of {', '.join(_MODES)}")
    return mode == "exact"


def fp32_eps(eps: float) -> float:
    """eps as the kernels see it (a Python float argument reaches a Triton kernel as fp32),
    so that exact mode adds the same eps on both backends."""
    return float(torch.tensor(eps, dtype=torch.float32))


def exact_linear(x: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor | None = None,
                 rows_per_block: int = 8192) -> torch.Tensor:
    """x @ weight.T (times a per-row scale after the sum) in fp64, rounded once to fp32: the
    LM head in exact mode. The weight is converted to fp64 a block of rows at a time, so the
    temporary stays small (a 2.8b head is 50280 rows: 1 GB in fp64 at once)."""
    x64 = x.double()
    out = torch.empty(*x.shape[:-1], weight.shape[0], dtype=torch.float32, device=x.device)
    for start in range(0, weight.shape[0], rows_per_block):
        block = torch.nn.functional.linear(x64, weight[start:start + rows_per_block].double())
        if row_scale is not None:
            block = block * row_scale[start:start + rows_per_block].double()
        out[..., start:start + rows_per_block] = block
    return out
