"""int8_linear_quant_conv_step (in_proj with the conv's decode step in its epilogue)
against the two kernels it replaces and against the reference twins."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from quamba.kernels.causal_conv1d_int8_ref import causal_conv1d_int8_ref  # noqa: E402
from quamba.kernels.int8_linear_ref import int8_linear_ref  # noqa: E402
from quamba.kernels.quantize_ref import quantize_ref  # noqa: E402
from quamba.kernels.triton import causal_conv1d_int8, int8_linear_quant, int8_linear_quant_conv_step  # noqa: E402
from quamba.kernels.triton.int8_linear import _route  # noqa: E402

from ._helpers import assert_int8_match, rand_int8, shapes  # noqa: E402

# (batch, N, K, D, width): D conv channels among in_proj's N outputs (D not a multiple of the
# column tile in some), batch 65 past the decode GEMV (the two-launch fallback), a K long
# enough for the split-K reduction (whose last program runs the epilogue).
CASES = shapes(
    gpu=[(1, 10240, 2560, 5120, 4), (3, 3072, 768, 1536, 4), (8, 400, 96, 200, 4), (64, 4096, 1024, 2048, 4),
         (2, 128, 5120, 64, 4), (65, 640, 160, 320, 4), (5, 96, 64, 48, 3)],
    cpu=[(1, 96, 48, 48, 4), (3, 80, 64, 40, 4), (2, 64, 2048, 32, 4), (2, 70, 40, 35, 3), (65, 48, 32, 24, 4)],
)


def _inputs(batch, N, K, D, width, device, per_channel, with_bias):
    g = torch.Generator(device="cpu").manual_seed(batch * 7 + N)
    x_q = rand_int8(batch, 1, K, device=device)
    w_q = rand_int8(N, K, device=device)
    xs = torch.tensor(0.011, device=device)
    ws = (torch.rand(N, generator=g) * 1e-3 + 2e-4).to(device)
    # A per-column output scale (in_proj's x and z halves have their own), chosen so that
    # part of the range clips.
    out_scale = torch.cat([torch.full((D,), 0.9), torch.full((N - D,), 0.6)]).to(device)
    cw = rand_int8(D, width, device=device)
    cws = (torch.rand(D, generator=g) * 0.01 + 0.002).to(device) if per_channel else torch.tensor(0.006, device=device)
    cb = (torch.randn(D, generator=g) * 0.3).to(device) if with_bias else None
    state = rand_int8(batch, D, width - 1, device=device)
    return x_q, w_q, xs, ws, out_scale, cw, cws, cb, torch.tensor(0.9, device=device), state, torch.tensor(0.02, device=device)


@pytest.mark.parametrize("batch,N,K,D,width", CASES)
@pytest.mark.parametrize("per_channel,with_bias", [(True, True), (False, False)])
def test_conv_step_matches_the_two_kernels_and_the_refs(batch, N, K, D, width, per_channel, with_bias, device):
    x_q, w_q, xs, ws, out_scale, cw, cws, cb, cxs, state, cus = _inputs(batch, N, K, D, width, device,
                                                                         per_channel, with_bias)
    state_fused = state.clone()
    xz, u = int8_linear_quant_conv_step(x_q, w_q, xs, ws, out_scale, cw, cws, cb, cxs, state_fused, cus)
    assert xz.shape == (batch, 1, N) and u.shape == (batch, 1, D) and u.dtype == torch.int8

    # The kernels it replaces: bit-identical (same int8 in, same fp32 arithmetic).
    xz2 = int8_linear_quant(x_q, w_q, xs, ws, None, out_scale)
    state_two = state.clone()
    u2, _ = causal_conv1d_int8(xz2[..., :D], cxs, cw, cws, cb, state_two, cus, state_out=state_two)
    assert torch.equal(xz, xz2)
    assert torch.equal(u, u2)
    assert torch.equal(state_fused, state_two)

    # The reference twins.
    assert_int8_match(xz, quantize_ref(int8_linear_ref(x_q, w_q, xs, ws), out_scale))
    u_ref, state_ref = causal_conv1d_int8_ref(xz[..., :D].contiguous(), cxs, cw, cws, cb, state, cus)
    assert_int8_match(u, u_ref)
    assert torch.equal(state_fused, state_ref)
    assert not torch.equal(state_fused, state)          # the state moved on by one token


def test_conv_step_on_the_cuda_core_route(device, monkeypatch):
    """Where one token's in_proj takes the CUDA-core kernel (QUAMBA_GEMV_ROWS=all), the
    conv runs as its own launch: same results."""
    batch, N, K, D, width = 1, 96, 48, 48, 4
    args = _inputs(batch, N, K, D, width, device, True, True)
    state = args[-2]
    fused_state = state.clone()
    xz, u = int8_linear_quant_conv_step(*args[:-2], fused_state, args[-1])
    monkeypatch.setenv("QUAMBA_GEMV_ROWS", "all")
    assert _route(batch, N, K)[0] == "rows"
    rows_state = state.clone()
    xz2, u2 = int8_linear_quant_conv_step(*args[:-2], rows_state, args[-1])
    assert torch.equal(xz, xz2) and torch.equal(u, u2) and torch.equal(fused_state, rows_state)


def test_conv_step_rejects_bad_inputs(device):
    x_q, w_q, xs, ws, out_scale, cw, cws, cb, cxs, state, cus = _inputs(2, 64, 32, 32, 4, device, True, True)
    with pytest.raises(ValueError, match="one decode step"):
        int8_linear_quant_conv_step(rand_int8(2, 3, 32, device=device), w_q, xs, ws, out_scale, cw, cws, cb, cxs,
                                    state, cus)
    with pytest.raises(ValueError, match="conv_state"):
        int8_linear_quant_conv_step(x_q, w_q, xs, ws, out_scale, cw, cws, cb, cxs, state[:, :16], cus)
    with pytest.raises(ValueError, match="conv_weight"):
        int8_linear_quant_conv_step(x_q, w_q, xs, ws, out_scale, rand_int8(80, 4, device=device), cws, cb, cxs,
                                    state, cus)
