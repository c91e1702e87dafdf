"""The W8A8 block on the GPU: Triton kernels, int8 between every pair of them.

The same function as ``Block`` + ``QMambaMixer`` in static mode (each kernel is the
twin of a reference op), arranged so that no activation travels in fp16 when int8
will do and each step is one launch:

    rmsnorm_quant(hidden + residual)       -> int8 normed input, fp32 residual
    int8_linear_quant x2 (in_proj halves)  -> int8 x, int8 z   (two scales: two launches)
    causal_conv1d_int8 + SiLU              -> int8 u (the percentile scale), int8 conv state
    int8_linear_quant x3 (x_proj rows)     -> int8 dt_low, B, C
    int8_linear_quant (dt_proj)            -> int8 dt
    selective_scan_int8                    -> fp16 y (D skip, SiLU(z) gate fused), fp32 state
    hadamard_quant                         -> int8 y in the rotated space
    int8_linear (out_proj)                 -> fp16 output

About eleven launches a layer; decoding captures the whole model in a CUDA
graph so a token costs one launch from the host.
"""

from __future__ import annotations

import torch

from quamba.kernels.quantize_ref import quantize_ref
from quamba.models.mamba import Block, LayerCache

__all__ = ["FusedQBlock", "fused_path_unsupported"]


def fused_path_unsupported(qconfig) -> str | None:
    """Why a config cannot take the fused int8 path (None when it can)."""
    if qconfig.activations != "static":
        return "dynamic activation scales are computed per token at run time (reference path)"
    if qconfig.smoothquant_alpha is not None:
        return "SmoothQuant's per-channel input scaling is not fused into the kernels (reference path)"
    return None


class FusedQBlock(Block):
    """A Block whose mixer is a static, unsmoothed QMambaMixer, run with the Triton kernels."""

    def forward(self, hidden, residual, cache: LayerCache | None = None):
        from quamba.kernels import triton as tk

        mixer = self.mixer
        cfg, ssm = mixer.config, mixer.ssm
        batch, seqlen, _ = hidden.shape
        out_dtype = hidden.dtype
        hq, residual = tk.rmsnorm_quant(hidden, residual, self.norm.weight, self.norm.eps, mixer.in_proj.input_scale)
        w, ws = mixer.in_proj.weight, mixer.in_proj.weight_scale
        d = cfg.d_inner
        xq = tk.int8_linear_quant(hq, w[:d], mixer.in_proj.input_scale, _rows(ws, 0, d), None,
                                  mixer.conv1d.input_scale)
        zq = tk.int8_linear_quant(hq, w[d:], mixer.in_proj.input_scale, _rows(ws, d, 2 * d), None, ssm.z_scale)
        uq, conv_state = tk.causal_conv1d_int8(
            xq, mixer.conv1d.input_scale, mixer.conv1d.weight, mixer.conv1d.weight_scale, mixer.conv1d.bias,
            None if cache is None else cache.conv_state, mixer.x_proj.input_scale)
        us = mixer.x_proj.input_scale
        w, ws = mixer.x_proj.weight, mixer.x_proj.weight_scale
        r, n = cfg.dt_rank, cfg.d_state
        lq = tk.int8_linear_quant(uq, w[:r], us, _rows(ws, 0, r), None, mixer.dt_proj.input_scale)
        Bq = tk.int8_linear_quant(uq, w[r:r + n], us, _rows(ws, r, r + n), None, ssm.B_scale)
        Cq = tk.int8_linear_quant(uq, w[r + n:], us, _rows(ws, r + n, r + 2 * n), None, ssm.C_scale)
        dtq = tk.int8_linear_quant(lq, mixer.dt_proj.weight, mixer.dt_proj.input_scale,
                                   mixer.dt_proj.weight_scale, None, ssm.dt_scale)
        y, ssm_state = tk.selective_scan_int8(
            uq, us, dtq, ssm.dt_scale, mixer.A, Bq, ssm.B_scale, Cq, ssm.C_scale, ssm.D, zq, ssm.z_scale,
            ssm.dt_bias, None if cache is None else cache.ssm_state)
        if cache is not None:
            cache.conv_state.copy_(conv_state)
            cache.ssm_state.copy_(ssm_state)
        if mixer.hadamard_ssm_output:
            yq = tk.hadamard_quant(y, mixer.out_proj.input_scale)
        else:
            yq = quantize_ref(y, mixer.out_proj.input_scale)
        out = tk.int8_linear(yq, mixer.out_proj.weight, mixer.out_proj.input_scale, mixer.out_proj.weight_scale,
                             mixer.out_proj.bias, out_dtype=out_dtype)
        return out, residual


def _rows(scale: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """The slice of a per-channel weight scale for a block of output rows (per-tensor: itself)."""
    return scale[start:stop] if scale.dim() else scale
