"""int8 x int8 -> int32 linear layer with a dequantizing epilogue (reference twin).

out = (x_q @ w_q^T) * (x_scale * w_scale) + bias, accumulated exactly in int32 and
dequantized in fp32 in the kernels' order.
``torch._int_mm`` does the integer product where the backend supports the shape;
otherwise fp64 matmul of the int8 values is used, which is exact for any K below
2**53 / 127**2 (far beyond every Mamba width).
"""

from __future__ import annotations

import torch

__all__ = ["int8_matmul_ref", "int8_linear_ref"]


def int8_matmul_ref(x_q: torch.Tensor, w_q: torch.Tensor) -> torch.Tensor:
    """x_q: (M, K) int8, w_q: (N, K) int8 -> (M, N) int32, exact."""
    m, k = x_q.shape
    n = w_q.shape[0]
    # _int_mm on CUDA needs M > 16 and K, N multiples of 8; CPU takes any shape.
    if x_q.device.type == "cpu" or (m > 16 and k % 8 == 0 and n % 8 == 0):
        try:
            return torch._int_mm(x_q.contiguous(), w_q.t())
        except RuntimeError:
            pass
    return (x_q.double() @ w_q.double().t()).to(torch.int32)


def int8_linear_ref(
    x_q: torch.Tensor,
    w_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """x_q: (..., K) int8; w_q: (N, K) int8; x_scale: scalar or (..., 1) per token;
    w_scale: scalar or (N,) per output channel. Returns (..., N) in out_dtype."""
    lead = x_q.shape[:-1]
    acc = int8_matmul_ref(x_q.reshape(-1, x_q.shape[-1]), w_q).reshape(*lead, w_q.shape[0])
    if x_scale.dim() > 0:
        x_scale = x_scale.reshape(*lead, 1)
    # The kernels' fp32 epilogue, operation for operation: fl(fl(acc) * fl(x_scale * w_scale)),
    # then + bias. The same operations give the same bits, so a requantized output (x, z, dt, B, C)
    # is the same int8 here and on the GPU. A correctly rounded fp64 epilogue differs from it in
    # the last bit now and then, which moves a value across an int8 rounding boundary (measured on
    # mamba1-ref-31m: 8-30 of 1.3M in_proj outputs over a 1024-token prefill), and those flips
    # compound through the recurrence until greedy decoding diverges.
    out = acc.float() * (x_scale.float() * w_scale.float())
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)
