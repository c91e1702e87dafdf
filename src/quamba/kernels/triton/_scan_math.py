"""Per-step math shared by the selective-scan kernels (selective_scan.py) and the segment
correction (selective_scan_segments.py): both must compute dt and the gate bit for bit alike."""

import triton
import triton.language as tl


@triton.jit
def softplus(x):
    # torch's softplus (threshold 20); log1p(e) via log(1+e) * e / ((1+e) - 1),
    # which stays accurate where e is tiny.
    e = tl.exp(x)
    u = 1.0 + e
    lp = tl.where(u == 1.0, e, tl.log(u) * (e / (u - 1.0)))
    return tl.where(x > 20.0, x, lp)


@triton.jit
def step_dt(dt, dt_bias, dt_s, IS_INT8: tl.constexpr, HAS_DT_BIAS: tl.constexpr, DT_SOFTPLUS: tl.constexpr,
            ACC: tl.constexpr = tl.float32):
    """Raw dt tile -> dt in ACC (fp32; fp64 in exact numerics), dequantized, bias added,
    softplus applied (dt_bias broadcastable against dt)."""
    dt = dt.to(ACC)
    if IS_INT8:
        dt = dt * dt_s.to(ACC)
    if HAS_DT_BIAS:
        dt = dt + dt_bias
    if DT_SOFTPLUS:
        dt = softplus(dt)
    return dt


@triton.jit
def output_gate(z, z_s, IS_INT8: tl.constexpr, ACC: tl.constexpr = tl.float32):
    """Raw z tile -> SiLU(z) in ACC (fp32; fp64 in exact numerics)."""
    gate = z.to(ACC)
    if IS_INT8:
        gate = gate * z_s.to(ACC)
    return gate / (1.0 + tl.exp(-gate))
