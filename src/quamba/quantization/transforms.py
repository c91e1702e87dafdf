"""Equivalence-preserving transforms of the fp model, applied before calibration.

Each keeps the function of the fp model unchanged (tests check the logits) and
changes only which values the quantizer sees:

- :func:`hadamard_ssm_output` (Quamba §4.2): y ← y R before out_proj, W_out ← W_out R.
  R is orthogonal, so (y R)(W_out R)ᵀ = y W_outᵀ; the massive outliers of y are
  spread over all channels before quantization.
- :func:`rotate_residual_stream` (QuaRot): the residual stream h ← h Q. RMSNorm
  commutes with Q once its weight g is folded into the next linear layer
  (W ← W diag(g) Q); writers into the stream get W_out ← Qᵀ W_out, the embedding E ← E Q.
- :func:`smooth_linear_inputs` (SmoothQuant): for a linear layer with input X and weight W,
  s_j = max|X_j|^α / max|W_j|^(1−α), X ← X / s, W ← W diag(s). For in_proj the 1/s folds
  into the RMSNorm weight; for x_proj and out_proj it is applied by the producer (the
  conv epilogue and the scan epilogue in the int8 path, ``*_pre`` modules in the fp model).

All arithmetic is in fp64, then cast back to the model dtype.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from quamba.quantization.hadamard import hadamard_matrix

__all__ = ["HadamardRotation", "ChannelScale", "hadamard_ssm_output", "rotate_residual_stream",
           "smooth_linear_inputs", "smoothing_factors"]


class HadamardRotation(nn.Module):
    """x ↦ x R with R the orthonormal Hadamard matrix of x's width (regenerated, not stored)."""

    def __init__(self, n: int, device=None):
        super().__init__()
        self.n = n
        self.register_buffer("rotation", hadamard_matrix(n, torch.float32, device), persistent=False)

    def forward(self, x):
        return (x.float() @ self.rotation).to(x.dtype)


class ChannelScale(nn.Module):
    """x ↦ x / s per channel (SmoothQuant's online half)."""

    def __init__(self, smooth: torch.Tensor):
        super().__init__()
        self.register_buffer("smooth", smooth.float())

    def forward(self, x):
        return (x.float() / self.smooth).to(x.dtype)


def _set_weight(linear: nn.Linear, weight64: torch.Tensor) -> None:
    linear.weight = nn.Parameter(weight64.to(linear.weight.dtype), requires_grad=False)


@torch.no_grad()
def hadamard_ssm_output(model) -> None:
    for layer in model.backbone.layers:
        mixer = layer.mixer
        n = mixer.out_proj.in_features
        R = hadamard_matrix(n, device=mixer.out_proj.weight.device)
        _set_weight(mixer.out_proj, mixer.out_proj.weight.double() @ R)
        mixer.out_proj_pre = HadamardRotation(n, device=mixer.out_proj.weight.device)


@torch.no_grad()
def rotate_residual_stream(model) -> None:
    backbone = model.backbone
    device = backbone.embedding.weight.device
    Q = hadamard_matrix(model.config.d_model, device=device)
    emb = backbone.embedding.weight.double()
    head = model.lm_head.weight.double() * backbone.norm_f.weight.double()
    backbone.embedding.weight = nn.Parameter((emb @ Q).to(backbone.embedding.weight.dtype), requires_grad=False)
    model.lm_head = nn.Linear(model.config.d_model, model.config.vocab_size, bias=False,
                              device=device, dtype=backbone.embedding.weight.dtype)
    _set_weight(model.lm_head, head @ Q)
    model.config.tie_embeddings = False
    backbone.norm_f.weight.fill_(1.0)
    for layer in backbone.layers:
        mixer = layer.mixer
        _set_weight(mixer.in_proj, mixer.in_proj.weight.double() * layer.norm.weight.double() @ Q)
        layer.norm.weight.fill_(1.0)
        _set_weight(mixer.out_proj, Q.T @ mixer.out_proj.weight.double())
        if mixer.out_proj.bias is not None:
            mixer.out_proj.bias.copy_((mixer.out_proj.bias.double() @ Q).to(mixer.out_proj.bias.dtype))


def smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|X_j|^α / max|W_:,j|^(1−α), clamped away from 0 (dead channels keep s = 1)."""
    w_absmax = weight.detach().abs().amax(0).double().cpu().clamp_min(1e-5)
    a = act_absmax.double().clamp_min(1e-5)
    s = a.pow(alpha) / w_absmax.pow(1 - alpha)
    return torch.where(act_absmax > 0, s, torch.ones_like(s)).clamp_min(1e-5)


@torch.no_grad()
def smooth_linear_inputs(model, channel_absmax: list[dict[str, torch.Tensor]], alpha: float) -> list[dict]:
    """Apply SmoothQuant to in_proj, x_proj and out_proj of every layer.

    channel_absmax[i] holds per-channel |X| maxima of layer i's ``in_proj_input``, ``u`` and ``y``
    measured on the untransformed model. Returns the smoothing factors per layer.
    """
    applied = []
    for layer, stats in zip(model.backbone.layers, channel_absmax):
        mixer = layer.mixer
        device = mixer.in_proj.weight.device
        s_in = smoothing_factors(stats["in_proj_input"], mixer.in_proj.weight, alpha).to(device)
        layer.norm.weight.copy_((layer.norm.weight.double() / s_in).to(layer.norm.weight.dtype))
        _set_weight(mixer.in_proj, mixer.in_proj.weight.double() * s_in)
        s_u = smoothing_factors(stats["u"], mixer.x_proj.weight, alpha).to(device)
        _set_weight(mixer.x_proj, mixer.x_proj.weight.double() * s_u)
        mixer.x_proj_pre = ChannelScale(s_u)
        s_y = smoothing_factors(stats["y"], mixer.out_proj.weight, alpha).to(device)
        _set_weight(mixer.out_proj, mixer.out_proj.weight.double() * s_y)
        mixer.out_proj_pre = ChannelScale(s_y)
        applied.append({"in_proj_input": s_in, "u": s_u, "y": s_y})
    return applied
