"""rmsnorm_quant and add_rmsnorm (Triton) against rmsnorm_quant_ref and add_rmsnorm_ref."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from quamba.kernels.rmsnorm_quant_ref import add_rmsnorm_ref, rmsnorm_quant_ref  # noqa: E402
from quamba.kernels.triton import add_rmsnorm, rmsnorm_quant  # noqa: E402

from ._helpers import assert_int8_match, assert_within_one_rounding, scale_for, shapes  # noqa: E402

SHAPES = shapes(gpu=[(1, 1, 2560), (2, 7, 1280), (1, 33, 1536), (3, 5, 384), (1, 2048, 2560)],
                cpu=[(1, 1, 48), (2, 7, 100), (1, 33, 384)])


@pytest.mark.parametrize("b,l,d", SHAPES)
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_rmsnorm_quant_matches_ref(b, l, d, with_residual, dtype, device):
    hidden = torch.randn(b, l, d, device=device, dtype=dtype) * 3
    residual = torch.randn(b, l, d, device=device, dtype=torch.float32) * 10 if with_residual else None
    weight = torch.rand(d, device=device, dtype=dtype) + 0.5
    eps = 1e-5
    ref_x = rmsnorm_quant_ref(hidden, residual, weight, eps, torch.tensor(1.0, device=device))[1]
    r = ref_x
    xf = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    scale = scale_for(xf)
    x_q, r_out = rmsnorm_quant(hidden, residual, weight, eps, scale)
    ref_q, ref_r = rmsnorm_quant_ref(hidden, residual, weight, eps, scale)
    assert r_out.dtype == torch.float32 and r_out.shape == (b, l, d)
    assert torch.equal(r_out, ref_r)      # one fp32 add each: bitwise equal
    assert_int8_match(x_q, ref_q)


def test_rmsnorm_quant_early_residual_gives_the_same(device):
    """early_residual only moves the residual's load before the programmatic-dependent-launch
    wait, early_trigger only when the next kernel may start: the same int8 rows and the same
    new residual, in place as the fused block runs it."""
    d = 48 if device.type == "cpu" else 2560
    hidden = torch.randn(3, 1, d, device=device, dtype=torch.float16) * 3
    weight = torch.rand(d, device=device, dtype=torch.float16) + 0.5
    scale = torch.tensor(0.05, device=device)
    residual = torch.randn(3, 1, d, device=device) * 10
    outs = []
    for early, trigger in ((False, False), (True, False), (True, True)):
        r = residual.clone()
        x_q, r_out = rmsnorm_quant(hidden, r, weight, 1e-5, scale, residual_out=r, early_residual=early,
                                   early_trigger=trigger)
        assert r_out.data_ptr() == r.data_ptr()
        outs.append((x_q, r))
    for x_q, r in outs[1:]:
        assert torch.equal(outs[0][0], x_q) and torch.equal(outs[0][1], r)


def test_rmsnorm_quant_rejects_bad_inputs(device):
    h = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match="weight must have shape"):
        rmsnorm_quant(h, None, torch.ones(7, device=device), 1e-5, torch.tensor(1.0, device=device))
    with pytest.raises(ValueError, match="per-tensor"):
        rmsnorm_quant(h, None, torch.ones(8, device=device), 1e-5, torch.ones(2, device=device))


@pytest.mark.parametrize("b,l,d", SHAPES)
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_add_rmsnorm_matches_ref(b, l, d, with_residual, dtype, device):
    hidden = torch.randn(b, l, d, device=device, dtype=dtype) * 3
    residual = torch.randn(b, l, d, device=device, dtype=torch.float32) * 10 if with_residual else None
    weight = torch.rand(d, device=device, dtype=dtype) + 0.5
    normed, r_out = add_rmsnorm(hidden, residual, weight, 1e-5, dtype)
    ref_normed, ref_r = add_rmsnorm_ref(hidden, residual, weight, 1e-5, dtype)
    assert r_out.dtype == torch.float32 and r_out.shape == (b, l, d)
    assert torch.equal(r_out, ref_r)
    assert_within_one_rounding(normed, ref_normed)


def test_add_rmsnorm_out_dtype_and_strided_hidden(device):
    """fp16 activations normed to fp32 (out_dtype), hidden a non-contiguous slice."""
    wide = torch.randn(3, 5, 2 * 100, device=device, dtype=torch.float16)
    hidden = wide[..., ::2]
    residual = torch.randn(3, 5, 100, device=device)
    weight = torch.rand(100, device=device) + 0.5
    normed, r_out = add_rmsnorm(hidden, residual, weight, 1e-6, torch.float32)
    ref_normed, ref_r = add_rmsnorm_ref(hidden, residual, weight, 1e-6, torch.float32)
    assert normed.dtype == torch.float32
    assert torch.equal(r_out, ref_r)
    assert_within_one_rounding(normed, ref_normed)


def test_add_rmsnorm_matches_the_fp_block(device):
    """The twin computes what models.mamba.Block does before its mixer."""
    from quamba.models.mamba import RMSNorm

    norm = RMSNorm(64, eps=1e-5, device=device, dtype=torch.float16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    hidden = torch.randn(2, 3, 64, device=device, dtype=torch.float16)
    residual = torch.randn(2, 3, 64, device=device)
    with torch.no_grad():
        block_r = hidden.float() + residual
        block_normed = norm(block_r).to(torch.float16)
        ref_normed, ref_r = add_rmsnorm_ref(hidden, residual, norm.weight, norm.eps, torch.float16)
    assert torch.equal(ref_r, block_r) and torch.equal(ref_normed, block_normed)


def test_add_rmsnorm_rejects_bad_inputs(device):
    h = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match="weight must have shape"):
        add_rmsnorm(h, None, torch.ones(7, device=device), 1e-5)
    with pytest.raises(ValueError, match="out_dtype"):
        add_rmsnorm(h, None, torch.ones(8, device=device), 1e-5, torch.int8)


def test_residual_out_buffer(device):
    """residual_out= writes the new residual into a given buffer (the prefill graphs'
    pair) with the same values as a fresh one, also in place over the residual input;
    a wrong buffer is refused."""
    h = torch.randn(2, 5, 48, device=device, dtype=torch.float16)
    r = torch.randn(2, 5, 48, device=device)
    w = torch.rand(48, device=device) + 0.5
    s = torch.tensor(0.03, device=device)
    for fn, last in ((rmsnorm_quant, s), (add_rmsnorm, torch.float16)):
        x, res = fn(h, r, w, 1e-5, last)
        buf = torch.empty(2, 5, 48, device=device)
        x2, res2 = fn(h, r, w, 1e-5, last, residual_out=buf)
        assert res2.data_ptr() == buf.data_ptr()
        assert torch.equal(res2, res) and torch.equal(x2, x)
        inplace = r.clone()
        x3, res3 = fn(h, inplace, w, 1e-5, last, residual_out=inplace)
        assert res3.data_ptr() == inplace.data_ptr()
        assert torch.equal(res3, res) and torch.equal(x3, x)
        with pytest.raises(ValueError, match="residual_out"):
            fn(h, r, w, 1e-5, last, residual_out=torch.empty(2, 5, 48, device=device, dtype=torch.float16))
