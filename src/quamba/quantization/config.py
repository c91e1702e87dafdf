"""Quantization methods as declarative, versioned, serializable configs.

Every method of the comparison is a :class:`QuantConfig`; the registry
``METHODS`` maps the CLI names to them. A method is data: the pipeline in
``quantize.py`` reads the fields, nothing branches on the method's name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from quamba.errors import QuambaError

__all__ = ["QuantConfig", "METHODS", "get_method", "FORMAT_VERSION", "ACTIVATION_POINTS"]

FORMAT_VERSION = 1

# The activations quantized in every block, in dataflow order (see qmixer.py).
ACTIVATION_POINTS = ("in_proj_input", "x", "z", "u", "dt_low", "B", "C", "dt", "y")


@dataclass(frozen=True)
class QuantConfig:
    """W8A8 quantization of a Mamba-1 model.

    method: name recorded in checkpoints and reports.
    quantize: False means a floating-point baseline (``fp16``).
    activations: "static" (per-tensor scales fixed at calibration) or "dynamic" (per-token, at run time).
    weight_granularity: "tensor" (the paper) or "channel" (free in the int8 GEMM epilogue).
    ssm_input_observer / percentile: how the scale of u (the SSM input, x_proj's input) is chosen;
        Quamba clips it at the α = 0.99999 percentile of |u|.
    default_observer: observer for every other activation.
    hadamard_ssm_output: rotate y (out_proj's input) by a Hadamard matrix before quantizing (Quamba, QuaRot).
    rotate_residual: rotate the residual stream by a Hadamard matrix (QuaRot).
    smoothquant_alpha: migrate activation outliers into the weights of the linear layers (SmoothQuant),
        s_j = max|X_j|^α / max|W_j|^(1-α), for in_proj, x_proj and out_proj.
    quantize_ssm_params: round A_log, D and dt_bias to a per-tensor int8 grid (the original does).
    quantize_embedding: store the embedding (and head) as int8 with per-row scales (weight-only).
    """

    method: str = "quamba"
    quantize: bool = True
    activations: str = "static"
    weight_granularity: str = "tensor"
    ssm_input_observer: str = "percentile"
    percentile: float = 0.99999
    default_observer: str = "minmax"
    hadamard_ssm_output: bool = True
    rotate_residual: bool = False
    smoothquant_alpha: float | None = None
    quantize_ssm_params: bool = False
    quantize_embedding: bool = False
    version: int = field(default=FORMAT_VERSION)

    def __post_init__(self):
        if self.activations not in ("static", "dynamic"):
            raise QuambaError(f"quantization_config.activations must be 'static' or 'dynamic', got {self.activations!r}")
        if self.weight_granularity not in ("tensor", "channel"):
            raise QuambaError(f"quantization_config.weight_granularity must be 'tensor' or 'channel', "
                              f"got {self.weight_granularity!r}")
        if not 0.0 < self.percentile <= 1.0:
            raise QuambaError(f"quantization_config.percentile must be in (0, 1], got {self.percentile}")
        if self.smoothquant_alpha is not None and not 0.0 <= self.smoothquant_alpha <= 1.0:
            raise QuambaError(f"quantization_config.smoothquant_alpha must be in [0, 1], got {self.smoothquant_alpha}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "quantization_config") -> "QuantConfig":
        version = raw.get("version")
        if version != FORMAT_VERSION:
            raise QuambaError(f"{source}: format version {version!r} is not supported by this quamba "
                              f"(it reads version {FORMAT_VERSION}); upgrade quamba or re-quantize")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise QuambaError(f"{source}: unknown field(s) {', '.join(unknown)}")
        return cls(**raw)

    def with_overrides(self, **kwargs) -> "QuantConfig":
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


METHODS: dict[str, QuantConfig] = {
    "fp16": QuantConfig(method="fp16", quantize=False, hadamard_ssm_output=False),
    "w8a8-naive": QuantConfig(method="w8a8-naive", ssm_input_observer="minmax", hadamard_ssm_output=False),
    "w8a8-dynamic": QuantConfig(method="w8a8-dynamic", activations="dynamic", ssm_input_observer="minmax",
                                hadamard_ssm_output=False),
    "smoothquant": QuantConfig(method="smoothquant", ssm_input_observer="minmax", hadamard_ssm_output=False,
                               smoothquant_alpha=0.5),
    "quarot": QuantConfig(method="quarot", ssm_input_observer="minmax", hadamard_ssm_output=True,
                          rotate_residual=True),
    "quamba": QuantConfig(method="quamba"),
    "quamba-no-percentile": QuantConfig(method="quamba-no-percentile", ssm_input_observer="minmax"),
    "quamba-no-hadamard": QuantConfig(method="quamba-no-hadamard", hadamard_ssm_output=False),
}


def get_method(name: str) -> QuantConfig:
    if name not in METHODS:
        raise QuambaError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]
