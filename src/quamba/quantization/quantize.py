"""``quantize(model, config, calib)``: the offline half (calibrate, transform, quantize).

Steps, each driven by a field of :class:`QuantConfig`:
1. stat-free transforms of a copy of the fp model: residual rotation (QuaRot),
   Hadamard rotation of the SSM output (Quamba);
2. SmoothQuant, if asked: a pass for per-channel maxima, then the smoothing folded in;
3. a calibration pass with one observer per activation (percentile for the SSM
   input u in Quamba, min-max elsewhere) -> static per-tensor scales;
4. every mixer swapped for a :class:`QMambaMixer` holding int8 weights and those scales.
"""

from __future__ import annotations

import copy
import logging

import torch

from quamba.errors import QuambaError
from quamba.kernels.numerics import exact_numerics
from quamba.models.mamba import Block, MambaLM
from quamba.models.prefill_graphs import model_changed
from quamba.quantization.calibration import observe_activations
from quamba.quantization.config import ACTIVATION_POINTS, QuantConfig
from quamba.quantization.fused_block import FusedQBlock, fused_path_unsupported
from quamba.quantization.hadamard import hadamard_factors
from quamba.quantization.observers import ChannelAbsMaxObserver, make_observer
from quamba.quantization.qembedding import QEmbedding, QLMHead
from quamba.quantization.qmixer import QMambaMixer
from quamba.quantization.transforms import hadamard_ssm_output, rotate_residual_stream, smooth_linear_inputs

__all__ = ["quantize", "QuantizedMambaLM", "prepare_fp_model"]

log = logging.getLogger("quamba")


class QuantizedMambaLM(MambaLM):
    """A MambaLM whose mixers are :class:`QMambaMixer`; embedding, norms and head stay fp.

    Two backends compute the same function: ``reference`` (PyTorch, any device: the
    mixer's own forward) and ``triton`` (the fused int8 kernels of
    :class:`FusedQBlock`, CUDA). :meth:`select_backend` picks one and says why.
    """

    quant_config: QuantConfig
    backend: str = "reference"

    @property
    def conv_state_dtype(self) -> torch.dtype:
        # Fused kernels keep the conv state as int8 inputs; the reference keeps them dequantized, as
        # fp32 (fl(x_q * x_scale), what its conv reads on the first pass too), or in exact numerics
        # as fp64, where x_q * x_scale is exact, as the kernel computes it from the int8 state.
        if self.backend == "triton":
            return torch.int8
        return torch.float64 if exact_numerics() else torch.float32

    def set_fake_quant(self, enabled: bool = True) -> "QuantizedMambaLM":
        if enabled and self.backend == "triton":
            self.select_backend("reference")
        for layer in self.backbone.layers:
            layer.mixer.fake_quant = enabled
        return self

    def select_backend(self, backend: str = "auto") -> str:
        """'auto' (triton on CUDA when the config allows it), 'triton' or 'reference'."""
        from quamba.kernels.triton import triton_unavailable_reason

        if backend not in ("auto", "triton", "reference"):
            raise QuambaError(f"unknown backend {backend!r}; choose auto, triton or reference")
        reason = None
        if backend != "reference":
            reason = fused_path_unsupported(self.quant_config) or triton_unavailable_reason(self.device)
            if backend == "auto" and reason is None and self.device.type != "cuda":
                reason = "the model is on the CPU"
            if backend == "triton" and reason is not None:
                raise QuambaError(f"backend 'triton' is not possible: {reason}")
        fused = backend == "triton" or (backend == "auto" and reason is None)
        for layer in self.backbone.layers:
            layer.__class__ = FusedQBlock if fused else Block  # same state, other forward
            layer.mixer.fake_quant = False if fused else layer.mixer.fake_quant
        model_changed()   # prefill stack graphs captured on the other backend must not replay
        self.backend = "triton" if fused else "reference"
        log.info("quantized model backend: %s%s", self.backend, f" ({reason})" if reason and not fused else "")
        return self.backend

    @classmethod
    def empty(cls, config, qconfig: QuantConfig, dtype, device) -> "QuantizedMambaLM":
        with torch.device("meta"):
            model = cls(config, dtype=dtype)
        for layer in model.backbone.layers:
            layer.mixer = QMambaMixer(config, qconfig, device="meta")
        if qconfig.quantize_embedding:
            model.backbone.embedding = QEmbedding(config.vocab_size, config.d_model, dtype, device="meta")
            head = model.backbone.embedding if config.tie_embeddings else \
                QEmbedding(config.vocab_size, config.d_model, dtype, device="meta")
            model.lm_head = QLMHead(head, tied=config.tie_embeddings)
        model.quant_config = qconfig
        return model

    def tie_weights(self) -> None:
        """Re-point the head at the embedding after loading (tied checkpoints store it once)."""
        if not self.config.tie_embeddings:
            return
        if isinstance(self.lm_head, QLMHead):
            self.lm_head = QLMHead(self.backbone.embedding, tied=True)
        else:
            self.lm_head.weight = self.backbone.embedding.weight


def prepare_fp_model(model: MambaLM, config: QuantConfig) -> MambaLM:
    """A copy of ``model`` with the stat-free transforms of ``config`` applied (same function)."""
    model = copy.deepcopy(model)
    model.config = copy.deepcopy(model.config)
    if config.rotate_residual:
        hadamard_factors(model.config.d_model)  # raises a clear error for unsupported widths
        rotate_residual_stream(model)
    if config.hadamard_ssm_output:
        hadamard_factors(model.config.d_inner)
        hadamard_ssm_output(model)
    return model


def _activation_observers(config: QuantConfig):
    def make(_layer_index: int) -> dict:
        observers = {name: make_observer(config.default_observer) for name in ACTIVATION_POINTS}
        if config.ssm_input_observer == "percentile":
            observers["u"] = make_observer("percentile", percentile=config.percentile)
        else:
            observers["u"] = make_observer(config.ssm_input_observer)
        return observers
    return make


@torch.no_grad()
def quantize(model: MambaLM, config: QuantConfig, calib: torch.Tensor | None = None,
             batch_size: int = 1, show_progress: bool = True) -> MambaLM:
    """Quantize a fp Mamba LM. ``calib``: (n_samples, seq_len) token ids, needed for static scales.

    Returns a :class:`QuantizedMambaLM` (or, for a method with ``quantize=False``, the fp model).
    The input model is not modified.
    """
    if isinstance(model, QuantizedMambaLM):
        raise QuambaError("the model is already quantized; start from the floating-point checkpoint")
    if not config.quantize:
        return model
    static = config.activations == "static"
    if static and (calib is None or calib.numel() == 0):
        raise QuambaError(f"method {config.method!r} uses static scales and needs calibration data (--calib)")
    fp = prepare_fp_model(model, config)
    if config.smoothquant_alpha is not None:
        stats = observe_activations(
            fp, calib, lambda i: {n: ChannelAbsMaxObserver() for n in ("in_proj_input", "u", "y")},
            batch_size, show_progress, "smoothing stats")
        smooth_linear_inputs(fp, [{k: o.value for k, o in s.items()} for s in stats], config.smoothquant_alpha)
    scales = [None] * model.config.n_layer
    if static:
        observed = observe_activations(fp, calib, _activation_observers(config), batch_size, show_progress)
        scales = [{name: obs.scale() for name, obs in layer.items()} for layer in observed]
    qmodel = QuantizedMambaLM.empty(fp.config, config, fp.dtype, "meta")
    qmodel.load_state_dict({k: v for k, v in fp.state_dict().items() if ".mixer." not in k},
                           strict=False, assign=True)
    if config.quantize_embedding:
        qmodel.backbone.embedding = QEmbedding.from_float(fp.backbone.embedding.weight)
        if not fp.config.tie_embeddings:
            qmodel.lm_head = QLMHead(QEmbedding.from_float(fp.lm_head.weight), tied=False)
    qmodel.tie_weights()
    for layer, fp_layer, layer_scales in zip(qmodel.backbone.layers, fp.backbone.layers, scales):
        layer.mixer = QMambaMixer.from_float(fp_layer.mixer, layer_scales, config)
    qmodel.quant_config = config
    qmodel.select_backend("auto")
    return qmodel.eval()
