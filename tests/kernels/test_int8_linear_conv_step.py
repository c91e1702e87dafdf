"""int8_linear_conv_step (in_proj + one conv step in one launch) against its twins:
the two Triton kernels it replaces (bit for bit) and the PyTorch references."""

from __future__ import annotations

import importlib

import pytest
import torch

pytest.importorskip("triton")

from quamba.kernels.causal_conv1d_int8_ref import causal_conv1d_int8_ref  # noqa: E402
from quamba.kernels.int8_linear_ref import int8_linear_ref  # noqa: E402
from quamba.kernels.quantize_ref import quantize_ref  # noqa: E402
from quamba.kernels.triton import causal_conv1d_int8, int8_linear_conv_step, int8_linear_quant  # noqa: E402

from ._helpers import assert_int8_match, rand_int8, scale_for, shapes  # noqa: E402

# (batch, K, D): in_proj of a model with d_model K and d_inner D has N = 2 D columns.
# D = 48 and 1000 put the x/z boundary inside a 64-column program. The decode GEMV would split
# K for (2, 2048, 4096) (1.4b) and (3, 256, 128) (on the interpreter's 4 "SMs"); with the conv it
# does not. Batches 9, 16 and 64 take the two-kernel fallback (CONV_STEP_MAX_M), which must
# agree as well.
CASES = shapes(gpu=[(1, 2560, 5120), (3, 768, 1536), (8, 2560, 5120), (2, 2048, 4096), (16, 1024, 1000),
                    (64, 2560, 5120), (40, 768, 1536)],
               cpu=[(1, 64, 96), (3, 40, 48), (8, 64, 48), (3, 256, 128), (9, 40, 48)])


def _case(batch, K, D, width, device, per_channel, with_bias):
    N = 2 * D
    x_q = rand_int8(batch, 1, K, device=device)
    x_scale = torch.tensor(0.02, device=device)
    w_q = rand_int8(N, K, device=device)
    w_scale = torch.rand(N, device=device) * 1e-3 + 1e-4
    lin = int8_linear_ref(x_q, w_q, x_scale, w_scale, None, out_dtype=torch.float32)
    conv_x_scale, z_scale = scale_for(lin[..., :D]), scale_for(lin[..., D:])
    out_scale = torch.cat([conv_x_scale.expand(D), z_scale.expand(D)]).contiguous()
    conv_w = rand_int8(D, width, device=device)
    conv_ws = torch.rand(D, device=device) * 0.01 + 1e-3 if per_channel else torch.tensor(4e-3, device=device)
    conv_b = torch.randn(D, device=device) if with_bias else None
    state = rand_int8(batch, D, width - 1, device=device)
    return x_q, w_q, x_scale, w_scale, out_scale, conv_w, conv_ws, conv_b, state, conv_x_scale


def _u_scale(xz_q, conv_x_scale, conv_w, conv_ws, conv_b, state):
    """A u scale that clips a little, from a float run of the same conv step."""
    D, width = conv_w.shape
    x = torch.cat([state.float(), xz_q[:, 0, :D, None].float()], dim=-1) * conv_x_scale
    w = conv_w.float() * (conv_ws.reshape(-1, 1) if conv_ws.numel() > 1 else conv_ws)
    v = (x * w).sum(-1) + (0 if conv_b is None else conv_b)
    return scale_for(torch.nn.functional.silu(v))


@pytest.mark.parametrize("batch,K,D", CASES)
# Width 5 is beyond CONV_STEP_MAX_WIDTH: the two-kernel fallback, which must agree as well.
@pytest.mark.parametrize("width,per_channel,with_bias", [(4, True, True), (4, False, False), (2, False, True),
                                                        (3, True, False), (5, True, True)])
# early_state / early_weight move loads before the PDL wait: the same bits.
@pytest.mark.parametrize("early_state,early_weight", [(False, False), (True, False), (True, True)])
def test_matches_the_two_kernels_and_the_references(batch, K, D, width, per_channel, with_bias, early_state,
                                                     early_weight, device):
    x_q, w_q, xs, ws, os_, conv_w, conv_ws, conv_b, state, cxs = _case(batch, K, D, width, device, per_channel,
                                                                       with_bias)
    # The two kernels it replaces, on a copy of the state.
    xz_q = int8_linear_quant(x_q, w_q, xs, ws, None, os_, static_weight=True)
    us = _u_scale(xz_q, cxs, conv_w, conv_ws, conv_b, state)
    two_state = state.clone()
    u_two, _ = causal_conv1d_int8(xz_q[..., :D], cxs, conv_w, conv_ws, conv_b, two_state, us,
                                  state_out=two_state)

    one_state = state.clone()
    u, z = int8_linear_conv_step(x_q, w_q, xs, ws, os_, conv_w, conv_ws, conv_b, one_state, cxs, us,
                                 early_state=early_state, early_weight=early_weight)
    assert u.shape == (batch, 1, D) and z.shape == (batch, 1, D)
    assert u.dtype == z.dtype == torch.int8
    assert torch.equal(z, xz_q[..., D:])
    assert torch.equal(u, u_two)
    assert torch.equal(one_state, two_state)

    # And against the PyTorch twins (the same ops the CPU reference model runs).
    ref_xz = quantize_ref(int8_linear_ref(x_q, w_q, xs, ws, None, out_dtype=torch.float32), os_)
    assert_int8_match(z, ref_xz[..., D:])
    ref_u, ref_state = causal_conv1d_int8_ref(ref_xz[..., :D], cxs, conv_w, conv_ws, conv_b, state, us)
    assert_int8_match(u, ref_u)
    if torch.equal(ref_xz[..., :D].cpu(), xz_q[..., :D].cpu()):
        assert torch.equal(one_state.cpu(), ref_state.cpu())


# K = 600 is 10 of the interpreter's 64-wide K blocks (the last one partial), 2560 is 10 of the
# GPU's 256-wide ones: every count below fits unclipped (16 is clipped to 8). K = 500 and 2000 are
# 8 blocks, the last partial: 8 early blocks reach past K, which their mask must cover.
_EARLY_CASE = shapes(gpu=[(2, 2560, 5120), (2, 2000, 4096)], cpu=[(2, 600, 384), (2, 500, 384)])


@pytest.mark.parametrize("batch,K,D", _EARLY_CASE)
@pytest.mark.parametrize("blocks", [0, 1, 2, 4, 8, 16])
def test_early_weight_blocks_change_no_bit(batch, K, D, blocks, device):
    """in_proj's early weight blocks are loaded as one tile before the wait and multiplied by one
    product after it, the rest of K in the loop: every count gives the two kernels' bits."""
    x_q, w_q, xs, ws, os_, conv_w, conv_ws, conv_b, state, cxs = _case(batch, K, D, 4, device, True, True)
    assert int8_linear_conv_step.__globals__["_conv_fusable"](batch, 2 * D, K)   # the tensor-core GEMV
    xz_q = int8_linear_quant(x_q, w_q, xs, ws, None, os_, static_weight=True)
    us = _u_scale(xz_q, cxs, conv_w, conv_ws, conv_b, state)
    two_state = state.clone()
    u_two, _ = causal_conv1d_int8(xz_q[..., :D], cxs, conv_w, conv_ws, conv_b, two_state, us, state_out=two_state)
    one_state = state.clone()
    u, z = int8_linear_conv_step(x_q, w_q, xs, ws, os_, conv_w, conv_ws, conv_b, one_state, cxs, us,
                                 early_state=True, early_weight=blocks)
    assert torch.equal(z, xz_q[..., D:])
    assert torch.equal(u, u_two)
    assert torch.equal(one_state, two_state)


@pytest.mark.parametrize("batch,K,D", CASES)
def test_takes_one_launch_up_to_the_batch_cap(batch, K, D, device, monkeypatch):
    """The fused kernel is what runs up to CONV_STEP_MAX_M sequences, without a K split (the
    fallback would hide a broken epilogue behind a correct result), and not beyond."""
    lin_mod = importlib.import_module("quamba.kernels.triton.int8_linear")
    calls = []
    real = lin_mod._launch
    monkeypatch.setattr(lin_mod, "_launch", lambda *a, **k: calls.append(k.get("conv")) or real(*a, **k))
    x_q, w_q, xs, ws, os_, conv_w, conv_ws, conv_b, state, cxs = _case(batch, K, D, 4, device, True, True)
    int8_linear_conv_step(x_q, w_q, xs, ws, os_, conv_w, conv_ws, conv_b, state, cxs, torch.tensor(0.05, device=device))
    if batch <= lin_mod.CONV_STEP_MAX_M:
        assert len(calls) == 1 and calls[0] is not None
    else:
        assert len(calls) == 1 and calls[0] is None   # in_proj alone, then the conv kernel


def test_rejects_a_prompt_and_a_state_of_the_wrong_shape(device):
    x_q, w_q, xs, ws, os_, conv_w, conv_ws, conv_b, state, cxs = _case(2, 64, 48, 4, device, True, True)
    us = torch.tensor(0.05, device=device)
    with pytest.raises(ValueError, match="one token per sequence"):
        int8_linear_conv_step(x_q.expand(2, 3, 64), w_q, xs, ws, os_, conv_w, conv_ws, conv_b, state, cxs, us)
    with pytest.raises(ValueError, match="conv_state_q must have shape"):
        int8_linear_conv_step(x_q, w_q, xs, ws, os_, conv_w, conv_ws, conv_b, state[:1], cxs, us)
    with pytest.raises(ValueError, match=r"conv_w_q must be \(D <= 96, width >= 2\)"):
        int8_linear_conv_step(x_q, w_q, xs, ws, os_, conv_w[:, :1], conv_ws, conv_b, state, cxs, us)
    with pytest.raises(ValueError, match="conv_w_scale must be per-tensor or"):
        int8_linear_conv_step(x_q, w_q, xs, ws, os_, conv_w, conv_ws[:3], conv_b, state, cxs, us)
    with pytest.raises(ValueError, match="conv_bias must have shape"):
        int8_linear_conv_step(x_q, w_q, xs, ws, os_, conv_w, conv_ws, conv_b[:3], state, cxs, us)
