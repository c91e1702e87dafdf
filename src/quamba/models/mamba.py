"""Mamba-1 language model in plain PyTorch.

embedding -> n_layer x [residual add -> RMSNorm -> MambaMixer] -> add -> RMSNorm -> head

The same function as mamba-ssm's ``MambaLMHeadModel`` (with ``fused_add_norm``
and ``residual_in_fp32``) and transformers' ``MambaForCausalLM``. Parameter names
follow mamba-ssm (``backbone.layers.N.mixer.in_proj.weight`` ...), so its
checkpoints load with ``load_state_dict`` as they are.

``forward(input_ids, cache)`` runs any number of tokens and, given an
:class:`InferenceCache`, continues from it and updates it in place: prefill is
one call with the prompt, decoding one call per token (never re-running the prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from quamba.kernels.causal_conv1d_ref import causal_conv1d_ref
from quamba.kernels.dispatch import selective_scan
from quamba.kernels.numerics import exact_linear, exact_numerics
from quamba.kernels.rmsnorm_quant_ref import rmsnorm_exact
from quamba.models.config import MambaConfig
from quamba.models.fused_block import (block_fits_fused_path, fused_forward, fused_forward_kernels,
                                       fused_path_applies)
from quamba.models.prefill_graphs import MovesGraphedWeights, PrefillGraphs, model_changed, stack_graphable

__all__ = ["RMSNorm", "MambaMixer", "Block", "MambaLM", "InferenceCache", "LayerCache"]

_STATE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class LayerCache:
    conv_state: torch.Tensor  # (batch, d_inner, d_conv - 1): the last inputs of the conv
    ssm_state: torch.Tensor   # (batch, d_inner, d_state), fp32 (or fp16/bf16: MambaLM.ssm_state_dtype)


@dataclass
class InferenceCache:
    layers: list[LayerCache]
    seqlen_offset: int = 0

    @classmethod
    def allocate(cls, config: MambaConfig, batch: int, device, conv_dtype,
                 state_dtype: torch.dtype = torch.float32) -> "InferenceCache":
        return cls([
            LayerCache(
                torch.zeros(batch, config.d_inner, config.d_conv - 1, device=device, dtype=conv_dtype),
                torch.zeros(batch, config.d_inner, config.d_state, device=device, dtype=state_dtype),
            )
            for _ in range(config.n_layer)
        ])


class RMSNorm(MovesGraphedWeights, nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalizes in fp32 and returns fp32: the caller casts (mamba-ssm's fused norm does the same).
        Exact numerics: in fp64 from the fp32 input, rounded once to fp32 (as the fused kernel then does)."""
        if exact_numerics():
            return rmsnorm_exact(x, self.weight, self.eps)
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()


class MambaMixer(MovesGraphedWeights, nn.Module):
    """One selective-SSM mixer: in_proj -> causal conv + SiLU -> x_proj -> dt_proj
    -> selective scan (with D skip and SiLU(z) gate) -> out_proj.

    ``x_proj_pre`` and ``out_proj_pre`` are identity by default. Equivalence-preserving
    transforms (SmoothQuant's channel scaling, the Hadamard rotation of the SSM output)
    put the online half of the transform there and fold its inverse into the
    following weight, so the fp model still computes the same function.
    """

    def __init__(self, config: MambaConfig, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.config = config
        d_inner, d_state, dt_rank = config.d_inner, config.d_state, config.dt_rank
        self.in_proj = nn.Linear(config.d_model, 2 * d_inner, bias=config.bias, **kw)
        self.conv1d = nn.Conv1d(d_inner, d_inner, config.d_conv, groups=d_inner,
                                padding=config.d_conv - 1, bias=config.conv_bias, **kw)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False, **kw)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True, **kw)
        self.A_log = nn.Parameter(torch.empty(d_inner, d_state, **kw))
        self.D = nn.Parameter(torch.empty(d_inner, **kw))
        self.out_proj = nn.Linear(d_inner, config.d_model, bias=config.bias, **kw)
        self.x_proj_pre: nn.Module = nn.Identity()
        self.out_proj_pre: nn.Module = nn.Identity()
        self.tap = None

    @property
    def tap(self):
        """Calibration and ``quamba inspect`` set this to a callable(name, tensor) that sees
        every activation the quantized mixer will quantize (names as in
        quantization.config.ACTIVATION_POINTS). A tapped mixer takes the reference path."""
        return self.__dict__.get("_tap")

    @tap.setter
    def tap(self, fn) -> None:
        self.__dict__["_tap"] = fn
        model_changed()   # the prefill stack's kept "every layer fits the kernels" is stale

    def forward(self, hidden: torch.Tensor, cache: LayerCache | None = None) -> torch.Tensor:
        """hidden: (batch, seqlen, d_model) -> (batch, seqlen, d_model)."""
        cfg = self.config
        tap = self.tap or _no_tap
        x, z = self.in_proj(tap("in_proj_input", hidden)).chunk(2, dim=-1)
        u, conv_state = causal_conv1d_ref(
            tap("x", x), self.conv1d.weight.squeeze(1), self.conv1d.bias,
            None if cache is None else cache.conv_state, activation="silu")
        x_dbl = self.x_proj(tap("u", self.x_proj_pre(u)))
        dt, B, C = torch.split(x_dbl, [cfg.dt_rank, cfg.d_state, cfg.d_state], dim=-1)
        # dt_proj's bias is added inside the scan, before softplus, in fp32 (as mamba-ssm does).
        dt = F.linear(tap("dt_low", dt), self.dt_proj.weight)
        dt, B, C, z = tap("dt", dt), tap("B", B), tap("C", C), tap("z", z)
        y, ssm_state = selective_scan(
            u, dt, -torch.exp(self.A_log.float()), B, C, self.D, z,
            delta_bias=self.dt_proj.bias, delta_softplus=True,
            initial_state=None if cache is None else cache.ssm_state)
        if cache is not None:
            cache.conv_state.copy_(conv_state)
            cache.ssm_state.copy_(ssm_state)
        return self.out_proj(tap("y", self.out_proj_pre(y)))


def _no_tap(name: str, tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class Block(MovesGraphedWeights, nn.Module):
    """residual += hidden; hidden = mixer(norm(residual)); the residual stays fp32.

    With a plain MambaMixer on CUDA the same function runs as seven fused
    launches (models/fused_block.py; ``fused_path_applies`` says when).
    """

    def __init__(self, config: MambaConfig, device=None, dtype=None):
        super().__init__()
        self.norm = RMSNorm(config.d_model, config.norm_eps, device=device, dtype=dtype)
        self.mixer = MambaMixer(config, device=device, dtype=dtype)
        self.residual_in_fp32 = config.residual_in_fp32

    def forward(self, hidden, residual, cache: LayerCache | None = None):
        if self.runs_kernels(hidden, cache):
            return fused_forward(self, hidden, residual, cache)
        residual = hidden.float() + residual.float() if residual is not None else hidden.float()
        if not self.residual_in_fp32:
            residual = residual.to(hidden.dtype)
        normed = self.norm(residual)  # fp32
        if getattr(self.mixer, "takes_fp32_input", False):  # a quantized mixer (see QMambaMixer)
            return self.mixer(normed, cache, out_dtype=hidden.dtype), residual
        return self.mixer(normed.to(hidden.dtype), cache), residual

    def runs_kernels(self, hidden: torch.Tensor, cache: LayerCache | None = None) -> bool:
        """Whether ``forward`` takes the fused kernels (``_forward_kernels``) for this input."""
        # Exactly MambaMixer: the quantized mixer's reference backend runs in this Block too.
        return type(self.mixer) is MambaMixer and fused_path_applies(self, hidden, cache)

    def fits_kernels(self) -> bool:
        """The block's own part of ``runs_kernels`` (the inputs decide the rest)."""
        return type(self.mixer) is MambaMixer and block_fits_fused_path(self)

    def _forward_kernels(self, hidden, residual, cache: LayerCache | None = None, out=None):
        """The fused path without prefill graphs (what models.prefill_graphs captures)."""
        return fused_forward_kernels(self, hidden, residual, cache, out)

    def graph_baked_sources(self) -> list[torch.Tensor]:
        """The tensors whose values ``_forward_kernels`` derives on the host and a CUDA graph
        of it bakes in (the prefill stack graph checks their version counters)."""
        return [self.mixer.A_log]


class Backbone(nn.Module):
    def __init__(self, config: MambaConfig, device=None, dtype=None):
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.d_model, device=device, dtype=dtype)
        self.layers = nn.ModuleList(Block(config, device=device, dtype=dtype) for _ in range(config.n_layer))
        self.norm_f = RMSNorm(config.d_model, config.norm_eps, device=device, dtype=dtype)


class MambaLM(nn.Module):
    """The language model. ``forward`` returns logits (batch, seqlen, vocab) in the model dtype.

    ``ssm_state_dtype``: the dtype of the recurrent state kept between calls (decoding).
    The scan always computes in fp32; fp16 or bf16 round the state once per call when it
    is stored (as mamba-ssm's decode cache does for fp16 models), which halves the
    state's memory and the bytes a decode step moves at large batch. Default fp32. A
    run-time setting of this instance (like the backend): not saved with a checkpoint."""

    @property
    def ssm_state_dtype(self) -> torch.dtype:
        return self.__dict__.get("_ssm_state_dtype", torch.float32)

    @ssm_state_dtype.setter
    def ssm_state_dtype(self, dtype: torch.dtype) -> None:
        if dtype not in _STATE_DTYPES:
            from quamba.errors import QuambaError
            raise QuambaError(f"ssm_state_dtype must be one of torch.float32, torch.float16, torch.bfloat16, "
                              f"got {dtype!r}")
        self.__dict__["_ssm_state_dtype"] = dtype

    def __init__(self, config: MambaConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config, device=device, dtype=dtype)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False, device=device, dtype=dtype)
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    # Read off the final norm: the embedding may be an int8 table in quantized models.
    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.norm_f.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.norm_f.weight.device

    def allocate_cache(self, batch: int) -> InferenceCache:
        return InferenceCache.allocate(self.config, batch, self.device, self.conv_state_dtype, self.ssm_state_dtype)

    @property
    def conv_state_dtype(self) -> torch.dtype:
        return self.dtype

    def hidden_states(self, input_ids: torch.Tensor, cache: InferenceCache | None = None) -> torch.Tensor:
        """Final normed hidden states (batch, seqlen, d_model) in the model dtype."""
        hidden = self.backbone.embedding(input_ids)
        layers = self.backbone.layers
        # A CUDA prefill whose every layer runs its kernels: one graph of the whole stack.
        stack = stack_graphable(self, hidden, cache)
        pair = PrefillGraphs.run_stack(self, layers, hidden, cache) if stack else None
        if pair is not None:
            hidden, residual = pair
        else:
            # Layer by layer (a stack key's first call: each layer's kernels, eagerly). The loop
            # rebinds hidden, so each layer's input is freed as the next runs: a peak lower by one
            # hidden state than holding the embedding's output (20 MiB at 2.8b and 4096 tokens).
            residual = None
            for i, layer in enumerate(layers):
                forward = layer._forward_kernels if stack else layer
                hidden, residual = forward(hidden, residual, None if cache is None else cache.layers[i])
        if cache is not None:
            cache.seqlen_offset += input_ids.shape[1]
        residual = hidden.float() + residual.float()
        return self.backbone.norm_f(residual).to(self.dtype)

    def forward(self, input_ids: torch.Tensor, cache: InferenceCache | None = None,
                num_last_tokens: int = 0) -> torch.Tensor:
        """input_ids: (batch, seqlen) int64 -> logits (batch, seqlen, vocab), or of the last
        ``num_last_tokens`` positions only (prefill for generation needs just the last one:
        the full (seqlen, vocab) head is a large matmul and a large tensor for nothing)."""
        hidden = self.hidden_states(input_ids, cache)
        if num_last_tokens > 0:
            hidden = hidden[:, -num_last_tokens:]
        return self.logits(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head: (..., d_model) normed hidden states -> (..., vocab) logits in their dtype."""
        if exact_numerics() and type(self.lm_head) is nn.Linear:
            # The head's long dot products in fp64, rounded once (kernels/numerics.py).
            return exact_linear(hidden, self.lm_head.weight).to(hidden.dtype)
        return self.lm_head(hidden)
