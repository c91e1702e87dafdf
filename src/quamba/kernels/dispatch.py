"""Backend choice for the ops the floating-point paths share: Triton on CUDA, PyTorch elsewhere.

Explicit and logged, never a silent fallback: ``QUAMBA_KERNELS=reference`` forces
the PyTorch twins everywhere (for debugging a kernel against its reference).
"""

from __future__ import annotations

import logging
import os

import torch

from quamba.kernels.selective_scan_ref import selective_scan_ref

__all__ = ["selective_scan", "use_triton"]

log = logging.getLogger("quamba.kernels")
_announced: set[str] = set()


def use_triton(x: torch.Tensor) -> bool:
    """Triton kernels for tensors on CUDA, unless QUAMBA_KERNELS=reference."""
    if not x.is_cuda or os.environ.get("QUAMBA_KERNELS", "auto") == "reference":
        return False
    from quamba.kernels.triton import triton_unavailable_reason

    reason = triton_unavailable_reason(x)
    if reason is not None and "cuda-no-triton" not in _announced:
        _announced.add("cuda-no-triton")
        log.warning("CUDA tensors but the PyTorch reference kernels run: %s", reason)
    return reason is None


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, initial_state=None):
    """Same signature and result as :func:`selective_scan_ref` (see there for shapes)."""
    if u.dtype in (torch.float16, torch.bfloat16, torch.float32) and use_triton(u):
        from quamba.kernels.triton import selective_scan as triton_scan

        return triton_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
