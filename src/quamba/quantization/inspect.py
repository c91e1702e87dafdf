"""Per-layer, per-tensor quantization error (SQNR) of a quantized model.

SQNR = 20·log10(‖x‖ / ‖x − x̂‖) in dB, x̂ the dequantized int8 tensor: about
6 dB per bit for a well-scaled tensor (≈ 40 dB at 8 bits); a tensor far below
that is where accuracy goes (outliers stretching the scale, or heavy clipping).
"""

from __future__ import annotations

from collections import defaultdict

import torch

__all__ = ["sqnr", "activation_sqnr"]


def sqnr(reference: torch.Tensor, approx: torch.Tensor) -> float:
    ref = reference.double()
    noise = (ref - approx.double()).norm()
    if noise == 0:
        return float("inf")
    return float(20 * torch.log10(ref.norm() / noise))


@torch.inference_mode()
def activation_sqnr(qmodel, samples: torch.Tensor) -> list[dict[str, float]]:
    """Run ``samples`` (n, seq_len) through the quantized model; SQNR per layer and tensor."""
    signal = [defaultdict(float) for _ in qmodel.backbone.layers]
    noise = [defaultdict(float) for _ in qmodel.backbone.layers]

    def make_tap(i):
        def tap(name, x, x_hat):
            x = x.double()
            signal[i][name] += float(x.pow(2).sum())
            noise[i][name] += float((x - x_hat.double()).pow(2).sum())
        return tap

    for i, layer in enumerate(qmodel.backbone.layers):
        layer.mixer.tap = make_tap(i)
    try:
        for row in samples:
            qmodel(row.unsqueeze(0).to(qmodel.device))
    finally:
        for layer in qmodel.backbone.layers:
            layer.mixer.tap = None
    return [{name: (float("inf") if noise[i][name] == 0 else
                    10 * torch.log10(torch.tensor(signal[i][name] / noise[i][name])).item())
             for name in signal[i]} for i in range(len(signal))]
