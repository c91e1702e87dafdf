"""selective_scan_int8 returning the int8 rotated y (``hadamard_scale``): a decode step
does the rotation inside the scan kernel (``hadamard_quant_chunk``). Checked against the
two launches (scan, then hadamard_quant) and against the PyTorch twins composed the
same way (selective_scan_int8_ref, then hadamard_quant_ref with the dense rotation)."""

from __future__ import annotations

import importlib

import pytest
import torch

pytest.importorskip("triton")

from quamba.kernels.hadamard_quant_ref import hadamard_quant_ref  # noqa: E402
from quamba.kernels.selective_scan_int8_ref import selective_scan_int8_ref  # noqa: E402
from quamba.kernels.triton import selective_scan_int8  # noqa: E402
from quamba.kernels.triton._common import zeroed_counters  # noqa: E402
from quamba.quantization.hadamard import hadamard_matrix  # noqa: E402

from ._helpers import assert_int8_match, scale_for, shapes  # noqa: E402
from .test_selective_scan import _int8_case  # noqa: E402
from .test_selective_scan_fused_dt import _dt_proj_case  # noqa: E402

scan_mod = importlib.import_module("quamba.kernels.triton.selective_scan")

# (batch, dim, dt_rank): dims whose rotation splits into m' chunks of K (mamba-2.8b 5120 =
# 40 x 128, 790m 3072 = 24 x 128, 1.4b 4096 = 32 x 128, 130m 1536 = 12 x 128, the
# reference 31m model's 1280 = 20 x 64, the tiny model's 384 = 12 x 32).
CASES = shapes(
    gpu=[(1, 5120, 160), (64, 5120, 160), (4, 1536, 96), (3, 3072, 96), (2, 4096, 128), (5, 1280, 40),
         (2, 384, 12)],
    cpu=[(2, 384, 12), (1, 1280, 40), (3, 64, 4)],
)


def _case(b, d, r, device, fused_dt=True):
    """A decode step, and a rotation scale that clips the top of the rotated y."""
    if fused_dt:
        args, proj = _dt_proj_case(b, 1, d, 16, r, True, device)
        proj["dt_q"] = None
    else:
        args, proj = _int8_case(b, 1, d, 16, device), {}
    y, _ = selective_scan_int8(**args, **proj)
    R = hadamard_matrix(d, torch.float32, device)
    return args, proj, scale_for(y.float() @ R)


def _run(args, proj, scale, mode, monkeypatch):
    """The scan with the rotation, QUAMBA_SCAN_HADAMARD=mode; the state updated in place."""
    monkeypatch.setenv("QUAMBA_SCAN_HADAMARD", mode)
    state = args["initial_state"].clone()
    yq, h = selective_scan_int8(**{**args, "initial_state": state}, **proj, state_out=state,
                                hadamard_scale=scale)
    assert h.data_ptr() == state.data_ptr()
    return yq, h


@pytest.mark.parametrize("b,d,r", CASES)
def test_fused_rotation_equals_two_launches(b, d, r, device, monkeypatch):
    args, proj, scale = _case(b, d, r, device)
    yq, h = _run(args, proj, scale, "fused", monkeypatch)
    yq2, h2 = _run(args, proj, scale, "launch", monkeypatch)
    assert yq.dtype == torch.int8 and yq.shape == (b, 1, d)
    assert int((yq.int().abs() == 127).sum()) > 0, "the case should reach the clamp"
    # The chunks' sums are associated differently from the standalone kernel's (K = 128
    # chunks here, 2^k there), so a value on a rounding boundary may land one step away.
    assert_int8_match(yq, yq2)
    # The state is the same math in a different program shape (the GPU compiler may
    # contract it differently: last bits).
    torch.testing.assert_close(h, h2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("b,d,r", CASES[:2])
@pytest.mark.parametrize("fused_dt", [True, False])
def test_fused_rotation_matches_reference_composition(b, d, r, fused_dt, device, monkeypatch):
    """The twins composed: the reference scan's fp16 y, rotated by the dense fp32 R and
    quantized. The scans agree to ~1e-5, so a few more values than between the two
    kernels sit on the other side of a boundary (allowed: 1%, one step)."""
    args, proj, scale = _case(b, d, r, device, fused_dt)
    yq, _ = _run(args, proj, scale, "fused", monkeypatch)
    if fused_dt:
        from quamba.kernels.triton import int8_linear_quant
        ref_args = {**args, "dt_q": int8_linear_quant(proj["dt_low_q"], proj["dt_w_q"], proj["dt_low_scale"],
                                                      proj["dt_w_scale"], None, args["dt_scale"])}
    else:
        ref_args = args
    y_ref, _ = selective_scan_int8_ref(**ref_args)
    ref = hadamard_quant_ref(y_ref, scale, hadamard_matrix(d, torch.float32, device))
    assert_int8_match(yq, ref, max_frac=1e-2)


def test_rotation_counters_are_left_zeroed(device, monkeypatch):
    """The last program of each row resets its counter: a second launch (a CUDA-graph
    replay) gives the same result."""
    b, d, r = 3, 384, 12
    args, proj, scale = _case(b, d, r, device)
    first, _ = _run(args, proj, scale, "fused", monkeypatch)
    assert int(zeroed_counters("scan_hadamard", first.device, b)[:b].abs().sum()) == 0
    again, _ = _run(args, proj, scale, "fused", monkeypatch)
    assert torch.equal(first, again)


@pytest.mark.parametrize("seqlen,mode,launches", [(1, "fused", 0), (1, "launch", 1), (3, "fused", 1)])
def test_rotation_routing(seqlen, mode, launches, device, monkeypatch):
    """A decode step rotates inside the scan; longer inputs (and QUAMBA_SCAN_HADAMARD=launch)
    launch hadamard_quant after it, as do widths the chunked plan cannot split (48 = 12 x 4)."""
    calls = []
    real = scan_mod.hadamard_quant
    monkeypatch.setattr(scan_mod, "hadamard_quant", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setenv("QUAMBA_SCAN_HADAMARD", mode)
    args = _int8_case(2, seqlen, 64, 16, device)
    yq, _ = selective_scan_int8(**args, hadamard_scale=torch.tensor(0.05, device=device))
    assert yq.dtype == torch.int8 and yq.shape == (2, seqlen, 64)
    assert len(calls) == launches
    calls.clear()
    monkeypatch.setenv("QUAMBA_SCAN_HADAMARD", "fused")
    selective_scan_int8(**_int8_case(2, 1, 48, 16, device), hadamard_scale=torch.tensor(0.05, device=device))
    assert len(calls) == 1


def test_rotation_rejects_bad_inputs(device, monkeypatch):
    args = _int8_case(1, 1, 64, 16, device)
    with pytest.raises(ValueError, match="hadamard_scale must be a per-tensor scale"):
        selective_scan_int8(**args, hadamard_scale=torch.ones(2, device=device))
    monkeypatch.setenv("QUAMBA_SCAN_HADAMARD", "sometimes")
    with pytest.raises(ValueError, match="QUAMBA_SCAN_HADAMARD='sometimes'"):
        selective_scan_int8(**args, hadamard_scale=torch.tensor(0.05, device=device))
