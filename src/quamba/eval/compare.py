"""Quantize one model with several methods and compare perplexity and size."""

from __future__ import annotations

import time

import torch

from quamba.eval.perplexity import perplexity
from quamba.quantization.config import get_method
from quamba.quantization.quantize import quantize

__all__ = ["compare_methods", "weight_bytes"]


def weight_bytes(model) -> int:
    """Bytes of the stored weights: fp parameters at 2 bytes (an fp16 checkpoint), buffers
    (int8 weights, fp32 scales and SSM parameters of quantized mixers) at their own size."""
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    total, seen = 0, set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue  # tied embedding / head
        seen.add(tensor.data_ptr())
        itemsize = 2 if name in params and tensor.is_floating_point() else tensor.element_size()
        total += tensor.numel() * itemsize
    return total


def compare_methods(model, methods: list[str], calib: torch.Tensor, windows: torch.Tensor,
                    batch_size: int = 4, show_progress: bool = True) -> dict:
    configs = [get_method(m) for m in methods]  # validate every name before the long work
    rows = []
    fp_result = perplexity(model, windows, batch_size, show_progress)
    fp_bytes = weight_bytes(model)
    for config in configs:
        start = time.perf_counter()
        qmodel = quantize(model, config, calib, batch_size, show_progress)
        result = fp_result if qmodel is model else perplexity(qmodel, windows, batch_size, show_progress)
        size = weight_bytes(qmodel)
        rows.append({"method": config.method, "ppl": result.ppl, "nll": result.nll,
                     "ppl_ratio": result.ppl / fp_result.ppl, "weight_bytes": size, "size_ratio": size / fp_bytes,
                     "seconds": time.perf_counter() - start, "config": config.to_dict()})
        del qmodel
    return {"fp_ppl": fp_result.ppl, "tokens": fp_result.tokens, "calib_samples": int(calib.shape[0]),
            "calib_seq_len": int(calib.shape[1]), "methods": rows}
