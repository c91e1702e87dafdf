"""causal_conv1d_int8 (Triton) against causal_conv1d_int8_ref."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from quamba.kernels.causal_conv1d_int8_ref import causal_conv1d_int8_ref  # noqa: E402
from quamba.kernels.causal_conv1d_ref import causal_conv1d_ref  # noqa: E402
from quamba.kernels.triton import causal_conv1d_int8  # noqa: E402

from ._helpers import assert_int8_match, rand_int8, scale_for, shapes  # noqa: E402

SHAPES = shapes(
    gpu=[(1, 1, 1536), (2, 7, 1280), (2, 33, 384), (1, 130, 5120), (3, 1, 384), (1, 2048, 1536)],
    cpu=[(1, 1, 24), (2, 7, 40), (2, 33, 48), (1, 70, 16)],
)


def _case(b, l, d, width, device, per_channel):
    x_q = rand_int8(b, l, d, device=device)
    x_scale = torch.tensor(0.05, device=device)
    w_q = rand_int8(d, width, device=device)
    w_scale = (torch.rand(d, device=device) * 0.01 + 1e-3) if per_channel else torch.tensor(4e-3, device=device)
    bias = torch.randn(d, device=device)
    return x_q, x_scale, w_q, w_scale, bias


def _out_scale(x_q, x_scale, w_q, w_scale, bias, state):
    w = w_q.float() * (w_scale.reshape(-1, 1) if w_scale.numel() > 1 else w_scale)
    st = None if state is None else state.float() * x_scale
    u, _ = causal_conv1d_ref(x_q.float() * x_scale, w, bias, st)
    return scale_for(u)


@pytest.mark.parametrize("b,l,d", SHAPES)
@pytest.mark.parametrize("width", [4, 2])
@pytest.mark.parametrize("with_state", [False, True])
def test_causal_conv1d_int8_matches_ref(b, l, d, width, with_state, device):
    x_q, xs, w_q, ws, bias = _case(b, l, d, width, device, per_channel=width == 4)
    state = rand_int8(b, d, width - 1, device=device) if with_state else None
    out_scale = _out_scale(x_q, xs, w_q, ws, bias, state)
    u_q, new_state = causal_conv1d_int8(x_q, xs, w_q, ws, bias, state, out_scale)
    ref_u, ref_state = causal_conv1d_int8_ref(x_q, xs, w_q, ws, bias, state, out_scale)
    assert_int8_match(u_q, ref_u)
    assert torch.equal(new_state, ref_state)


@pytest.mark.parametrize("b,l,d", SHAPES[1:3])
def test_causal_conv1d_int8_chunked_equals_full(b, l, d, device):
    """Prefill continuing from a state, and token-by-token decode, equal one pass."""
    x_q, xs, w_q, ws, bias = _case(b, l, d, 4, device, per_channel=False)
    out_scale = _out_scale(x_q, xs, w_q, ws, None, None)
    full, full_state = causal_conv1d_int8(x_q, xs, w_q, ws, None, None, out_scale)
    cut = l // 2
    a, st = causal_conv1d_int8(x_q[:, :cut], xs, w_q, ws, None, None, out_scale)
    bq, st = causal_conv1d_int8(x_q[:, cut:], xs, w_q, ws, None, st, out_scale)
    assert torch.equal(torch.cat([a, bq], 1), full) and torch.equal(st, full_state)
    st, steps = None, []
    for t in range(l):
        y, st = causal_conv1d_int8(x_q[:, t:t + 1], xs, w_q, ws, None, st, out_scale)
        steps.append(y)
    assert torch.equal(torch.cat(steps, 1), full) and torch.equal(st, full_state)


def test_causal_conv1d_int8_strided_input(device):
    """x as a slice of a wider tensor (the in_proj output xz), not contiguous."""
    b, l, d = (2, 7, 40) if device.type == "cpu" else (2, 33, 1280)
    xz = rand_int8(b, l, 2 * d, device=device)
    x_q = xz[..., :d]
    _, xs, w_q, ws, bias = _case(b, l, d, 4, device, per_channel=True)
    out_scale = _out_scale(x_q, xs, w_q, ws, bias, None)
    u_q, st = causal_conv1d_int8(x_q, xs, w_q, ws, bias, None, out_scale)
    ref_u, ref_st = causal_conv1d_int8_ref(x_q.contiguous(), xs, w_q, ws, bias, None, out_scale)
    assert_int8_match(u_q, ref_u)
    assert torch.equal(st, ref_st)


def test_causal_conv1d_int8_rejects_bad_state(device):
    x_q, xs, w_q, ws, bias = _case(1, 3, 16, 4, device, per_channel=False)
    with pytest.raises(ValueError, match="conv_state_q must have shape"):
        causal_conv1d_int8(x_q, xs, w_q, ws, bias, rand_int8(1, 16, 4, device=device), xs)


@pytest.mark.parametrize("l", [1, 5])
def test_causal_conv1d_int8_state_in_place(l, device):
    """state_out = the input state: updated in place, same result as a new tensor."""
    b, d = (2, 40) if device.type == "cpu" else (2, 1280)
    x_q, xs, w_q, ws, bias = _case(b, l, d, 4, device, per_channel=True)
    state = rand_int8(b, d, 3, device=device)
    out_scale = _out_scale(x_q, xs, w_q, ws, bias, state)
    ref_u, ref_state = causal_conv1d_int8_ref(x_q, xs, w_q, ws, bias, state, out_scale)
    u_q, new_state = causal_conv1d_int8(x_q, xs, w_q, ws, bias, state, out_scale, state_out=state)
    assert new_state.data_ptr() == state.data_ptr()
    assert_int8_match(u_q, ref_u)
    assert torch.equal(state, ref_state)
