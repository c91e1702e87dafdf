"""The W8A8 Mamba mixer: int8 weights, int8 activations between ops.

Dataflow (every arrow into a box carries int8 with a per-tensor scale)::

    hidden ─q─► in_proj ─► x ─q─► conv1d+SiLU ─► u ─(/s_u)─q─► x_proj ─► dt_low ─q─► dt_proj ─► dt ─q─┐
                        └► z ─q──────────────────────────────────────────► B, C ─q─────────────────────┤
                                                                              selective scan ◄─────────┘
                                                                                   │ y·silu(z)
                                                    out_proj ◄─q─ (Hadamard R or /s_y) ◄┘

The SSM input u gets Quamba's percentile-clipped scale; y is rotated by R
(folded into out_proj's weight offline). Two modes share this one forward:

- real int8 (default): activations are int8 tensors, linear layers are int8 x int8
  -> int32 matmuls with a dequantizing epilogue, the conv and scan dequantize
  their int8 inputs and compute in fp32 (what the GPU kernels do, fused);
- fake quant (``fake_quant = True``): the same rounding, but activations travel as
  dequantized floats and the matmuls use dequantized weights (QDQ simulation). It is
  done in fp64 so that it reproduces the int8 path's numbers instead of drifting
  from them (see ``_linear``): it rounds each product once where the int8 path
  rounds in fp32 as the kernels do, so the two differ only in rare last bits.

With ``activations="dynamic"`` each quantized tensor gets a per-token scale at
run time instead of a calibrated one (the accuracy ceiling of 8 bits).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from quamba.errors import QuambaError
from quamba.kernels.causal_conv1d_ref import causal_conv1d_ref
from quamba.kernels.dispatch import selective_scan
from quamba.kernels.hadamard_quant_ref import hadamard_exact
from quamba.kernels.int8_linear_ref import int8_linear_ref
from quamba.kernels.numerics import exact_numerics
from quamba.kernels.quantize_ref import absmax_scale, dequantize_ref, quantize_ref
from quamba.kernels.selective_scan_ref import selective_scan_ref
from quamba.models.config import MambaConfig
from quamba.models.mamba import LayerCache
from quamba.models.prefill_graphs import MovesGraphedWeights
from quamba.quantization.config import QuantConfig
from quamba.quantization.hadamard import hadamard_matrix
from quamba.quantization.qlinear import QLinear, dequantize_weight, quantize_weight

__all__ = ["QMambaMixer", "SCAN_SCALES"]

# Scales of the selective scan's int8 inputs that are not some linear layer's input scale.
SCAN_SCALES = ("z_scale", "dt_scale", "B_scale", "C_scale")


class QConv1d(nn.Module):
    """Depthwise causal conv with an int8 (d, width) weight; its input scale is x's."""

    def __init__(self, dim: int, width: int, bias: bool, per_channel: bool, static_input: bool, device=None):
        super().__init__()
        self.register_buffer("weight", torch.zeros(dim, width, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(dim if per_channel else (), device=device))
        if static_input:
            self.register_buffer("input_scale", torch.ones((), device=device))
        else:
            self.input_scale = None
        if bias:
            self.register_buffer("bias", torch.zeros(dim, device=device))
        else:
            self.bias = None

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_weight(self.weight, self.weight_scale)


class QSSMParams(nn.Module):
    """A_log, D, dt_bias (fp32) and the static scales of the scan's other int8 inputs."""

    def __init__(self, d_inner: int, d_state: int, static_input: bool, device=None):
        super().__init__()
        self.register_buffer("A_log", torch.zeros(d_inner, d_state, device=device))
        self.register_buffer("D", torch.zeros(d_inner, device=device))
        self.register_buffer("dt_bias", torch.zeros(d_inner, device=device))
        for name in SCAN_SCALES:
            if static_input:
                self.register_buffer(name, torch.ones((), device=device))
            else:
                setattr(self, name, None)


class QMambaMixer(MovesGraphedWeights, nn.Module):
    def __init__(self, config: MambaConfig, qconfig: QuantConfig, device=None):
        super().__init__()
        self.config, self.qconfig = config, qconfig
        d_inner, d_state, dt_rank = config.d_inner, config.d_state, config.dt_rank
        per_channel = qconfig.weight_granularity == "channel"
        static = qconfig.activations == "static"
        self.in_proj = QLinear(config.d_model, 2 * d_inner, config.bias, per_channel, static, device)
        self.conv1d = QConv1d(d_inner, config.d_conv, config.conv_bias, per_channel, static, device)
        self.x_proj = QLinear(d_inner, dt_rank + 2 * d_state, False, per_channel, static, device)
        self.dt_proj = QLinear(dt_rank, d_inner, False, per_channel, static, device)
        self.ssm = QSSMParams(d_inner, d_state, static, device)
        self.out_proj = QLinear(d_inner, config.d_model, config.bias, per_channel, static, device)
        smooth = qconfig.smoothquant_alpha is not None
        # SmoothQuant's per-channel divisors of x_proj's and out_proj's inputs (None otherwise).
        self.register_buffer("u_smooth", torch.ones(d_inner, device=device) if smooth else None)
        self.register_buffer("y_smooth", torch.ones(d_inner, device=device) if smooth else None)
        # The rotation is regenerated, never stored; one matrix serves every layer (see _rotation).
        self.hadamard_ssm_output = qconfig.hadamard_ssm_output
        self.fake_quant = False
        self._A = {}  # dtype -> (key of A_log, -exp(A_log)): computed once per A_log value, not per call
        self.tap = None  # callable(name, tensor, dequantized) for per-tensor error reports

    # -- construction from a calibrated (and transformed) fp mixer -------------------------

    @classmethod
    @torch.no_grad()
    def from_float(cls, mixer, scales: dict[str, torch.Tensor] | None, qconfig: QuantConfig) -> "QMambaMixer":
        """scales: activation name -> per-tensor scale (see ACTIVATION_POINTS), None if dynamic."""
        device = mixer.in_proj.weight.device
        s = scales or {}
        gran = qconfig.weight_granularity
        q = cls(mixer.config, qconfig, device=device)
        q.in_proj = QLinear.from_float(mixer.in_proj, s.get("in_proj_input"), gran)
        q.x_proj = QLinear.from_float(mixer.x_proj, s.get("u"), gran)
        q.out_proj = QLinear.from_float(mixer.out_proj, s.get("y"), gran)
        dt_proj = nn.Linear(mixer.dt_proj.in_features, mixer.dt_proj.out_features, bias=False, device=device)
        dt_proj.weight.copy_(mixer.dt_proj.weight.float())
        q.dt_proj = QLinear.from_float(dt_proj, s.get("dt_low"), gran)
        q.conv1d.weight, q.conv1d.weight_scale = quantize_weight(mixer.conv1d.weight.squeeze(1), gran)
        if mixer.conv1d.bias is not None:
            q.conv1d.bias = mixer.conv1d.bias.detach().float()
        if scales is not None:
            q.conv1d.input_scale = s["x"].float().to(device)
            for name in SCAN_SCALES:
                setattr(q.ssm, name, s[name.removesuffix("_scale")].float().to(device))
        params = {"A_log": mixer.A_log, "D": mixer.D, "dt_bias": mixer.dt_proj.bias}
        for name, value in params.items():
            value = value.detach().float()
            if qconfig.quantize_ssm_params:
                wq, ws = quantize_weight(value, "tensor")
                value = dequantize_ref(wq, ws)  # stored on the int8 grid, in fp32 (0.1% of the weights)
            setattr(q.ssm, name, value.to(device))
        for pre, name in ((mixer.x_proj_pre, "u_smooth"), (mixer.out_proj_pre, "y_smooth")):
            if hasattr(pre, "smooth"):
                setattr(q, name, pre.smooth.float().to(device))
        return q.to(device)

    @property
    def A(self) -> torch.Tensor:
        return self.state_matrix(torch.float32)

    def state_matrix(self, dtype: torch.dtype) -> torch.Tensor:
        """A = -exp(A_log) computed in ``dtype`` (fp64 in exact numerics), cached."""
        a_log = self.ssm.A_log
        # Recomputed when A_log is replaced or written in place (load_state_dict, .to()):
        # its address or version counter moves. Inference tensors have no version counter
        # (and cannot be written outside inference mode).
        key = (a_log.data_ptr(), a_log.device, 0 if a_log.is_inference() else a_log._version)
        hit = self._A.get(dtype)
        if hit is None or hit[0] != key:
            hit = self._A[dtype] = (key, -torch.exp(a_log.to(dtype)))
        return hit[1]

    # -- the three primitives whose meaning depends on the mode -----------------------------

    def _quant(self, name: str, x: torch.Tensor, scale: torch.Tensor | None):
        if scale is None:  # dynamic: one scale per token
            scale = absmax_scale(x.float(), dim=-1)
        q = quantize_ref(x, scale)
        if self.tap is not None:  # `quamba inspect`: how much did quantizing this tensor lose?
            self.tap(name, x, dequantize_ref(q, scale))
        if self.fake_quant:
            # Dequantized in fp64, where q * scale is exact: the fp64 GEMMs below then produce the
            # exact int32 path's numbers, and consumers that round to fp32 get the same values.
            return q.double() * scale.double(), scale
        return q, scale

    def _dequant(self, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        if self.fake_quant:
            return q
        if exact_numerics():
            return q.double() * scale.double()   # exact: the kernels dequantize in fp64 there too
        return dequantize_ref(q, scale)

    def _linear(self, layer: QLinear, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        if self.fake_quant:
            # fp64 so the simulation computes the numbers of the exact int32 path: fp32 sums of
            # thousands of products move values across the next quantizer's rounding boundaries,
            # and those one-step flips compound through the recurrence over the layers
            # (measured on mamba1-ref-31m: fp32 simulation vs int8 logits only 28 dB apart).
            bias = None if layer.bias is None else layer.bias.double()
            return F.linear(q, dequantize_weight(layer.weight, layer.weight_scale, torch.float64), bias).float()
        return int8_linear_ref(q, layer.weight, scale, layer.weight_scale, layer.bias)

    # -- forward ----------------------------------------------------------------------------

    # Block hands this mixer its RMSNorm output in fp32, not cast to the model dtype first: the
    # fused kernel quantizes the fp32 value, and an fp16 rounding before the int8 one would move
    # some values across a rounding boundary.
    takes_fp32_input = True

    def forward(self, hidden: torch.Tensor, cache: LayerCache | None = None,
                out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """hidden: (batch, seqlen, d_model) -> (batch, seqlen, d_model) in out_dtype (default hidden's)."""
        cfg, ssm = self.config, self.ssm
        hq, hs = self._quant("in_proj_input", hidden, self.in_proj.input_scale)
        x, z = self._linear(self.in_proj, hq, hs).chunk(2, dim=-1)
        xq, xs = self._quant("x", x, self.conv1d.input_scale)
        zq, zs = self._quant("z", z, ssm.z_scale)
        # Exact numerics (kernels/numerics.py): the conv, the scan and the rotation in fp64 on
        # exactly dequantized inputs, each result rounded once to fp32 (y then to fp16).
        exact = exact_numerics() and not self.fake_quant
        acc = torch.float64 if exact else torch.float32
        if exact and cache is not None and cache.conv_state.dtype != torch.float64:
            raise QuambaError("the inference cache was allocated in fast numerics (fp32 conv state); allocate "
                              "it again in exact numerics (QUAMBA_NUMERICS=exact)")
        conv_weight = (dequantize_weight(self.conv1d.weight, self.conv1d.weight_scale, torch.float64) if exact
                       else self.conv1d.dequantized_weight())
        u, conv_state = causal_conv1d_ref(
            self._dequant(xq, xs), conv_weight, self.conv1d.bias,
            None if cache is None else cache.conv_state, activation="silu", compute_dtype=acc)
        uq, us = self._quant("u", u if self.u_smooth is None else u / self.u_smooth, self.x_proj.input_scale)
        dt_low, B, C = torch.split(self._linear(self.x_proj, uq, us),
                                   [cfg.dt_rank, cfg.d_state, cfg.d_state], dim=-1)
        lq, ls = self._quant("dt_low", dt_low, self.dt_proj.input_scale)
        dtq, dts = self._quant("dt", self._linear(self.dt_proj, lq, ls), ssm.dt_scale)
        Bq, Bs = self._quant("B", B, ssm.B_scale)
        Cq, Cs = self._quant("C", C, ssm.C_scale)
        u_scan = self._dequant(uq, us)
        if self.u_smooth is not None:
            u_scan = u_scan * self.u_smooth
        scan = functools.partial(selective_scan_ref, compute_dtype=acc) if exact else selective_scan
        y, ssm_state = scan(
            u_scan, self._dequant(dtq, dts), self.state_matrix(acc), self._dequant(Bq, Bs),
            self._dequant(Cq, Cs), ssm.D, self._dequant(zq, zs), delta_bias=ssm.dt_bias,
            delta_softplus=True, initial_state=None if cache is None else cache.ssm_state)
        if cache is not None:
            cache.conv_state.copy_(conv_state)
            cache.ssm_state.copy_(ssm_state.float())   # exact numerics: fp64 -> fp32 -> the state's dtype
        # y goes on in fp16, as the fused scan kernel stores it (half the bytes; fp16's step is far
        # finer than the int8 step y is quantized to next). Without this rounding here too, ~0.2% of
        # y's int8 values land one step away from the GPU path's, and greedy decoding on the two
        # diverges within a few tokens (measured on mamba1-ref-31m; docs/benchmarks.md).
        y = y.float().half().float()
        if self.hadamard_ssm_output:
            y = _rotate_exact(y) if exact else y @ _rotation(y.shape[-1], y.device)
        if self.y_smooth is not None:
            y = y / self.y_smooth
        yq, ys = self._quant("y", y, self.out_proj.input_scale)
        return self._linear(self.out_proj, yq, ys).to(out_dtype or hidden.dtype)


@functools.lru_cache(maxsize=8)
def _rotation(n: int, device: torch.device) -> torch.Tensor:
    """The Hadamard matrix of y, shared by all layers (a dense copy per layer would cost
    more memory than the layer's int8 weights at small widths)."""
    return hadamard_matrix(n, torch.float32, device)


def _rotate_exact(y: torch.Tensor) -> torch.Tensor:
    return hadamard_exact(y, _signs(y.shape[-1], y.device))


@functools.lru_cache(maxsize=8)
def _signs(n: int, device: torch.device) -> torch.Tensor:
    """The unnormalized ±1 Hadamard matrix in fp64 (exact numerics)."""
    return torch.round(hadamard_matrix(n, torch.float64, device) * math.sqrt(n))
