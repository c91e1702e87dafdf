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
