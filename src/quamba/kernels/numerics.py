"""Numerics mode: ``fast`` (default) or ``exact`` (the same bits on the CPU and the GPU).

The W8A8 model's integer work (the int8 GEMMs' int32 sums) is exact everywhere and its
fp32 epilogues round alike on both backends. What is left differs in the last bits between
a CPU and a GPU: the transcendental functions (the GPU's ``ex2.approx`` against the CPU's
libm), and the order of long float sums (a chunked scan, a tree reduction, a tensor-core
tile). A last bit that moves y across an fp16 rounding boundary, or a logit across another
one, is enough to flip a near-tie in greedy decoding a few tokens later.

``QUAMBA_NUMERICS=exact`` computes exactly that float work in fp64 and rounds the result
once, at the point where the fast path hands it on (to fp32, then to int8 or fp16): the
RMSNorms, the conv's dequantize + bias + SiLU, the selective scan (its whole recurrence),
the Hadamard rotation and the LM head. fp64 keeps ~29 bits below fp32's last one, so two
accurate fp64 evaluations in different orders round to the same fp32 value except with
probability ~2^-29 per value: the CPU reference and the Triton kernels then produce the
same int8 activations, the same fp16 y and the same logits. Slower (the GPU scan runs its
serial kernel in fp64), so it is a mode for checking and for reproducible outputs, not for
serving. Read when a model runs (a CUDA graph keeps the mode it was captured in).
"""

from __future__ import annotations

import os

import torch

__all__ = ["NUMERICS_ENV", "compute_dtype", "exact_linear", "exact_numerics", "fp32_eps"]

NUMERICS_ENV = "QUAMBA_NUMERICS"
_MODES = ("fast", "exact")


def exact_numerics() -> bool:
    """True when ``QUAMBA_NUMERICS=exact``; a clear error for an unknown value."""
    mode = os.environ.get(NUMERICS_ENV, "fast")
    if mode not in _MODES:
        from quamba.errors import QuambaError

        raise QuambaError(f"{NUMERICS_ENV}={mode!r} is not a numerics mode: use one of {', '.join(_MODES)}")
    return mode == "exact"


def compute_dtype() -> torch.dtype:
    """The dtype of the order-sensitive float work: fp64 in exact mode, else fp32."""
    return torch.float64 if exact_numerics() else torch.float32


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
