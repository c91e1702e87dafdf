"""Helpers shared by the Triton kernels: argument checks and int8 rounding.

Kept free of model logic. ``quantize_int8`` is the in-kernel twin of
``quantize_ref``: x / scale (correctly rounded, like torch's division), clamped to
[-127, 127], rounded half to even (like ``torch.round``), cast to int8.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

# 1.5 * 2**23: adding and subtracting it rounds an fp32 of magnitude < 2**22 to
# the nearest integer, ties to even (the hardware rounding mode), both in
# compiled code and in the numpy-based interpreter.
_RNE_MAGIC = tl.constexpr(12582912.0)


@triton.jit
def quantize_int8(v, scale):
    """fp32 tensor -> int8 tensor: clamp(round_half_even(v / scale), -127, 127).

    The division is a multiply by 1/scale and one fma correction, not an IEEE division
    per element (``div_rn`` is about 15 SASS instructions and a slow-path branch; it was
    a fifth of the int8 conv kernel). With r = RN(1/scale) and q0 = RN(v * r), the residual
    v - q0 * scale is exact in an fma and RN(q0 + residual * r) is the correctly rounded
    v / scale (Markstein's theorem) unless the residual underflows, which needs |v| below
    ~2**-100: such a quotient rounds to 0 either way for any calibrated scale (>= 1e-8).
    Checked exhaustively in C for 22 scales (all positive fp32 v up to v / scale = 256,
    edge-case significands included): no int8 result differs from IEEE division's
    (docs/kernels.md). q0 is clamped to +-256 first, so v = +-inf or an overflowing
    quotient still saturates to +-127 instead of turning into inf - inf = NaN."""
    r = tl.math.div_rn(1.0, scale)                    # per scale: once per program for a scalar
    q0 = tl.minimum(tl.maximum(v * r, -256.0), 256.0)
    q = tl.fma(tl.fma(-q0, scale, v), r, q0)
    q = tl.minimum(tl.maximum(q, -127.0), 127.0)   # clamping first keeps |q| < 2**22
    q = (q + _RNE_MAGIC) - _RNE_MAGIC
    return q.to(tl.int8)


@triton.jit
def pdl_wait(USE_PDL: tl.constexpr, TRIGGER_FIRST: tl.constexpr = False):
    """Programmatic dependent launch (Hopper): with USE_PDL, the kernel may have
    been started while the previous kernel on the stream was still finishing, so
    everything before this call must touch only data no earlier kernel writes
    (offsets, weights). ``gdc_wait`` blocks until the previous kernel has finished
    and its writes are visible; then the next kernel is allowed to start early in
    its turn. Together this hides each launch's ramp-up behind its predecessor's tail.

    TRIGGER_FIRST lets the next kernel start before the wait instead of after it. That
    kernel may then run beside the one before this one too, so whatever it reads before
    its own wait must be written by neither (the caller's promise). Its wait still
    covers both: this kernel finishes only after the one before it has. Trigger-first
    kernels in a row widen that window: a kernel may start as soon as the last kernel
    that triggered after its own wait has passed that wait, so what it reads before its
    wait must be written by none of the kernels that may still run: that one (it runs on
    after its wait) and every kernel launched since. A decode step's trigger chain
    (quantization/fused_block.py) keeps in_proj as that bound once a layer. Its kernels
    read there only weights, constants, the residual and their own layer's state, and
    in_proj reads the next layer's conv state while the one still running writes its own:
    each layer must have its own state (two steps of one block on one cache, back to back
    with nothing between them, would break that)."""
    if USE_PDL:
        if TRIGGER_FIRST:
            tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
        if not TRIGGER_FIRST:
            tl.extra.cuda.gdc_launch_dependents()


def pdl_launch_options(device: torch.device) -> dict:
    """Keyword arguments for a launch of a kernel that calls ``pdl_wait``: PDL on
    sm_90+ (not in the interpreter), off with QUAMBA_PDL=0."""
    use = (device.type == "cuda" and not interpret_mode() and os.environ.get("QUAMBA_PDL", "1") != "0"
           and _capability(device) >= (9, 0))
    return {"USE_PDL": True, "launch_pdl": True} if use else {"USE_PDL": False}


@functools.lru_cache(maxsize=None)
def _capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def interpret_mode() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# Under the interpreter the wrappers may take wide tiles where a tile does not change the
# arithmetic (a scan's channels, a GEMV's rows): its cost is per program and per op, not per
# element, so a whole-model run is 5x faster. The kernel tests set this False, to run the tiles
# and program counts a GPU runs.
WIDE_INTERPRETER_TILES = True


def wide_interpreter_tiles() -> bool:
    """Take wide tiles: the interpreter runs, and WIDE_INTERPRETER_TILES is on."""
    return WIDE_INTERPRETER_TILES and interpret_mode()


def check_device(op: str, *tensors: torch.Tensor | None) -> torch.device:
    """All given tensors on one device, which is CUDA unless the interpreter runs."""
    present = [t for t in tensors if t is not None]
    device = present[0].device
    for t in present[1:]:
        if t.device != device:
            raise ValueError(f"{op}: all tensors must be on one device, got {device} and {t.device}")
    if device.type != "cuda" and not interpret_mode():
        raise ValueError(
            f"{op}: Triton kernels need CUDA tensors (got {device}); "
            "set TRITON_INTERPRET=1 to run them on the CPU interpreter")
    return device


def check_dtype(op: str, name: str, t: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> None:
    if t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{op}: {name} must be {names}, got {str(t.dtype).replace('torch.', '')}")


def check_shape(op: str, name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def scalar_scale(op: str, name: str, s: torch.Tensor) -> torch.Tensor:
    """A per-tensor scale: an fp32 tensor with one element (0-dim or (1,))."""
    if not isinstance(s, torch.Tensor):
        raise ValueError(f"{op}: {name} must be an fp32 tensor, got {type(s).__name__}")
    if s.numel() != 1:
        raise ValueError(f"{op}: {name} must be a per-tensor scale (one element), got shape {tuple(s.shape)}")
    return s.reshape(()).float()


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))
