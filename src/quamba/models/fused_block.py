"""The floating-point Mamba block on the GPU: seven launches a layer (plus the split-K
reduce kernels cuBLAS adds to some small GEMVs: ~9 a layer in the 2.8b decode profile).

The same function as ``Block`` + ``MambaMixer`` (each Triton kernel is the twin
of the reference op the mixer calls), arranged as mamba-ssm's fused path is:

    add_rmsnorm(hidden + residual)    -> normed (model dtype), fp32 residual
    in_proj  (F.linear, cuBLAS)       -> xz
    causal_conv1d + SiLU              -> u (reads the x half of xz through its strides), conv state in place
    x_proj   (F.linear)               -> dt_low, B, C (views of one output)
    dt_proj  (F.linear, no bias)      -> dt
    selective_scan                    -> y (dt bias + softplus, D skip, SiLU(z) gate fused), fp32 state in place
    out_proj (F.linear)               -> output

The reference mixer spends about thirty more small kernels a layer on the
residual add, the norm, the conv's concatenation and casts and the state copies;
decoding is bound by those launches, not by the GEMVs.

``Block.forward`` takes this path by itself when :func:`fused_path_applies`
(CUDA tensors, Triton usable, no calibration tap, no online transform);
``QUAMBA_KERNELS=reference`` forces the reference path. CPU tensors take it only
under ``TRITON_INTERPRET=1`` with ``QUAMBA_KERNELS=triton`` (the tests): the
interpreter is far slower than PyTorch. Prefill replays per-shape CUDA graphs
(see models/prefill_graphs.py).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from quamba.kernels.dispatch import use_triton
from quamba.models.prefill_graphs import PrefillGraphs, graphable

if TYPE_CHECKING:
    from quamba.models.mamba import Block, LayerCache

__all__ = ["block_fits_fused_path", "fused_forward", "fused_forward_kernels", "fused_path_applies",
           "inputs_fit_fused_path"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def fused_path_applies(block: "Block", hidden: torch.Tensor, cache: "LayerCache | None") -> bool:
    """Whether ``block`` (whose mixer the caller has checked to be a plain
    MambaMixer) computes the same function through the fused kernels."""
    return block_fits_fused_path(block) and inputs_fit_fused_path(block, hidden, cache)


def block_fits_fused_path(block: "Block") -> bool:
    """The block's own conditions: no calibration tap, an fp32 residual, no online transform.
    They change only through what bumps the prefill graphs' model epoch (a tap set or cleared,
    a submodule assigned), so a whole stack's answer can be kept (prefill_graphs.stack_graphable)."""
    mixer = block.mixer
    if mixer.tap is not None or not block.residual_in_fp32:
        return False
    # SmoothQuant's channel scaling and the Hadamard rotation live there online.
    return type(mixer.x_proj_pre) is nn.Identity and type(mixer.out_proj_pre) is nn.Identity


def inputs_fit_fused_path(block: "Block", hidden: torch.Tensor, cache: "LayerCache | None") -> bool:
    """The call's conditions: shapes and dtypes, no autograd, Triton usable on hidden's device."""
    if hidden.dim() != 3 or hidden.dtype not in _FLOATS:
        return False
    if cache is not None and (cache.ssm_state.dtype not in _FLOATS or cache.conv_state.dtype not in _FLOATS):
        return False
    # The kernels have no backward: any trainable weight of the block (or a hidden state
    # that needs a gradient) keeps the autograd-capable reference path.
    if torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in block.parameters())):
        return False
    if hidden.is_cuda:
        return use_triton(hidden)
    if os.environ.get("QUAMBA_KERNELS") != "triton":
        return False
    from quamba.kernels.triton import triton_available

    return triton_available(hidden)


def fused_forward(block: "Block", hidden, residual, cache: "LayerCache | None" = None):
    """The block's forward on the fused path: a replayed CUDA graph for a repeated
    prefill shape, else the kernels launched one by one."""
    if graphable(hidden, residual):
        return PrefillGraphs.run(block, hidden, residual, cache)
    return fused_forward_kernels(block, hidden, residual, cache)


def fused_forward_kernels(block: "Block", hidden, residual, cache: "LayerCache | None" = None, out=None):
    """hidden: (batch, seqlen, d_model); residual: fp32 or None.
    Returns (mixer output in hidden's dtype, new residual fp32); the cache states
    are updated in place. out: optional (hidden_out, residual_out) buffers for the
    results (the prefill graphs' pair, which then needs no copy; they may be the inputs
    themselves: hidden is read only by the norm, before out_proj writes out)."""
    from quamba.kernels import triton as tk

    mixer = block.mixer
    cfg = mixer.config
    d, r, n = cfg.d_inner, cfg.dt_rank, cfg.d_state
    normed, residual = tk.add_rmsnorm(hidden, residual, block.norm.weight, block.norm.eps, hidden.dtype,
                                      residual_out=None if out is None else out[1])
    xz = F.linear(normed, mixer.in_proj.weight, mixer.in_proj.bias)
    conv_state = None if cache is None else cache.conv_state
    u, _ = tk.causal_conv1d(xz[..., :d], mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias,
                            conv_state, "silu", state_out=conv_state)
    x_dbl = F.linear(u, mixer.x_proj.weight)
    dt = F.linear(x_dbl[..., :r], mixer.dt_proj.weight)
    ssm_state = None if cache is None else cache.ssm_state
    y, _ = tk.selective_scan(u, dt, _state_matrix(block), x_dbl[..., r:r + n], x_dbl[..., r + n:],
                             mixer.D, xz[..., d:], mixer.dt_proj.bias, True, ssm_state, state_out=ssm_state)
    if out is not None and mixer.out_proj.bias is None:
        return torch.matmul(y, mixer.out_proj.weight.t(), out=out[0]), residual
    return F.linear(y, mixer.out_proj.weight, mixer.out_proj.bias), residual


def _state_matrix(block: "Block") -> torch.Tensor:
    """A = -exp(A_log) in fp32, kept between calls (three kernels a layer saved);
    recomputed when A_log changes (its address or version counter moves)."""
    a_log = block.mixer.A_log
    # Inference tensors have no version counter (and cannot change outside inference mode).
    key = (a_log.data_ptr(), 0 if a_log.is_inference() else a_log._version)
    hit = block.__dict__.get("_fused_state_matrix")
    if hit is not None and hit[0] == key:
        return hit[1]
    A = -torch.exp(a_log.detach().float())
    block.__dict__["_fused_state_matrix"] = (key, A)
    return A
