"""Scan inputs for the scan benchmarks (imported as ``_scan_inputs``, like ``_timing``): int8
tensors laid out as the W8A8 block passes them (u and z strided halves of in_proj's output, B
and C strided slices of x_proj's), per-tensor scales, and their float twins."""

from __future__ import annotations

import torch

__all__ = ["int8_scan_inputs", "float_scan_inputs"]


def int8_scan_inputs(batch: int, seqlen: int, dim: int, dstate: int = 16) -> dict:
    """Keyword arguments of ``selective_scan_int8`` with random values, on the GPU."""
    i8 = lambda *s: torch.randint(-127, 128, s, dtype=torch.int8, device="cuda")   # noqa: E731
    s = lambda v: torch.tensor(v, device="cuda")                                  # noqa: E731
    xz, dbl = i8(batch, seqlen, 2 * dim), i8(batch, seqlen, 2 * dstate)
    return dict(u_q=xz[..., :dim], u_scale=s(0.02), dt_q=i8(batch, seqlen, dim), dt_scale=s(0.01),
                A=-torch.exp(torch.rand(dim, dstate, device="cuda") * 2.5), B_q=dbl[..., :dstate], B_scale=s(0.03),
                C_q=dbl[..., dstate:], C_scale=s(0.03), D=torch.randn(dim, device="cuda"), z_q=xz[..., dim:],
                z_scale=s(0.04), dt_bias=torch.randn(dim, device="cuda") - 4,
                initial_state=torch.randn(batch, dim, dstate, device="cuda"))


def float_scan_inputs(a: dict, dtype=torch.float16, bc_dtype=None, gate: bool = True, softplus: bool = True) -> dict:
    """Keyword arguments of ``selective_scan`` with the dequantized values of ``a`` (u, dt and z
    in ``dtype``, B and C in ``bc_dtype``, default ``dtype``); without the gate or the softplus
    when asked."""
    f = lambda q, sc: (q.float() * a[sc]).contiguous()   # noqa: E731
    bc_dtype = bc_dtype or dtype
    return dict(u=f(a["u_q"], "u_scale").to(dtype), delta=f(a["dt_q"], "dt_scale").to(dtype), A=a["A"],
                B=f(a["B_q"], "B_scale").to(bc_dtype), C=f(a["C_q"], "C_scale").to(bc_dtype), D=a["D"],
                z=f(a["z_q"], "z_scale").to(dtype) if gate else None, delta_bias=a["dt_bias"],
                delta_softplus=softplus, initial_state=a["initial_state"])
