"""Selective scan (Mamba-1's SSM), reference implementation in PyTorch.

Recurrence, per channel d and state index n (A diagonal)::

    dt_t  = softplus(delta_t + delta_bias)
    h_t   = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t   = <C_t, h_t> + D * u_t,    then y_t *= silu(z_t)

This is the twin of the Triton kernels and the CPU path of the library, so it
is written for speed on CPU too: everything except the recurrence itself is
computed for a whole chunk of timesteps at once, and the recurrence is one
fused multiply-add per timestep on a (batch, dim, dstate) slab, done in place.
All arithmetic is fp32 whatever the input dtype (the state must not be
rounded to fp16 between steps: errors would compound over thousands of steps),
or fp64 with ``compute_dtype=torch.float64`` (exact numerics, kernels/numerics.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_ref"]


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
    compute_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the scan over a sequence, optionally continuing from a state.

    u, delta, z: (batch, seqlen, dim); A: (dim, dstate); B, C: (batch, seqlen, dstate);
    D, delta_bias: (dim,); initial_state: (batch, dim, dstate) fp32 (fp16/bf16 are read as fp32) or None (zeros).
    Returns y: (batch, seqlen, dim) in u's dtype and the final state (batch, dim, dstate)
    in compute_dtype (fp32, or fp64 in exact mode: the caller rounds it once where it stores it).
    """
    batch, seqlen, dim = u.shape
    dstate = A.shape[1]
    out_dtype = u.dtype
    u, delta, A, B, C = (t.to(compute_dtype) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute_dtype)
    if delta_softplus:
        delta = F.softplus(delta)
    if initial_state is None:
        state = u.new_zeros(batch, dim, dstate)
    else:
        state = initial_state.to(compute_dtype)
    y = torch.empty_like(u)
    for start in range(0, seqlen, chunk_size):
        stop = min(start + chunk_size, seqlen)
        dt = delta[:, start:stop]                                    # (b, T, d)
        decay = torch.exp(dt.unsqueeze(-1) * A)                       # (b, T, d, n)
        # states[:, t] starts as the input term dt*B*u and becomes h_t in place.
        states = (dt * u[:, start:stop]).unsqueeze(-1) * B[:, start:stop].unsqueeze(2)
        states[:, 0].addcmul_(decay[:, 0], state)
        for t in range(1, stop - start):
            states[:, t].addcmul_(decay[:, t], states[:, t - 1])
        state = states[:, -1].clone()
        y[:, start:stop] = torch.einsum("btdn,btn->btd", states, C[:, start:stop])
    if D is not None:
        y = y + u * D.to(compute_dtype)
    if z is not None:
        y = y * F.silu(z.to(compute_dtype))
    return y.to(out_dtype), state
