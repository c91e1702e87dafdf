"""Selective scan over int8 inputs (reference twin of the int8 Triton scan).

Dequantize every int8 input (x.float() * scale, per-tensor scales) and run
``selective_scan_ref`` with softplus on delta + dt_bias. The output is fp16
(it feeds the Hadamard / out_proj quantizer), the final state fp32.
"""

from __future__ import annotations

import torch

from .selective_scan_ref import selective_scan_ref

__all__ = ["selective_scan_int8_ref"]


def selective_scan_int8_ref(
    u_q: torch.Tensor, u_scale: torch.Tensor,
    dt_q: torch.Tensor, dt_scale: torch.Tensor,
    A: torch.Tensor,
    B_q: torch.Tensor, B_scale: torch.Tensor,
    C_q: torch.Tensor, C_scale: torch.Tensor,
    D: torch.Tensor | None,
    z_q: torch.Tensor | None, z_scale: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    initial_state: torch.Tensor | None = None,
    exact: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """u_q, dt_q, z_q: (batch, seqlen, dim) int8; B_q, C_q: (batch, seqlen, dstate) int8;
    scales: per-tensor fp32; A: (dim, dstate) fp32; D, dt_bias: (dim,) or None;
    initial_state: (batch, dim, dstate) fp32 (fp16/bf16 are read as fp32) or None.
    exact: exact numerics (kernels/numerics.py): the inputs dequantized exactly and the scan
    in fp64 (A as given, fp64 for the kernel's twin), y rounded to fp32 then fp16.
    Returns y (batch, seqlen, dim) fp16 and the final state (batch, dim, dstate) fp32."""
    acc = torch.float64 if exact else torch.float32
    u, dt, B, C = (q.to(acc) * s.to(acc) for q, s in ((u_q, u_scale), (dt_q, dt_scale), (B_q, B_scale),
                                                       (C_q, C_scale)))
    z = None if z_q is None else z_q.to(acc) * z_scale.to(acc)
    y, state = selective_scan_ref(u, dt, A, B, C, D, z, delta_bias=dt_bias, delta_softplus=True,
                                  initial_state=initial_state, compute_dtype=acc)
    return y.float().to(torch.float16), state.float()
