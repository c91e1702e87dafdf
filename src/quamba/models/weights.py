"""Reading checkpoint tensors: safetensors (single or sharded) and pytorch_model.bin.

Tensors are read one at a time from safetensors (memory-mapped), so the model
is never held twice. ``pytorch_model.bin`` is a pickle: it is opened with
``weights_only=True`` and ``mmap=True``, so no code from a checkpoint runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from quamba.errors import QuambaError

__all__ = ["weight_files", "iter_tensors", "read_json"]


def read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise QuambaError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QuambaError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise QuambaError(f"{path}: expected a JSON object")
    return data


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files of a model folder, in the preferred format."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = model_dir / index_name
        if index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise QuambaError(f"{index}: no 'weight_map' in the shard index")
            files = [model_dir / name for name in dict.fromkeys(weight_map.values())]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise QuambaError(f"{index}: shard file(s) missing: {', '.join(missing)}")
            return files
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (model_dir / name).is_file():
            return [model_dir / name]
    raise QuambaError(f"{model_dir}: no weights (model.safetensors or pytorch_model.bin) in the folder")


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    for path in files:
        if path.suffix == ".safetensors":
            yield from _iter_safetensors(path)
        else:
            yield from _iter_pickle(path)


def _iter_safetensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)
    except QuambaError:
        raise
    except Exception as exc:  # SafetensorError, OSError, ... : truncated or corrupt file
        raise QuambaError(f"{path}: corrupt or truncated safetensors file ({str(exc).splitlines()[0][:160]})") from None


def _iter_pickle(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise QuambaError(f"{path}: cannot read as a weights-only PyTorch checkpoint ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(state, dict):
        raise QuambaError(f"{path}: expected a state dict")
    yield from state.items()
