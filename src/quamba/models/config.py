"""Mamba-1 configuration, read from either layout found in the wild.

- mamba-ssm's (``state-spaces/mamba-130m`` ...): ``d_model``, ``n_layer``,
  ``vocab_size``, ``ssm_cfg``, ``pad_vocab_size_multiple``, ``tie_embeddings``.
- transformers' (``state-spaces/mamba-130m-hf`` ...): ``hidden_size``,
  ``num_hidden_layers``, ``state_size``, ``expand``, ``conv_kernel``,
  ``time_step_rank``, ``tie_word_embeddings``.

Both become one :class:`MambaConfig`. Fields that change the function the
model computes but that we do not implement are rejected by name rather than
silently ignored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from quamba.errors import QuambaError

__all__ = ["MambaConfig"]

# Keys that carry no meaning for the computed function (bookkeeping written by
# trainers and by transformers' PretrainedConfig).
_IGNORED_KEYS = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "bos_token_id", "eos_token_id", "pad_token_id", "use_cache", "initializer_range",
    "time_step_scale", "time_step_min", "time_step_max", "time_step_init_scheme",
    "time_step_floor", "rescale_prenorm_residual", "use_mambapy", "use_associative_scan",
    "fused_add_norm", "residual_in_fp32", "output_hidden_states", "return_dict",
    "quantization_config", "ssm_cfg", "rms_norm", "layer_norm_epsilon", "norm_epsilon",
    "id2label", "label2id", "chunk_size_feed_forward", "is_encoder_decoder", "problem_type",
    "tie_embeddings", "tie_word_embeddings", "pad_vocab_size_multiple", "_name_or_path",
    "attn_layer_idx", "attn_cfg", "dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor",
}


@dataclass
class MambaConfig:
    """Shape and numerics of a Mamba-1 language model.

    ``vocab_size`` is the padded size of the embedding matrix (mamba-ssm pads
    to ``pad_vocab_size_multiple``); ``d_inner = expand * d_model``.
    """

    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0  # 0 means ceil(d_model / 16), mamba-ssm's "auto"
    conv_bias: bool = True
    bias: bool = False
    norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_embeddings: bool = True

    def __post_init__(self):
        if self.dt_rank == 0:
            self.dt_rank = math.ceil(self.d_model / 16)
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand", "dt_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise QuambaError(f"config field {name!r} must be a positive integer, got {value!r}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    def to_dict(self) -> dict:
        return asdict(self)

    def to_mamba_ssm_dict(self) -> dict:
        """config.json in mamba-ssm's layout (what ``save_pretrained`` writes)."""
        return {
            "d_model": self.d_model, "n_layer": self.n_layer, "vocab_size": self.vocab_size,
            "ssm_cfg": {"d_state": self.d_state, "d_conv": self.d_conv, "expand": self.expand,
                        "dt_rank": self.dt_rank, "conv_bias": self.conv_bias, "bias": self.bias},
            "rms_norm": True, "residual_in_fp32": self.residual_in_fp32, "fused_add_norm": True,
            "pad_vocab_size_multiple": 1, "tie_embeddings": self.tie_embeddings, "norm_epsilon": self.norm_eps,
        }

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> "MambaConfig":
        """Parse mamba-ssm's, transformers' or our own layout; reject what we cannot honour."""
        raw = dict(raw)
        if "model_type" in raw and raw["model_type"] not in ("mamba", "mamba1"):
            raise QuambaError(
                f"{source}: model_type {raw['model_type']!r} is not supported (only Mamba-1, 'mamba')"
            )
        if "d_model" in raw and "hidden_size" not in raw:
            kwargs = _from_mamba_ssm(raw, source)
        elif "hidden_size" in raw:
            kwargs = _from_transformers(raw, source)
        else:
            raise QuambaError(f"{source}: neither 'd_model' (mamba-ssm) nor 'hidden_size' (transformers) is set")
        consumed = set(kwargs) | _IGNORED_KEYS | _TRANSFORMERS_KEYS
        unknown = sorted(k for k in raw if k not in consumed)
        if unknown:
            raise QuambaError(f"{source}: unsupported config field(s) {', '.join(unknown)}")
        return cls(**kwargs)


_TRANSFORMERS_KEYS = {
    "hidden_size", "num_hidden_layers", "state_size", "conv_kernel", "time_step_rank",
    "use_conv_bias", "use_bias", "hidden_act", "intermediate_size",
}


def _from_mamba_ssm(raw: dict, source: str) -> dict:
    ssm = dict(raw.get("ssm_cfg") or {})
    layer = ssm.pop("layer", "Mamba1")
    if layer != "Mamba1":
        raise QuambaError(f"{source}: ssm_cfg.layer={layer!r} is not supported (only Mamba1)")
    if raw.get("attn_layer_idx"):
        raise QuambaError(f"{source}: attn_layer_idx (hybrid attention layers) is not supported")
    if raw.get("rms_norm", True) is not True:
        raise QuambaError(f"{source}: rms_norm=false (LayerNorm) is not supported")
    allowed_ssm = {"d_state", "d_conv", "expand", "dt_rank", "conv_bias", "bias",
                   "dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor", "use_fast_path"}
    unknown = sorted(set(ssm) - allowed_ssm)
    if unknown:
        raise QuambaError(f"{source}: unsupported ssm_cfg field(s) {', '.join(unknown)}")
    vocab = int(raw["vocab_size"])
    multiple = int(raw.get("pad_vocab_size_multiple", 1) or 1)
    if vocab % multiple:
        vocab += multiple - vocab % multiple
    dt_rank = ssm.get("dt_rank", "auto")
    return dict(
        d_model=int(raw["d_model"]), n_layer=int(raw["n_layer"]), vocab_size=vocab,
        d_state=int(ssm.get("d_state", 16)), d_conv=int(ssm.get("d_conv", 4)),
        expand=int(ssm.get("expand", 2)), dt_rank=0 if dt_rank == "auto" else int(dt_rank),
        conv_bias=bool(ssm.get("conv_bias", True)), bias=bool(ssm.get("bias", False)),
        norm_eps=float(raw.get("norm_epsilon", 1e-5)),
        residual_in_fp32=bool(raw.get("residual_in_fp32", True)),
        tie_embeddings=bool(raw.get("tie_embeddings", True)),
    )


def _from_transformers(raw: dict, source: str) -> dict:
    if raw.get("hidden_act", "silu") != "silu":
        raise QuambaError(f"{source}: hidden_act={raw['hidden_act']!r} is not supported (only 'silu')")
    d_model = int(raw["hidden_size"])
    expand = int(raw.get("expand", 2))
    if "intermediate_size" in raw and int(raw["intermediate_size"]) != expand * d_model:
        raise QuambaError(f"{source}: intermediate_size {raw['intermediate_size']} != expand*hidden_size")
    dt_rank = raw.get("time_step_rank", "auto")
    return dict(
        d_model=d_model, n_layer=int(raw["num_hidden_layers"]), vocab_size=int(raw["vocab_size"]),
        d_state=int(raw.get("state_size", 16)), d_conv=int(raw.get("conv_kernel", 4)), expand=expand,
        dt_rank=0 if dt_rank == "auto" else int(dt_rank),
        conv_bias=bool(raw.get("use_conv_bias", True)), bias=bool(raw.get("use_bias", False)),
        norm_eps=float(raw.get("layer_norm_epsilon", 1e-5)),
        residual_in_fp32=bool(raw.get("residual_in_fp32", True)),
        tie_embeddings=bool(raw.get("tie_word_embeddings", True)),
    )
