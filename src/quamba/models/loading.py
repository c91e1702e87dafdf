"""Build a floating-point Mamba-1 model from a checkpoint folder.

The model is built on the ``meta`` device (no memory, no init), then every
tensor is read once, checked against the expected shape, cast and assigned.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from quamba.errors import QuambaError
from quamba.models.config import MambaConfig
from quamba.models.mamba import MambaLM
from quamba.models.weights import iter_tensors, read_json, weight_files

__all__ = ["load_fp_model", "read_model_config", "canonical_name"]

# transformers' naming -> mamba-ssm's (ours).
_RENAMES = [
    (re.compile(r"^backbone\.embeddings\."), "backbone.embedding."),
    (re.compile(r"^model\."), "backbone."),
]


def canonical_name(name: str) -> str:
    for pattern, repl in _RENAMES:
        name = pattern.sub(repl, name)
    return name


def read_model_config(model_dir: str | Path) -> tuple[dict, MambaConfig]:
    model_dir = Path(model_dir)
    path = model_dir / "config.json"
    if not path.is_file():
        raise QuambaError(f"{model_dir}: no config.json (is this a Mamba model folder?)")
    raw = read_json(path)
    return raw, MambaConfig.from_dict(raw, source=str(path))


def load_fp_model(model_dir: str | Path, dtype: torch.dtype = torch.float32, device="cpu") -> MambaLM:
    model_dir = Path(model_dir)
    _, config = read_model_config(model_dir)
    files = weight_files(model_dir)
    with torch.device("meta"):
        model = MambaLM(config, dtype=dtype)
    expected = dict(model.state_dict())
    tied = config.tie_embeddings
    state: dict[str, torch.Tensor] = {}
    for raw_name, tensor in iter_tensors(files):
        name = canonical_name(raw_name)
        if name == "lm_head.weight" and tied:
            continue  # tied to the embedding; mamba-ssm's .bin files store it twice
        if name not in expected:
            raise QuambaError(f"{files[0].parent}: unexpected tensor {raw_name!r} in the checkpoint")
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise QuambaError(
                f"{files[0].parent}: tensor {raw_name!r} has shape {tuple(tensor.shape)}, "
                f"the config implies {tuple(expected[name].shape)}")
        state[name] = tensor.to(device=device, dtype=dtype)
    needed = [n for n in expected if not (tied and n == "lm_head.weight")]
    missing = [n for n in needed if n not in state]
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise QuambaError(f"{files[0].parent}: checkpoint lacks {', '.join(missing[:3])}{more}")
    model.load_state_dict(state, strict=False, assign=True)
    if tied:
        model.lm_head.weight = model.backbone.embedding.weight
    return model.eval().requires_grad_(False)
