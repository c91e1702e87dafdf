"""Comparison helpers shared by the kernel tests."""

from __future__ import annotations

import torch

GPU = torch.cuda.is_available()


def shapes(gpu: list, cpu: list) -> list:
    """The GPU shape list on CUDA, the small interpreter list otherwise."""
    return gpu if GPU else cpu


def assert_int8_match(out: torch.Tensor, ref: torch.Tensor, max_frac: float = 1e-3) -> None:
    """Equal, or one rounding step apart on a tiny fraction of elements (ties
    and fp32 summation order can put a value on the other side of a .5)."""
    assert out.dtype == torch.int8 and ref.dtype == torch.int8, (out.dtype, ref.dtype)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    diff = (out.int() - ref.int().to(out.device)).abs()
    assert int(diff.max()) <= 1 if diff.numel() else True, f"int8 outputs differ by {int(diff.max())}"
    n_off = int((diff > 0).sum())
    allowed = max(2, int(max_frac * diff.numel()))
    assert n_off <= allowed, f"{n_off} of {diff.numel()} int8 outputs off by one (allowed {allowed})"


def assert_within_one_rounding(out: torch.Tensor, ref: torch.Tensor, fp32_rtol: float = 1e-5) -> None:
    """Float outputs of fp32 math: fp16/bf16 ones at most one rounding step (ulp)
    apart (the fp32 values before the cast differ in the last bits, so a few
    land on the other side of a rounding boundary); fp32 ones within fp32_rtol."""
    assert out.dtype == ref.dtype and out.shape == ref.shape, (out.dtype, ref.dtype, out.shape, ref.shape)
    rtol = fp32_rtol if out.dtype == torch.float32 else torch.finfo(out.dtype).eps
    out, ref = out.float().cpu(), ref.float().cpu()
    assert torch.isfinite(out).all(), "non-finite values in kernel output"
    torch.testing.assert_close(out, ref, rtol=rtol, atol=1e-6)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in fp64."""
    out, ref = out.double().cpu(), ref.double().cpu()
    assert torch.isfinite(out).all(), "non-finite values in kernel output"
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def scale_for(x: torch.Tensor, clip: float = 0.9) -> torch.Tensor:
    """A per-tensor scale that clips the top (1 - clip) of the range, so that
    both the clamp and the rounding get exercised."""
    return (x.float().abs().amax() * clip / 127).clamp_min(1e-8).reshape(())


def rand_int8(*shape, device) -> torch.Tensor:
    return torch.randint(-127, 128, shape, dtype=torch.int8, device=device)
