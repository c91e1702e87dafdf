"""The quantized checkpoint: a folder any quamba can load, about half the fp16 size.

- ``config.json``: the model's fields in mamba-ssm's layout plus ``quantization_config``
  (the :class:`QuantConfig` fields, ``format``, ``version``, the Hadamard size and the
  names of the scale tensors);
- ``model.safetensors``: int8 ``<module>.weight``, fp32 ``<module>.weight_scale`` and
  ``<module>.input_scale`` (compressed-tensors naming), fp32 SSM parameters, and the
  embedding / norms / head in the fp dtype;
- the tokenizer files of the source model.

Writes go to a temporary folder beside the target and are renamed into place, so a
crash never leaves a half-written checkpoint, and an existing folder is replaced
only with ``force=True``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from quamba.errors import QuambaError
from quamba.models.loading import read_model_config
from quamba.models.weights import iter_tensors, weight_files
from quamba.quantization.config import QuantConfig
from quamba.quantization.quantize import QuantizedMambaLM

__all__ = ["save_quantized", "load_quantized", "atomic_output_dir", "TOKENIZER_FILES"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt")


class atomic_output_dir:
    """``with atomic_output_dir(out, force) as tmp:`` write into tmp; renamed to out on success."""

    def __init__(self, out: str | Path, force: bool = False):
        self.out = Path(out)
        self.force = force

    def __enter__(self) -> Path:
        if self.out.exists() and not self.force:
            raise QuambaError(f"{self.out}: already exists; pass --force (force=True) to replace it")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{self.tmp.name[-8:]}")
            self.out.rename(old)
            self.tmp.rename(self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.tmp.rename(self.out)
        return False


def _tensors_to_save(model: QuantizedMambaLM, storage_dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    fp_params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return {k: (v.to(storage_dtype) if storage_dtype is not None and k in fp_params else v).detach().contiguous().cpu()
            for k, v in state.items()}


def save_quantized(model: QuantizedMambaLM, out: str | Path, source_dir: Path | None = None,
                   force: bool = False, storage_dtype: torch.dtype | None = torch.float16) -> Path:
    """Write the checkpoint. The fp parts (embedding, norms, head) are stored in
    ``storage_dtype`` (fp16 by default, as checkpoints are shared; None keeps the
    model's dtype); int8 weights and fp32 scales are stored as they are."""
    if not isinstance(model, QuantizedMambaLM):
        raise QuambaError("save_quantized() takes a model returned by quamba.quantize()")
    qc = model.quant_config
    config = model.config.to_mamba_ssm_dict()
    tensors = _tensors_to_save(model, storage_dtype)
    config["quantization_config"] = {
        "quant_method": "quamba", "format": "int8-w8a8", **qc.to_dict(),
        "hadamard_size": model.config.d_inner if qc.hadamard_ssm_output else None,
        "scale_tensors": sorted(k for k in tensors if k.endswith("_scale")),
    }
    with atomic_output_dir(out, force) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if source_dir is not None:
            for name in TOKENIZER_FILES:
                if (Path(source_dir) / name).is_file():
                    shutil.copy2(Path(source_dir) / name, tmp / name)
    return Path(out)


def load_quantized(model_dir: str | Path, dtype: torch.dtype = torch.float32, device="cpu") -> QuantizedMambaLM:
    model_dir = Path(model_dir)
    raw, config = read_model_config(model_dir)
    qraw = dict(raw["quantization_config"])
    source = f"{model_dir / 'config.json'}: quantization_config"
    if qraw.pop("quant_method", "quamba") != "quamba":
        raise QuambaError(f"{source}: quant_method is not 'quamba'")
    for key in ("format", "hadamard_size", "scale_tensors"):
        qraw.pop(key, None)
    qconfig = QuantConfig.from_dict(qraw, source)
    model = QuantizedMambaLM.empty(config, qconfig, dtype, "meta")
    expected = model.state_dict()
    if config.tie_embeddings:
        expected.pop("lm_head.weight", None)
    files = weight_files(model_dir)
    state = {}
    for name, tensor in iter_tensors(files):
        if name not in expected:
            raise QuambaError(f"{files[0]}: unexpected tensor {name!r} for this quantization_config")
        want = expected[name]
        if tuple(tensor.shape) != tuple(want.shape):
            raise QuambaError(f"{files[0]}: tensor {name!r} has shape {tuple(tensor.shape)}, expected {tuple(want.shape)}")
        if want.dtype == torch.int8 and tensor.dtype != torch.int8:
            raise QuambaError(f"{files[0]}: tensor {name!r} should be int8, found {tensor.dtype}")
        # the meta model already has the target dtypes: fp parts in `dtype`, int8 weights, fp32 scales
        state[name] = tensor.to(device=device, dtype=want.dtype)
    missing = [n for n in expected if n not in state]
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise QuambaError(f"{files[0]}: missing tensor(s) {', '.join(missing[:3])}{more}")
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    return model.eval().requires_grad_(False)
