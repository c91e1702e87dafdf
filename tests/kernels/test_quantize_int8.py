"""The in-kernel quantizer (``quantize_int8``: a reciprocal multiply and one fma correction)
against ``quantize_ref`` (an IEEE division), bit for bit, where the two could part: values
on and one ulp either side of every rounding tie, ties of the clamp, infinities, huge and
subnormal values, and scales with edge-case significands."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from quamba.kernels.quantize_ref import quantize_ref  # noqa: E402
from quamba.kernels.triton._common import quantize_int8  # noqa: E402

BLOCK = 1024


@triton.jit
def _quantize_kernel(x_ptr, scale_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, quantize_int8(x, tl.load(scale_ptr)), mask=mask)


def _quantize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    out = torch.empty(x.shape, dtype=torch.int8, device=x.device)
    _quantize_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, scale, out, x.numel(), BLOCK=BLOCK)
    return out


def _from_bits(bits: int) -> float:
    return torch.tensor([bits], dtype=torch.int32).view(torch.float32).item()


SCALES = [1.0, 0.5, 1e-8, 0.0123, 3.7, _from_bits(0x3F7FFFFF), _from_bits(0x3C7FFFFF), _from_bits(0x3C000001),
          _from_bits(0x407FFFFE)]


def _hard_values(scale: float) -> torch.Tensor:
    """Every k + 1/2 (k in -130..130) times the scale, and the fp32 neighbours of each."""
    halves = (torch.arange(-130, 131, dtype=torch.float64) + 0.5) * scale
    ties = halves.float()
    up = torch.nextafter(ties, torch.tensor(float("inf")))
    down = torch.nextafter(ties, torch.tensor(float("-inf")))
    whole = (torch.arange(-130, 131, dtype=torch.float64) * scale).float()
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 3e38, -3e38, 1e-45, -1e-45, 1e-38, 6e-39])
    rand = torch.randn(20000, dtype=torch.float64) * 60 * scale
    return torch.cat([ties, up, down, whole, special, rand.float()])


@pytest.mark.parametrize("scale", SCALES)
def test_quantize_int8_equals_ieee_division(scale, device):
    x = _hard_values(scale).to(device)
    s = torch.tensor([scale], dtype=torch.float32, device=device)
    got = _quantize(x, s)
    want = quantize_ref(x, s)
    diff = (got != want).nonzero().flatten()
    assert diff.numel() == 0, (f"scale {scale!r}: {diff.numel()} of {x.numel()} differ, e.g. "
                               f"x={x[diff[:3]].tolist()} got {got[diff[:3]].tolist()} want {want[diff[:3]].tolist()}")
