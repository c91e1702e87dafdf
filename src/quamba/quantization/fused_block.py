"""The W8A8 block on the GPU: Triton kernels, int8 between every pair of them.

The same function as ``Block`` + ``QMambaMixer`` in static mode (each kernel is the
twin of a reference op), arranged so that no activation travels in fp16 when int8
will do and each step is one launch:

    rmsnorm_quant(hidden + residual)       -> int8 normed input, fp32 residual
    int8_linear_quant (in_proj)            -> int8 x, int8 z (per-column output scale: one launch)
    causal_conv1d_int8 + SiLU              -> int8 u (the percentile scale), conv state in place
                                              (a decode step: in in_proj's epilogue, int8_linear_conv_step)
    int8_linear_quant (x_proj)             -> int8 dt_low, B, C (per-column output scale)
    selective_scan_int8                    -> dt_proj (int32, requantized to int8 dt), fp16 y (D skip,
                                              SiLU(z) gate fused), fp32 state in place
    hadamard_quant                         -> int8 y in the rotated space
    int8_linear (out_proj)                 -> fp16 output

A decode step launches six kernels a layer for up to 4 sequences (the conv in in_proj's
epilogue, dt_proj inside the scan), seven for 5 to 8 (dt_proj launched first: faster
there, see kernels/triton/selective_scan.py) and eight beyond (the conv too: see
CONV_STEP_MAX_M in kernels/triton/int8_linear.py); a prefill launches eight. No state copies; decoding captures the
whole model in a CUDA graph so a token costs one launch from the host. On Hopper
the decode kernels are launched with programmatic dependent launch (``pdl_wait``
in the kernels), so a launch's ramp-up overlaps the tail of the kernel before it.
The norm, in_proj's conv epilogue and the scan are also told (``early_residual``,
``early_state``) that no kernel that may still run when they start writes the residual or
their conv or SSM state, so they load those before waiting too. Up to 2 sequences the norm
lets in_proj start as soon as the norm itself does (``early_trigger``), and in_proj loads its
first weight blocks before its wait (``early_weight``: 4 under the trigger chain below, else
1). ``QUAMBA_IN_PROJ_EARLY=0`` turns that off (the A/B switch).
Likewise, up to 2 sequences (where out_proj runs on the rows kernel, which loads its weight
rows before its wait) the Hadamard lets out_proj start beside the scan, to load its rows there
(``QUAMBA_OUT_PROJ_EARLY=0`` turns it off). x_proj, the scan and out_proj do the same (the
trigger chain, ``QUAMBA_DECODE_TRIGGER_CHAIN=0`` turns it off), so from x_proj on every
kernel of a layer, the next layer's norm and its in_proj start one after another without
waiting: in_proj's early blocks and out_proj's rows stream while the small kernels run.

Prefill (seqlen > 1) is host-bound when launched from Python (each wrapper call
costs far more host time than its kernel at a few thousand tokens), so from the
second call with the same (batch, seqlen) each block replays a CUDA graph of
itself (see ``models/prefill_graphs.py``). ``QUAMBA_PREFILL_GRAPHS=0`` turns that off.
"""

from __future__ import annotations

import os

import torch

from quamba.kernels.numerics import exact_numerics
from quamba.kernels.quantize_ref import quantize_ref
from quamba.models.mamba import Block, LayerCache
from quamba.models.prefill_graphs import PrefillGraphs as _PrefillGraphs
from quamba.models.prefill_graphs import graphable as _graphable

__all__ = ["FusedQBlock", "fused_path_unsupported"]


def fused_path_unsupported(qconfig) -> str | None:
    """Why a config cannot take the fused int8 path (None when it can)."""
    if qconfig.activations != "static":
        return "dynamic activation scales are computed per token at run time (reference path)"
    if qconfig.smoothquant_alpha is not None:
        return "SmoothQuant's per-channel input scaling is not fused into the kernels (reference path)"
    return None


# Up to how many sequences a decode step's norm lets in_proj start beside the previous layer's
# out_proj (with in_proj's early weight blocks loaded before its wait). Measured with one block,
# before the trigger chain below; 2.8b / 1.4b W8A8 on an H100, A/B twice: batch 1 1.699 -> 1.682 /
# 0.999 -> 0.995, batch 2 1.867 -> 1.852 / 1.048 -> 1.035; batch 4 mixed (2.195 -> 2.233 / 1.298
# -> 1.289), batch 8 slower (2.399 -> 2.461 at 2.8b) (docs/sweeps/trigger_ab_*_h100.json,
# in_proj_early_ab_*_h100.json).
IN_PROJ_EARLY_MAX_BATCH = 2

# Up to how many sequences x_proj, the scan and out_proj of a decode step let the next kernel start
# as soon as they do (the trigger chain, see _forward_kernels), and in_proj loads 4 K blocks (40% of
# 2.8b's weight) before its wait (QUAMBA_IN_PROJ_EARLY_BLOCKS, _in_proj_early_blocks). W8A8 on an H100, A/B
# alternated twice, logits bit-identical, ms a token, queued (docs/sweeps/trigger_chain_ab_*_h100.json):
# 2.8b 1.682 -> 1.602, 790m 0.795 -> 0.745, 1.4b 0.963 -> 0.920, 130m 0.327 -> 0.318; two sequences
# 2.8b 1.847 -> 1.832, 1.4b 1.038 -> 1.021. Either half alone gains little or loses (2.8b: the chain
# with one early block 1.671, four blocks without the chain 1.707).
TRIGGER_CHAIN_MAX_BATCH = 2

# Up to how many sequences a decode step's Hadamard lets out_proj start beside the scan: where
# out_proj runs on the CUDA-core rows kernel (QUAMBA_GEMV_ROWS_MAX_M, 2), which loads its weight
# rows before its wait. The tensor-core kernel beyond loads nothing early; at 4 and 8 sequences
# the early start measured within 0.1% (docs/sweeps/out_proj_early_ab_*_h100.json).
HADAMARD_EARLY_MAX_BATCH = 2


def _in_proj_early_blocks() -> int:
    """in_proj's K blocks loaded before its wait under the trigger chain: QUAMBA_IN_PROJ_EARLY_BLOCKS
    (1, 2, 4 or 8, for A/B runs; default 4). Without the chain in_proj starts only during the norm
    and loads one (4 without the chain: 1.707 against 1.682 ms at 2.8b)."""
    value = os.environ.get("QUAMBA_IN_PROJ_EARLY_BLOCKS", "4")
    if value not in ("1", "2", "4", "8"):
        raise ValueError(f"QUAMBA_IN_PROJ_EARLY_BLOCKS={value!r}: use 1, 2, 4 or 8")
    return int(value)


def _switch_on(name: str) -> bool:
    """An A/B switch of the decode step, on unless set to 0 (read at capture time)."""
    return os.environ.get(name, "1") != "0"


class FusedQBlock(Block):
    """A Block whose mixer is a static, unsmoothed QMambaMixer, run with the Triton kernels."""

    def forward(self, hidden, residual, cache: LayerCache | None = None):
        if _graphable(hidden, residual):
            return _PrefillGraphs.run(self, hidden, residual, cache)
        return self._forward_kernels(hidden, residual, cache)

    # Swapped in only where the kernels apply (QuantizedMambaLM.select_backend).
    def runs_kernels(self, hidden, cache: LayerCache | None = None) -> bool:
        return True

    def fits_kernels(self) -> bool:
        return True

    def graph_baked_sources(self) -> list[torch.Tensor]:
        """A's source and the scales merged into the in_proj and x_proj output scale vectors."""
        mixer = self.mixer
        ssm = mixer.ssm
        return [ssm.A_log, mixer.conv1d.input_scale, ssm.z_scale, mixer.dt_proj.input_scale, ssm.B_scale,
                ssm.C_scale]

    def _forward_kernels(self, hidden, residual, cache: LayerCache | None = None, out=None):
        """out: optional (hidden_out, residual_out) buffers to write the results into
        (the prefill graphs' pair, which then needs no copy). They may be hidden and
        residual themselves: hidden is read only by the norm, before out_proj writes out."""
        from quamba.kernels import triton as tk

        mixer = self.mixer
        cfg, ssm = mixer.config, mixer.ssm
        out_dtype = hidden.dtype
        d, r, n = cfg.d_inner, cfg.dt_rank, cfg.d_state
        decode = cache is not None and hidden.shape[1] == 1
        # Exact numerics (kernels/numerics.py): the norm, conv, scan and rotation in fp64; the conv then
        # runs as its own launch (in_proj's epilogue computes it in fp32).
        exact = exact_numerics()
        # A decode step of up to 2 sequences: in_proj starts beside the previous layer's out_proj and
        # loads its first weight blocks there (see int8_linear_conv_step's early_weight).
        early_in_proj = decode and hidden.shape[0] <= IN_PROJ_EARLY_MAX_BATCH and _switch_on("QUAMBA_IN_PROJ_EARLY")
        early_out_proj = (decode and hidden.shape[0] <= HADAMARD_EARLY_MAX_BATCH
                          and _switch_on("QUAMBA_OUT_PROJ_EARLY"))
        # The trigger chain: x_proj, the scan, the Hadamard, out_proj and the next layer's norm each let
        # the next kernel start as soon as they start, so the next layer's in_proj starts about when
        # x_proj does and loads its early weight blocks while this layer's small kernels run. Each of
        # them reads before its wait only weights, constants, the residual and its own layer's state,
        # which neither this layer's in_proj (it may still run) nor any kernel after it writes (pdl_wait).
        chain = (decode and hidden.shape[0] <= TRIGGER_CHAIN_MAX_BATCH and not exact
                 and _switch_on("QUAMBA_DECODE_TRIGGER_CHAIN"))
        # in_proj's weight blocks read before its wait: more under the chain, which starts it sooner.
        in_proj_blocks = (_in_proj_early_blocks() if chain else 1) if early_in_proj else 0
        hq, residual = tk.rmsnorm_quant(hidden, residual, self.norm.weight, self.norm.eps, mixer.in_proj.input_scale,
                                        residual_out=None if out is None else out[1], early_residual=True,
                                        early_trigger=early_in_proj and not exact, exact=exact)
        # in_proj in one launch: the x and z halves requantized with their own scales.
        xz_scale = self._scale_vector("xz", ((mixer.conv1d.input_scale, d), (ssm.z_scale, d)))
        conv = mixer.conv1d
        us = mixer.x_proj.input_scale
        # The conv and scan states are updated in place in the cache (no copies).
        if decode and not exact:
            # A decode step: the conv runs in in_proj's epilogue (up to 8 sequences), u in place of x.
            uq, zq = tk.int8_linear_conv_step(hq, mixer.in_proj.weight, mixer.in_proj.input_scale,
                                              mixer.in_proj.weight_scale, xz_scale, conv.weight, conv.weight_scale,
                                              conv.bias, cache.conv_state, conv.input_scale, us, early_state=True,
                                              early_weight=in_proj_blocks)
            xzq = xq = None
        else:
            xzq = tk.int8_linear_quant(hq, mixer.in_proj.weight, mixer.in_proj.input_scale,
                                       mixer.in_proj.weight_scale, None, xz_scale, static_weight=True)
            xq, zq = xzq[..., :d], xzq[..., d:]
            uq, _ = tk.causal_conv1d_int8(xq, conv.input_scale, conv.weight, conv.weight_scale, conv.bias,
                                          None if cache is None else cache.conv_state, us,
                                          state_out=None if cache is None else cache.conv_state, exact=exact)
        del hq   # each intermediate is dropped once consumed: a prefill's peak (and its graph's pool) is smaller
        # x_proj in one launch: dt_low, B and C columns, each with its own output scale.
        dbl_scale = self._scale_vector("dbl", ((mixer.dt_proj.input_scale, r), (ssm.B_scale, n), (ssm.C_scale, n)))
        dblq = tk.int8_linear_quant(uq, mixer.x_proj.weight, us, mixer.x_proj.weight_scale, None, dbl_scale,
                                    static_weight=True, early_trigger=chain)
        lq, Bq, Cq = dblq[..., :r], dblq[..., r:r + n], dblq[..., r + n:]
        # dt_proj's inputs go to the scan, which computes it inside (decode, up to 4 tokens) or
        # launches int8_linear_quant first: the int8 dt is the same either way.
        A = mixer.state_matrix(torch.float64) if exact else mixer.A
        y, _ = tk.selective_scan_int8(
            uq, us, None, ssm.dt_scale, A, Bq, ssm.B_scale, Cq, ssm.C_scale, ssm.D, zq, ssm.z_scale,
            ssm.dt_bias, None if cache is None else cache.ssm_state,
            state_out=None if cache is None else cache.ssm_state,
            dt_low_q=lq, dt_low_scale=mixer.dt_proj.input_scale,
            dt_w_q=mixer.dt_proj.weight, dt_w_scale=mixer.dt_proj.weight_scale, early_state=True, exact=exact,
            early_trigger=chain)
        del xzq, xq, zq, uq, dblq, lq, Bq, Cq
        if mixer.hadamard_ssm_output:
            # A decode step's out_proj reads only its weight before its wait: it may start
            # beside the scan (early_trigger) and load its rows there.
            yq = tk.hadamard_quant(y, mixer.out_proj.input_scale, early_trigger=early_out_proj, exact=exact)
        else:
            yq = quantize_ref(y, mixer.out_proj.input_scale)
        del y
        out = tk.int8_linear(yq, mixer.out_proj.weight, mixer.out_proj.input_scale, mixer.out_proj.weight_scale,
                             mixer.out_proj.bias, out_dtype=out_dtype, out=None if out is None else out[0],
                             static_weight=True, early_trigger=chain)
        return out, residual

    def _scale_vector(self, name: str, parts) -> torch.Tensor:
        """Per-tensor scales expanded to one fp32 vector over a merged projection's output
        columns; rebuilt only when a scale tensor changes (its version counter moves)."""
        # Inference tensors have no version counter (and cannot change outside inference mode).
        key = tuple((t.data_ptr(), 0 if t.is_inference() else t._version) for t, _ in parts)
        store = self.__dict__.setdefault("_fused_scale_vectors", {})
        hit = store.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        vec = torch.cat([t.detach().reshape(-1)[:1].float().expand(count) for t, count in parts]).contiguous()
        store[name] = (key, vec)
        return vec

