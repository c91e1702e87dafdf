"""Run the fp model over calibration samples and observe every quantized activation."""

from __future__ import annotations

from collections.abc import Callable

import torch

from quamba.errors import QuambaError
from quamba.progress import progress_bar

__all__ = ["observe_activations"]


@torch.inference_mode()
def observe_activations(model, samples: torch.Tensor, make_observers: Callable[[int], dict],
                        batch_size: int = 1, show_progress: bool = True,
                        description: str = "calibrating") -> list[dict]:
    """Feed ``samples`` (n, seq_len) through the model with taps on every mixer.

    make_observers(layer_index) returns {activation name: observer}; activations
    without an observer are not recorded. Returns those dicts, one per layer.
    A NaN or inf in any observed activation stops calibration with the layer and
    tensor named (a broken checkpoint or an fp16 overflow, to be fixed upstream).
    """
    if samples.numel() == 0:
        raise QuambaError("calibration got zero samples")
    layers = model.backbone.layers
    observers = [make_observers(i) for i in range(len(layers))]
    n_batches = -(-samples.shape[0] // batch_size)
    for layer_observers in observers:
        for obs in layer_observers.values():
            if hasattr(obs, "expect"):
                obs.expect(n_batches)

    def make_tap(index: int, layer_observers: dict):
        def tap(name: str, tensor: torch.Tensor) -> torch.Tensor:
            obs = layer_observers.get(name)
            if obs is not None:
                if not torch.isfinite(tensor).all():
                    raise QuambaError(f"calibration: non-finite values (NaN/inf) in layer {index} "
                                      f"activation {name!r}; check the checkpoint or use --dtype fp32")
                obs.update(tensor)
            return tensor
        return tap

    for i, layer in enumerate(layers):
        layer.mixer.tap = make_tap(i, observers[i])
    try:
        with progress_bar(show_progress) as bar:
            task = bar.add_task(description, total=samples.shape[0])
            for start in range(0, samples.shape[0], batch_size):
                model(samples[start:start + batch_size].to(model.device))
                bar.advance(task, min(batch_size, samples.shape[0] - start))
    finally:
        for layer in layers:
            layer.mixer.tap = None
    return observers
