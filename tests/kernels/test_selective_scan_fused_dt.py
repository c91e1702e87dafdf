"""selective_scan_int8 computing dt_proj itself (dt_low_q, dt_w_q) against the two-launch
version (int8_linear_quant, then the scan) and the PyTorch references composed the same way."""

from __future__ import annotations

import importlib

import pytest
import torch

pytest.importorskip("triton")

from quamba.kernels.int8_linear_ref import int8_linear_ref  # noqa: E402
from quamba.kernels.quantize_ref import quantize_ref  # noqa: E402
from quamba.kernels.selective_scan_int8_ref import selective_scan_int8_ref  # noqa: E402
from quamba.kernels.triton import int8_linear_quant, selective_scan_int8  # noqa: E402

from ._helpers import assert_int8_match, rand_int8, rel_err, shapes  # noqa: E402
from .test_selective_scan import STATE_TOL, Y_TOL, _int8_case  # noqa: E402

scan_mod = importlib.import_module("quamba.kernels.triton.selective_scan")

# (batch, seqlen, dim, dstate, dt_rank, per-channel weight scale)
CASES = shapes(
    gpu=[(1, 1, 5120, 16, 160, True), (64, 1, 5120, 16, 160, False), (1, 300, 5120, 16, 160, True),
         (2, 33, 1280, 16, 40, False), (2, 7, 384, 16, 12, True), (1, 2048, 1536, 16, 96, True)],
    cpu=[(2, 1, 24, 16, 5, True), (1, 1, 40, 16, 160, False), (2, 7, 12, 5, 3, False),
         (1, 33, 24, 16, 12, True), (2, 70, 12, 5, 2, True)],
)


def _dt_proj_case(b, l, d, n, r, per_channel, device):
    """dt_proj's input as the strided dt_low slice of x_proj's merged output, like the fused block."""
    args = _int8_case(b, l, d, n, device)
    del args["dt_q"]
    lq = rand_int8(b, l, r + 2 * n, device=device)[..., :r]
    w = rand_int8(d, r, device=device)
    # Scales that make int8 dt spread over about +-60 (std), so that a few percent clamp.
    lq_scale = torch.tensor(0.05, device=device)
    w_scale = torch.tensor(0.0025 / r ** 0.5, device=device)
    if per_channel:
        w_scale = w_scale * (torch.rand(d, device=device) + 0.5)
    return args, dict(dt_low_q=lq, dt_low_scale=lq_scale, dt_w_q=w, dt_w_scale=w_scale)


def _two_launches(args, proj, **kw):
    dtq = int8_linear_quant(proj["dt_low_q"], proj["dt_w_q"], proj["dt_low_scale"], proj["dt_w_scale"], None,
                            args["dt_scale"])
    return selective_scan_int8(dt_q=dtq, **args, **kw)


def _assert_same_scan(y, h, y2, h2, device):
    """The int8 dt is the same either way and so is the code after it, but the GPU
    compiler may contract that code into FMAs differently in two kernels (seen on an
    H100: y equal, the state differing in its last bits). Exact in the interpreter."""
    if device.type == "cpu":
        assert torch.equal(y, y2) and torch.equal(h, h2)
    torch.testing.assert_close(h, h2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y, y2, rtol=2e-3, atol=1e-3)
    assert (y == y2).float().mean() > 0.999


@pytest.fixture
def fused(monkeypatch):
    """dt computed inside the scan kernel for every shape (by default only where it is faster)."""
    monkeypatch.setattr(scan_mod, "_PREFILL_DT_PROJ", "fused")
    monkeypatch.setattr(scan_mod, "_FUSED_DT_MAX_DECODE_ROWS", 1 << 30)


@pytest.mark.parametrize("b,l,shared_launches", [(1, 1, 0), (4, 1, 0), (5, 1, 1), (1, 7, 1)])
def test_fused_dt_default_routing(b, l, shared_launches, device, monkeypatch):
    """By default a decode step of up to 4 tokens computes dt inside the scan; larger
    batches and prefill launch dt_proj first (faster on an H100, see selective_scan.py)."""
    calls = []
    real = scan_mod.int8_linear_quant
    monkeypatch.setattr(scan_mod, "int8_linear_quant", lambda *a, **k: calls.append(1) or real(*a, **k))
    args, proj = _dt_proj_case(b, l, 12, 16, 5, False, device)
    selective_scan_int8(dt_q=None, **args, **proj)
    assert len(calls) == shared_launches


@pytest.mark.parametrize("b,l,d,n,r,per_channel", CASES)
def test_fused_dt_equals_two_launches(b, l, d, n, r, per_channel, device, fused, monkeypatch):
    # The fused kernel scans a sequence whole; so must the two launches to match bit for bit
    # (they may otherwise cut it into segments: selective_scan_segments).
    monkeypatch.setattr(importlib.import_module("quamba.kernels.triton.selective_scan"), "_PREFILL_SEGMENTS", 1)
    args, proj = _dt_proj_case(b, l, d, n, r, per_channel, device)
    y, h = selective_scan_int8(dt_q=None, **args, **proj)
    y2, h2 = _two_launches(args, proj)
    _assert_same_scan(y, h, y2, h2, device)


@pytest.mark.parametrize("b,l,d,n,r,per_channel", CASES[:3])
def test_fused_dt_matches_reference_composition(b, l, d, n, r, per_channel, device, fused):
    """The PyTorch twins composed the same way: dt_proj (the same fp32 epilogue) requantized,
    then the reference scan. dt agrees to the int8 step, the scan within the usual tolerances."""
    args, proj = _dt_proj_case(b, l, d, n, r, per_channel, device)
    y, h = selective_scan_int8(dt_q=None, **args, **proj)
    dt_ref = quantize_ref(int8_linear_ref(proj["dt_low_q"], proj["dt_w_q"], proj["dt_low_scale"],
                                          proj["dt_w_scale"]), args["dt_scale"])
    dt_kernel = int8_linear_quant(proj["dt_low_q"], proj["dt_w_q"], proj["dt_low_scale"], proj["dt_w_scale"],
                                  None, args["dt_scale"])
    assert_int8_match(dt_kernel, dt_ref)
    assert int((dt_ref.int().abs() == 127).sum()) > 0, "the case should reach the clamp"
    ref_y, ref_h = selective_scan_int8_ref(dt_q=dt_ref, **args)
    assert rel_err(y, ref_y) < Y_TOL and rel_err(h, ref_h) < STATE_TOL


@pytest.mark.parametrize("l", [1, 9])
def test_fused_dt_state_in_place(l, device, fused):
    b, d, n, r = (2, 12, 16, 5) if device.type == "cpu" else (2, 1536, 16, 96)
    args, proj = _dt_proj_case(b, l, d, n, r, True, device)
    y2, h2 = _two_launches(args, proj)
    h = args["initial_state"].clone()
    args["initial_state"] = h
    y, h_out = selective_scan_int8(dt_q=None, **args, **proj, state_out=h)
    assert h_out.data_ptr() == h.data_ptr()
    _assert_same_scan(y, h, y2, h2, device)


@pytest.mark.parametrize("b", [1, 8])
def test_early_state_gives_the_same_step(b, device):
    """early_state only moves the state's load before the programmatic-dependent-launch wait
    (the decode step's promise that the kernel just before does not write it): a decode step,
    in place as the fused block runs it, gives the same bits either way."""
    d, n, r = (24, 16, 5) if device.type == "cpu" else (5120, 16, 160)
    args, proj = _dt_proj_case(b, 1, d, n, r, False, device)
    outs = []
    for early in (False, True):
        h = args["initial_state"].clone()
        y, _ = selective_scan_int8(dt_q=None, **{**args, "initial_state": h}, **proj, state_out=h, early_state=early)
        outs.append((y, h))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("b,r", [(1, 160), (3, 5), (4, 48), (1, 300)])
def test_decode_dt_weight_early_or_looped_gives_the_same_step(b, r, device, monkeypatch):
    """QUAMBA_SCAN_DTW: dt_proj's weight rows loaded whole before pdl_wait (early, the
    default) or in K blocks after it (loop): the same int32 sums, so the same int8 dt and
    (in the interpreter) the same bits; on the GPU the two kernels' code after dt may be
    contracted into FMAs differently (see _assert_same_scan)."""
    d, n = (24, 16) if device.type == "cpu" else (5120, 16)
    args, proj = _dt_proj_case(b, 1, d, n, r, True, device)
    launched = []
    kernel = scan_mod._selective_scan_kernel

    class Spy:   # records each launch's DTW_EARLY, then launches the real kernel
        def __getitem__(self, grid):
            def launch(*a, **kw):
                launched.append(kw["DTW_EARLY"])
                return kernel[grid](*a, **kw)
            return launch
    monkeypatch.setattr(scan_mod, "_selective_scan_kernel", Spy())
    outs = []
    for mode in ("loop", "early"):
        monkeypatch.setenv("QUAMBA_SCAN_DTW", mode)
        outs.append(selective_scan_int8(dt_q=None, **args, **proj))
    assert launched == [False, r <= 256]   # larger ranks than mamba's keep the loop (registers)
    _assert_same_scan(*outs[1], *outs[0], device)
    _assert_same_scan(*outs[1], *_two_launches(args, proj), device)
    monkeypatch.setenv("QUAMBA_SCAN_DTW", "ealy")
    with pytest.raises(ValueError, match="QUAMBA_SCAN_DTW"):
        selective_scan_int8(dt_q=None, **args, **proj)


@pytest.mark.parametrize("impl,dt_proj", [("chunked", "launch"), ("serial", "fused")])
def test_fused_dt_other_prefill_paths(impl, dt_proj, device, monkeypatch):
    """dt_proj as its own launch inside the wrapper, and fused into the serial kernel."""
    monkeypatch.setattr(scan_mod, "_PREFILL_IMPL", impl)
    monkeypatch.setattr(scan_mod, "_PREFILL_DT_PROJ", dt_proj)
    b, l, d, n, r = (2, 11, 12, 5, 7) if device.type == "cpu" else (2, 300, 1280, 16, 80)
    args, proj = _dt_proj_case(b, l, d, n, r, False, device)
    y, h = selective_scan_int8(dt_q=None, **args, **proj)
    y2, h2 = _two_launches(args, proj)
    _assert_same_scan(y, h, y2, h2, device)


def test_fused_dt_rejects_bad_inputs(device):
    args, proj = _dt_proj_case(1, 3, 16, 16, 4, False, device)
    with pytest.raises(ValueError, match="either dt_q or dt_low_q"):
        selective_scan_int8(dt_q=rand_int8(1, 3, 16, device=device), **args, **proj)
    with pytest.raises(ValueError, match="are all required"):
        selective_scan_int8(dt_q=None, **args, **{**proj, "dt_w_scale": None})
    with pytest.raises(ValueError, match="dt_w_q must have shape"):
        selective_scan_int8(dt_q=None, **args, **{**proj, "dt_w_q": rand_int8(16, 5, device=device)})
    with pytest.raises(ValueError, match="dt_w_scale must be per-tensor"):
        selective_scan_int8(dt_q=None, **args, **{**proj, "dt_w_scale": torch.ones(8, device=device)})
    with pytest.raises(ValueError, match="dt_low_q must be"):
        selective_scan_int8(dt_q=None, **args, **{**proj, "dt_low_q": rand_int8(1, 2, 4, device=device)})
