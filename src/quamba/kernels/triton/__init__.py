"""Triton GPU kernels, each the twin of a PyTorch reference in ``quamba.kernels``.

=============================  ==============================================
kernel (here)                  reference twin
=============================  ==============================================
int8_linear                    int8_linear_ref.int8_linear_ref
int8_linear_quant              quantize_ref(int8_linear_ref(...), out_scale)
int8_linear_conv_step          int8_linear_quant, then causal_conv1d_int8_ref on its first columns
int8_weight_linear             int8_weight_linear_ref.int8_weight_linear_ref
causal_conv1d_int8             causal_conv1d_int8_ref.causal_conv1d_int8_ref
causal_conv1d                  causal_conv1d_ref.causal_conv1d_ref
selective_scan_int8            selective_scan_int8_ref.selective_scan_int8_ref
selective_scan                 selective_scan_ref.selective_scan_ref
hadamard_quant                 hadamard_quant_ref.hadamard_quant_ref
rmsnorm_quant                  rmsnorm_quant_ref.rmsnorm_quant_ref
add_rmsnorm                    rmsnorm_quant_ref.add_rmsnorm_ref
=============================  ==============================================

Importing this package never fails: when Triton is missing, ``triton_available()``
is False and the kernel names are absent, so callers choose the backend
explicitly (and can log the choice) instead of meeting an ImportError mid-run.
"""

from __future__ import annotations

import os

import torch

try:
    import triton  # noqa: F401
    _TRITON_IMPORT_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    _TRITON_IMPORT_ERROR = exc

__all__ = ["triton_available", "triton_unavailable_reason"]

if _TRITON_IMPORT_ERROR is None:
    from .causal_conv1d import causal_conv1d
    from .causal_conv1d_int8 import causal_conv1d_int8
    from .hadamard_quant import hadamard_quant
    from .int8_linear import int8_linear, int8_linear_conv_step, int8_linear_quant
    from .int8_weight_linear import int8_weight_linear
    from .rmsnorm_quant import add_rmsnorm, rmsnorm_quant
    from .selective_scan import selective_scan, selective_scan_int8

    __all__ += ["int8_linear", "int8_linear_quant", "int8_linear_conv_step", "causal_conv1d_int8",
                "selective_scan_int8", "selective_scan", "hadamard_quant", "rmsnorm_quant", "causal_conv1d",
                "add_rmsnorm", "int8_weight_linear"]


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_unavailable_reason(x: torch.Tensor | torch.device | str | None = None) -> str | None:
    """None when the kernels can run on ``x`` (a tensor or device; None means
    the default CUDA device), else a sentence saying why not."""
    if _TRITON_IMPORT_ERROR is not None:
        return f"triton is not importable ({_TRITON_IMPORT_ERROR}); install quamba[gpu]"
    if _interpret():
        return None
    if x is None:
        return None if torch.cuda.is_available() else "no CUDA device (and TRITON_INTERPRET is not set)"
    device = x.device if isinstance(x, torch.Tensor) else torch.device(x)
    if device.type != "cuda":
        return f"tensors are on {device}, not CUDA (and TRITON_INTERPRET is not set)"
    return None


def triton_available(x: torch.Tensor | torch.device | str | None = None) -> bool:
    """Triton importable and (``x`` on CUDA, or TRITON_INTERPRET=1). With no
    argument: whether a CUDA device exists."""
    return triton_unavailable_reason(x) is None
