"""Exact numerics (quamba.kernels.numerics): each kernel's fp64 variant gives the bits of its
reference twin computed on the CPU.

The references always run on the CPU (on a GPU machine the kernels run on the GPU), so on a
GPU these are CPU-against-GPU checks. What they can see differs by kernel:

- the scan's fp16 y and fp32 state show every last bit: the fast scan fails this test, on the
  H100 and under the CPU interpreter alike (the check at the end of the test);
- the norm, conv and rotation emit int8, and a last-bit difference crosses int8's grid only
  rarely: on the H100 the fast rotation failed only its tensor-core shape (300 x 1536), the fast
  norm and conv passed these int8 checks. For them this is a check
  that the fp64 variants run and agree where the model consumes their output; the bit-level
  evidence is the model test (tests/quantization/test_fused_block.py: logits and states
  identical) and the 31m model's 64 greedy tokens (docs/benchmarks.md).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from quamba.kernels.causal_conv1d_int8_ref import causal_conv1d_int8_ref  # noqa: E402
from quamba.kernels.hadamard_quant_ref import hadamard_quant_ref  # noqa: E402
from quamba.kernels.rmsnorm_quant_ref import rmsnorm_quant_ref  # noqa: E402
from quamba.kernels.selective_scan_int8_ref import selective_scan_int8_ref  # noqa: E402
from quamba.kernels.triton import causal_conv1d_int8, hadamard_quant, rmsnorm_quant, selective_scan_int8  # noqa: E402
from quamba.quantization.hadamard import hadamard_matrix  # noqa: E402

from ._helpers import rand_int8, scale_for, shapes  # noqa: E402


@pytest.mark.parametrize("b,l,d", shapes(gpu=[(1, 1, 2560), (3, 64, 1536)], cpu=[(1, 1, 48), (2, 33, 384)]))
def test_rmsnorm_quant_exact_is_the_cpu_reference(b, l, d, device):
    g = torch.Generator().manual_seed(d)
    hidden = (torch.randn(b, l, d, generator=g) * 3).half()
    residual = torch.randn(b, l, d, generator=g) * 10
    weight = (torch.rand(d, generator=g) + 0.5).half()
    r = hidden.float() + residual
    scale = scale_for(r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True)) * weight.float())
    ref_q, ref_r = rmsnorm_quant_ref(hidden, residual, weight, 1e-5, scale, exact=True)
    q, r_out = rmsnorm_quant(*(t.to(device) for t in (hidden, residual, weight)), 1e-5, scale.to(device),
                             exact=True)
    assert torch.equal(r_out.cpu(), ref_r)
    assert torch.equal(q.cpu(), ref_q)


@pytest.mark.parametrize("b,l,d", shapes(gpu=[(2, 1, 5120), (1, 300, 1536)], cpu=[(1, 1, 64), (2, 40, 96)]))
@pytest.mark.parametrize("with_state", [False, True])
def test_causal_conv1d_int8_exact_is_the_cpu_reference(b, l, d, with_state, device):
    g = torch.Generator().manual_seed(l)
    x_q, w_q = rand_int8(b, l, d, device="cpu"), rand_int8(d, 4, device="cpu")
    state = rand_int8(b, d, 3, device="cpu") if with_state else None
    x_scale, w_scale = torch.tensor(0.0123), torch.rand(d, generator=g) * 0.01 + 0.001
    bias = torch.randn(d, generator=g)
    out_scale = torch.tensor(0.02)   # SiLU's outputs here reach about 2.5: a few clipped
    ref_u, ref_state = causal_conv1d_int8_ref(x_q, x_scale, w_q, w_scale, bias, state, out_scale, exact=True)
    args = [t if t is None else t.to(device) for t in (x_q, x_scale, w_q, w_scale, bias, state, out_scale)]
    u, new_state = causal_conv1d_int8(*args, exact=True)
    assert torch.equal(new_state.cpu(), ref_state)
    assert torch.equal(u.cpu(), ref_u)


def _scan_inputs(b, l, d, n, seed):
    g = torch.Generator().manual_seed(seed)
    q = [rand_int8(b, l, d, device="cpu") for _ in range(3)] + [rand_int8(b, l, n, device="cpu") for _ in range(2)]
    u_q, dt_q, z_q, B_q, C_q = q
    A = -torch.exp(torch.rand(d, n, generator=g, dtype=torch.float64) * 3)
    D, dt_bias = torch.randn(d, generator=g), torch.rand(d, generator=g) - 4
    h0 = torch.randn(b, d, n, generator=g)
    scales = dict(u_scale=torch.tensor(0.02), dt_scale=torch.tensor(0.03), B_scale=torch.tensor(0.05),
                  C_scale=torch.tensor(0.04), z_scale=torch.tensor(0.06))
    return u_q, dt_q, z_q, B_q, C_q, A, D, dt_bias, h0, scales


@pytest.mark.parametrize("b,l,d", shapes(gpu=[(1, 1, 5120), (4, 1, 1536), (2, 513, 768)],
                                         cpu=[(2, 1, 48), (1, 70, 40)]))
def test_selective_scan_int8_exact_is_the_cpu_reference(b, l, d, device):
    n = 16
    u_q, dt_q, z_q, B_q, C_q, A, D, dt_bias, h0, s = _scan_inputs(b, l, d, n, seed=l + d)

    def kernel(A, exact, state_out=None):
        t = [x.to(device) for x in (u_q, s["u_scale"], dt_q, s["dt_scale"], A, B_q, s["B_scale"], C_q,
                                    s["C_scale"], D, z_q, s["z_scale"], dt_bias, h0)]
        return selective_scan_int8(*t, state_out=state_out, exact=exact)

    ref_y, ref_h = selective_scan_int8_ref(u_q, s["u_scale"], dt_q, s["dt_scale"], A, B_q, s["B_scale"], C_q,
                                           s["C_scale"], D, z_q, s["z_scale"], dt_bias, h0, exact=True)
    y, h = kernel(A, True)
    assert y.dtype == torch.float16 and h.dtype == torch.float32
    assert torch.equal(h.cpu(), ref_h)
    assert torch.equal(y.cpu(), ref_y)
    # An fp16 state (--state-dtype fp16) is the fp32 state rounded once more, as the reference's
    # cache copy does (fp64 straight to fp16 would round differently).
    _, h16 = kernel(A, True, state_out=torch.empty(b, d, n, dtype=torch.float16, device=device))
    assert torch.equal(h16.cpu(), ref_h.half())
    if l > 1:   # the fast path (fp32, from an fp32 A) does not give these bits over a sequence
        assert not torch.equal(kernel(A.float(), False)[1].cpu(), ref_h)


@pytest.mark.parametrize("rows,n", shapes(gpu=[(1, 5120), (7, 4096), (300, 1536)], cpu=[(1, 192), (5, 64)]))
def test_hadamard_quant_exact_is_the_cpu_reference(rows, n, device):
    g = torch.Generator().manual_seed(n)
    y = (torch.randn(rows, n, generator=g) * torch.rand(n, generator=g) * 8).half()
    y[:, 3] = 900.0   # an outlier, as the SSM output has: the sum's terms span many binades
    R = hadamard_matrix(n, torch.float64)
    scale = scale_for((y.double() @ R).float())
    ref = hadamard_quant_ref(y, scale, R, exact=True)
    out = hadamard_quant(y.to(device), scale.to(device), exact=True)
    assert torch.equal(out.cpu(), ref)
