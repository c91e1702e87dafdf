"""The public entry points: load a model (fp or quantized) and its tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from quamba.errors import QuambaError
from quamba.models.hub import resolve_model_dir
from quamba.models.loading import load_fp_model, read_model_config
from quamba.models.tokenizer import Tokenizer, load_tokenizer

__all__ = ["load", "load_with_tokenizer", "default_device", "default_dtype", "parse_dtype"]

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
           "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    # fp16 on CPU is slow and loses accuracy for no memory win that matters there.
    return torch.float16 if str(device).startswith("cuda") else torch.float32


def parse_dtype(name: str | torch.dtype | None, device: str) -> torch.dtype:
    if name is None or name == "auto":
        return default_dtype(device)
    if isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise QuambaError(f"unknown dtype {name!r}; choose one of fp32, fp16, bf16")
    return _DTYPES[name]


def _check_device(device: str) -> str:
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise QuambaError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    return str(device)


def load(path_or_id: str | Path | None = None, dtype: str | torch.dtype | None = None,
         device: str | None = None, backend: str = "auto"):
    """Load a Mamba LM from a folder, a hub id, or (None) the embedded tiny model.

    A folder written by :func:`quamba.quantize` (its config.json has a
    ``quantization_config``) loads as the quantized model; anything else as fp.
    ``dtype`` is the floating-point type of the fp parts (default fp16 on CUDA, fp32 on CPU).
    ``backend`` (quantized models): "auto" runs the fused Triton int8 kernels on CUDA and the
    PyTorch reference elsewhere; "triton" or "reference" force one.
    """
    device = _check_device(device or default_device())
    dtype = parse_dtype(dtype, device)
    model_dir = resolve_model_dir(path_or_id)
    raw, _ = read_model_config(model_dir)
    if "quantization_config" in raw:
        from quamba.quantization.checkpoint import load_quantized

        model = load_quantized(model_dir, dtype=dtype, device=device)
        model.select_backend(backend)
    else:
        model = load_fp_model(model_dir, dtype=dtype, device=device)
    model.source_dir = model_dir
    return model


def load_with_tokenizer(path_or_id=None, dtype=None, device=None, tokenizer: str | None = None,
                        backend: str = "auto"):
    """(model, tokenizer) for the CLI and the evaluation adapters."""
    model = load(path_or_id, dtype=dtype, device=device, backend=backend)
    tok: Tokenizer = load_tokenizer(model.source_dir, tokenizer)
    return model, tok
