"""Causal depthwise conv1d (+ optional SiLU), reference implementation in PyTorch.

Continuing from a conv state makes prefill and single-token decode the same
function: the state holds the last ``width - 1`` inputs of each channel, and a
fresh sequence starts from zeros (which is exactly mamba-ssm's left padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["causal_conv1d_ref"]


def causal_conv1d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    conv_state: torch.Tensor | None = None,
    activation: str | None = "silu",
    compute_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (batch, seqlen, dim); weight: (dim, width); bias: (dim,);
    conv_state: (batch, dim, width - 1) of past inputs, or None for zeros.
    Returns out (batch, seqlen, dim) in x's dtype (math in compute_dtype: fp32, or fp64 in
    exact mode) and the new state
    (batch, dim, width - 1) in x's dtype.
    """
    batch, seqlen, dim = x.shape
    width = weight.shape[1]
    xt = x.transpose(1, 2)
    if conv_state is None:
        conv_state = xt.new_zeros(batch, dim, width - 1)
    full = torch.cat([conv_state.to(x.dtype), xt], dim=2)           # (b, d, width-1+L)
    new_state = full[:, :, full.shape[2] - (width - 1):].clone()
    out = F.conv1d(full.to(compute_dtype), weight.to(compute_dtype).unsqueeze(1),
                   None if bias is None else bias.to(compute_dtype), groups=dim)
    if activation == "silu":
        out = F.silu(out)
    elif activation is not None:
        raise ValueError(f"unsupported activation {activation!r}")
    return out.transpose(1, 2).to(x.dtype), new_state
