"""causal_conv1d (Triton, float activations) against causal_conv1d_ref."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from quamba.kernels.causal_conv1d_ref import causal_conv1d_ref  # noqa: E402
from quamba.kernels.triton import causal_conv1d  # noqa: E402

from ._helpers import assert_within_one_rounding, shapes  # noqa: E402

SHAPES = shapes(
    gpu=[(1, 1, 1536), (2, 7, 1280), (2, 33, 384), (1, 130, 5120), (3, 1, 384), (1, 2048, 1536)],
    cpu=[(1, 1, 24), (2, 7, 40), (2, 33, 48)],
)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _case(b, l, d, width, dtype, device, with_state=True):
    x = torch.randn(b, l, d, device=device, dtype=dtype)
    weight = (torch.randn(d, width, device=device) * 0.5).to(dtype)
    bias = torch.randn(d, device=device, dtype=dtype)
    state = torch.randn(b, d, width - 1, device=device, dtype=dtype) if with_state else None
    return x, weight, bias, state


@pytest.mark.parametrize("b,l,d", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_conv1d_matches_ref(b, l, d, with_state, dtype, device):
    x, weight, bias, state = _case(b, l, d, 4, dtype, device, with_state)
    out, new_state = causal_conv1d(x, weight, bias, state)
    ref_out, ref_state = causal_conv1d_ref(x, weight, bias, state)
    assert_within_one_rounding(out, ref_out)
    assert new_state.dtype == dtype and torch.equal(new_state, ref_state)


@pytest.mark.parametrize("width", [2, 3])
def test_causal_conv1d_other_widths_no_bias_no_activation(width, device):
    x, weight, _, state = _case(2, 5, 24, width, torch.float32, device)
    out, new_state = causal_conv1d(x, weight, None, state, activation=None)
    ref_out, ref_state = causal_conv1d_ref(x, weight, None, state, activation=None)
    assert_within_one_rounding(out, ref_out)
    assert torch.equal(new_state, ref_state)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_causal_conv1d_strided_input(dtype, device):
    """x as the first half of the in_proj output xz, read in place through its strides."""
    b, l, d = (2, 7, 40) if device.type == "cpu" else (2, 33, 1280)
    xz = torch.randn(b, l, 2 * d, device=device, dtype=dtype)
    x = xz[..., :d]
    _, weight, bias, state = _case(b, l, d, 4, dtype, device)
    out, new_state = causal_conv1d(x, weight, bias, state)
    ref_out, ref_state = causal_conv1d_ref(x.contiguous(), weight, bias, state)
    assert_within_one_rounding(out, ref_out)
    assert torch.equal(new_state, ref_state)


@pytest.mark.parametrize("l", [1, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_causal_conv1d_state_in_place(l, dtype, device):
    """state_out = the input state: updated in place, same result as a new tensor."""
    b, d = (2, 40) if device.type == "cpu" else (2, 1280)
    x, weight, bias, state = _case(b, l, d, 4, dtype, device)
    ref_out, ref_state = causal_conv1d_ref(x, weight, bias, state)
    out, new_state = causal_conv1d(x, weight, bias, state, state_out=state)
    assert new_state.data_ptr() == state.data_ptr()
    assert_within_one_rounding(out, ref_out)
    assert torch.equal(state, ref_state)


def test_causal_conv1d_wider_state_than_input(device):
    """An fp32 cache beside fp16 activations: read as fp16 (as the reference
    concatenates), written back widened (as the reference's copy_ into the cache)."""
    x, weight, bias, _ = _case(2, 3, 40, 4, torch.float16, device)
    state = torch.randn(2, 40, 3, device=device)
    ref_out, ref_state = causal_conv1d_ref(x, weight, bias, state)
    expected_state = torch.empty_like(state).copy_(ref_state)
    out, _ = causal_conv1d(x, weight, bias, state, state_out=state)
    assert_within_one_rounding(out, ref_out)
    assert torch.equal(state, expected_state)


def test_causal_conv1d_chunked_equals_full(device):
    """Prefill continuing from a state, and token-by-token decode, equal one pass."""
    b, l, d = (2, 7, 40) if device.type == "cpu" else (2, 33, 1280)
    x, weight, bias, _ = _case(b, l, d, 4, torch.float32, device)
    full, full_state = causal_conv1d(x, weight, bias)
    cut = l // 2
    a, st = causal_conv1d(x[:, :cut], weight, bias)
    rest, st = causal_conv1d(x[:, cut:], weight, bias, st)
    assert torch.equal(torch.cat([a, rest], 1), full) and torch.equal(st, full_state)
    st, steps = None, []
    for t in range(l):
        y, st = causal_conv1d(x[:, t:t + 1], weight, bias, st)
        steps.append(y)
    assert torch.equal(torch.cat(steps, 1), full) and torch.equal(st, full_state)


def test_causal_conv1d_rejects_bad_inputs(device):
    x, weight, bias, _ = _case(1, 3, 16, 4, torch.float32, device)
    with pytest.raises(ValueError, match="conv_state must have shape"):
        causal_conv1d(x, weight, bias, torch.zeros(1, 16, 4, device=device))
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d(x, weight, bias, activation="gelu")
    with pytest.raises(ValueError, match="x must be"):
        causal_conv1d(x.to(torch.int8), weight, bias)
