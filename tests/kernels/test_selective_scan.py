"""selective_scan_int8 / selective_scan (Triton) against their PyTorch twins."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

pytest.importorskip("triton")

from quamba.kernels.selective_scan_int8_ref import selective_scan_int8_ref  # noqa: E402
from quamba.kernels.selective_scan_ref import selective_scan_ref  # noqa: E402
from quamba.kernels.triton import selective_scan, selective_scan_int8  # noqa: E402

from ._helpers import GPU, rand_int8, rel_err, shapes  # noqa: E402

scan_mod = importlib.import_module("quamba.kernels.triton.selective_scan")

# (batch, seqlen, dim, dstate)
SHAPES = shapes(
    gpu=[(1, 1, 1536, 16), (2, 7, 1280, 16), (2, 33, 384, 16), (1, 300, 5120, 16), (3, 1, 384, 16),
         (1, 65, 384, 5)],
    cpu=[(1, 1, 24, 16), (2, 7, 40, 16), (1, 33, 16, 16), (2, 5, 24, 5)],
)
Y_TOL = 2e-3      # fp16 output: a few fp16 roundings, fp32 state
STATE_TOL = 1e-4  # fp32 state: exp/log rounding and summation order


def _int8_case(b, l, d, n, device, with_z=True, with_state=True):
    A = -torch.exp(torch.rand(d, n, device=device) * 2)                     # (-e^2, -1]
    dt_target = torch.rand(d, device=device) * 0.1 + 0.001
    dt_bias = torch.log(torch.expm1(dt_target))                             # softplus^-1
    return dict(
        u_q=rand_int8(b, l, d, device=device), u_scale=torch.tensor(0.02, device=device),
        dt_q=rand_int8(b, l, d, device=device), dt_scale=torch.tensor(0.01, device=device),
        A=A,
        B_q=rand_int8(b, l, n, device=device), B_scale=torch.tensor(0.03, device=device),
        C_q=rand_int8(b, l, n, device=device), C_scale=torch.tensor(0.03, device=device),
        D=torch.randn(d, device=device),
        z_q=rand_int8(b, l, d, device=device) if with_z else None,
        z_scale=torch.tensor(0.04, device=device) if with_z else None,
        dt_bias=dt_bias,
        initial_state=torch.randn(b, d, n, device=device) if with_state else None,
    )


@pytest.mark.parametrize("b,l,d,n", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
def test_selective_scan_int8_matches_ref(b, l, d, n, with_state, device):
    args = _int8_case(b, l, d, n, device, with_state=with_state)
    y, h = selective_scan_int8(**args)
    ref_y, ref_h = selective_scan_int8_ref(**args)
    assert y.dtype == torch.float16 and y.shape == (b, l, d)
    assert h.dtype == torch.float32 and h.shape == (b, d, n)
    assert rel_err(y, ref_y) < Y_TOL
    assert rel_err(h, ref_h) < STATE_TOL


def test_selective_scan_int8_no_z_no_d(device):
    args = _int8_case(2, 7, 40 if device.type == "cpu" else 1280, 16, device, with_z=False)
    args["D"] = None
    args["dt_bias"] = None
    y, h = selective_scan_int8(**args)
    ref_y, ref_h = selective_scan_int8_ref(**args)
    assert rel_err(y, ref_y) < Y_TOL and rel_err(h, ref_h) < STATE_TOL


def test_selective_scan_int8_decode_steps_equal_prefill(device):
    """Token-by-token decode from the prefill state continues the sequence."""
    b, l, d, n = (2, 9, 24, 16) if device.type == "cpu" else (2, 40, 1536, 16)
    args = _int8_case(b, l, d, n, device)
    y_full, h_full = selective_scan_int8(**args)
    cut = 4
    part = {k: (v[:, :cut] if k in ("u_q", "dt_q", "B_q", "C_q", "z_q") else v) for k, v in args.items()}
    y0, h = selective_scan_int8(**part)
    ys = [y0]
    for t in range(cut, l):
        step = {k: (v[:, t:t + 1] if k in ("u_q", "dt_q", "B_q", "C_q", "z_q") else v)
                for k, v in args.items()}
        step["initial_state"] = h
        y_t, h = selective_scan_int8(**step)
        ys.append(y_t)
    # Same per-step arithmetic, but compiled for other specializations (seqlen 1,
    # chunk 1), so FMA contraction may differ: equal up to fp32 rounding, and
    # the fp16 outputs up to one fp16 rounding step.
    assert rel_err(torch.cat(ys, 1), y_full) < 1e-3
    assert rel_err(h, h_full) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("b,l,d,n", SHAPES[:3])
def test_selective_scan_float_matches_ref(b, l, d, n, dtype, device):
    """The fp path (fp16 model), with u and z as strided slices of one xz tensor."""
    xz = torch.randn(b, l, 2 * d, device=device, dtype=dtype)
    u, z = xz[..., :d], xz[..., d:]
    delta = (torch.randn(b, l, d, device=device) * 0.5).to(dtype)
    A = -torch.exp(torch.rand(d, n, device=device))
    xdbl = torch.randn(b, l, 2 * n + 3, device=device, dtype=dtype)
    B, C = xdbl[..., 3:3 + n], xdbl[..., 3 + n:]
    D = torch.randn(d, device=device)
    delta_bias = torch.full((d,), math.log(math.expm1(0.01)), device=device)
    h0 = torch.randn(b, d, n, device=device)
    y, h = selective_scan(u, delta, A, B, C, D, z, delta_bias, True, h0)
    ref_y, ref_h = selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, True, h0)
    assert y.dtype == dtype
    assert rel_err(y, ref_y.float()) < (Y_TOL if dtype == torch.float16 else 1e-5)
    assert rel_err(h, ref_h) < STATE_TOL


def test_selective_scan_int8_rejects_bad_inputs(device):
    args = _int8_case(1, 3, 16, 16, device)
    args["B_q"] = rand_int8(1, 3, 8, device=device)
    with pytest.raises(ValueError, match="B must have shape"):
        selective_scan_int8(**args)
    args = _int8_case(1, 3, 16, 16, device)
    args["u_scale"] = torch.ones(16, device=device)
    with pytest.raises(ValueError, match="u_scale must be a per-tensor"):
        selective_scan_int8(**args)


@pytest.mark.parametrize("l", [1, 6])
def test_selective_scan_state_in_place(l, device):
    """state_out = initial_state: the state is updated in place (int8 and float paths)."""
    b, d, n = (2, 24, 16) if device.type == "cpu" else (2, 1536, 16)
    args = _int8_case(b, l, d, n, device)
    ref_y, ref_h = selective_scan_int8_ref(**args)
    h = args["initial_state"].clone()
    args["initial_state"] = h
    y, h_out = selective_scan_int8(**args, state_out=h)
    assert h_out.data_ptr() == h.data_ptr()
    assert rel_err(y, ref_y) < Y_TOL and rel_err(h, ref_h) < STATE_TOL
    u, dt = torch.randn(b, l, d, device=device), torch.rand(b, l, d, device=device) * 0.1
    B, C = torch.randn(b, l, n, device=device), torch.randn(b, l, n, device=device)
    h0 = torch.randn(b, d, n, device=device)
    ref_y, ref_h = selective_scan_ref(u, dt, args["A"], B, C, args["D"], None, None, True, h0.clone())
    y, _ = selective_scan(u, dt, args["A"], B, C, args["D"], None, None, True, h0, state_out=h0)
    assert rel_err(y, ref_y) < 1e-4 and rel_err(h0, ref_h) < STATE_TOL


@pytest.mark.parametrize("state_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("l", [1, 6])
def test_selective_scan_half_state_in_place(l, state_dtype, device):
    """A half-precision state (MambaLM.ssm_state_dtype) is read as fp32 and stored
    rounded once: what the reference gives from the same half state, cast on the copy
    back (as the reference mixers do), to within one rounding step."""
    b, d, n = (2, 24, 16) if device.type == "cpu" else (2, 1536, 16)
    args = _int8_case(b, l, d, n, device)
    h = args["initial_state"].to(state_dtype)
    args["initial_state"] = h.clone()
    ref_y, ref_h = selective_scan_int8_ref(**args)
    args["initial_state"] = h
    y, h_out = selective_scan_int8(**args, state_out=h)
    assert h_out.data_ptr() == h.data_ptr() and h.dtype == state_dtype
    assert rel_err(y, ref_y) < Y_TOL
    eps = torch.finfo(state_dtype).eps
    torch.testing.assert_close(h.float().cpu(), ref_h.to(state_dtype).float().cpu(), rtol=eps, atol=1e-6)

    u, dt = torch.randn(b, l, d, device=device), torch.rand(b, l, d, device=device) * 0.1
    B, C = torch.randn(b, l, n, device=device), torch.randn(b, l, n, device=device)
    h0 = torch.randn(b, d, n, device=device).to(state_dtype)
    ref_y, ref_h = selective_scan_ref(u, dt, args["A"], B, C, args["D"], None, None, True, h0.clone())
    y, _ = selective_scan(u, dt, args["A"], B, C, args["D"], None, None, True, h0, state_out=h0)
    assert rel_err(y, ref_y) < 1e-4
    torch.testing.assert_close(h0.float().cpu(), ref_h.to(state_dtype).float().cpu(), rtol=eps, atol=1e-6)


# Chunk boundaries: one step, less than a chunk, and several chunks with a
# ragged last one (the chunked kernel's tail steps must leave the state alone).
@pytest.mark.parametrize("l", [1, 7, 33, 70] if not GPU else [1, 7, 33, 70, 2048])
def test_selective_scan_int8_chunk_boundaries(l, device):
    b, d, n = (2, 12, 5) if device.type == "cpu" else (2, 1280, 16)
    args = _int8_case(b, l, d, n, device)
    y, h = selective_scan_int8(**args)
    ref_y, ref_h = selective_scan_int8_ref(**args)
    assert rel_err(y, ref_y) < Y_TOL and rel_err(h, ref_h) < STATE_TOL


@pytest.mark.parametrize("config", [(16, 8, 4, 1), (16, 4, 2, 4), (8, 16, 4, 2), (8, 16, 2, 2), (32, 8, 4, 4)])
def test_selective_scan_chunked_layouts(config, device, monkeypatch):
    """Other (BLOCK_D, CHUNK, num_warps, STATE_ROWS) of the chunked kernel give the same scan
    ((32, 8, 4, 4) is _CHUNKED_CONFIG_WIDE, for many programs; (8, 16, 2, 2) _CHUNKED_CONFIG_FEW)."""
    monkeypatch.setattr(scan_mod, "_CHUNKED_CONFIG", config)
    monkeypatch.setattr(scan_mod, "_CHUNKED_CONFIG_WIDE", None)
    monkeypatch.setattr(scan_mod, "_CHUNKED_CONFIG_FEW", None)
    b, l, d, n = (1, 19, 40, 16) if device.type == "cpu" else (2, 300, 1280, 16)   # d 40: blocks of 8/16/32
    args = _int8_case(b, l, d, n, device)
    y, h = selective_scan_int8(**args)
    ref_y, ref_h = selective_scan_int8_ref(**args)
    assert rel_err(y, ref_y) < Y_TOL and rel_err(h, ref_h) < STATE_TOL


def test_selective_scan_wide_tiles_from_about_two_programs_an_sm(monkeypatch):
    """The chunked kernel takes its wide tiles for int8 inputs where they fill about two
    programs an SM (and the state has 16 entries or more), the narrow ones otherwise."""
    monkeypatch.setattr(scan_mod, "interpret_mode", lambda: False)
    monkeypatch.setattr(scan_mod, "_num_sms", lambda device: 132)
    wide, narrow = scan_mod._CHUNKED_CONFIG_WIDE, scan_mod._CHUNKED_CONFIG
    pick = lambda batch, dim, n=16, int8=True: scan_mod._chunked_config(batch, dim, n, torch.device("cuda"),  # noqa: E731
                                                                       int8)
    assert pick(1, 5120) == narrow and pick(3, 2048) == narrow      # 160 and 192 programs
    assert pick(2, 5120) == wide and pick(4, 2048) == wide          # 320 and 256
    assert pick(64, 768) == wide
    assert pick(64, 5120, int8=False) == narrow                      # an fp16 model's scan
    assert pick(64, 5120, n=8) == narrow            # 8 state entries: too few columns for the wide tiles' lanes
    monkeypatch.setattr(scan_mod, "_CHUNKED_CONFIG_WIDE", None)
    assert pick(64, 5120) == narrow


def test_selective_scan_small_tiles_for_few_programs(monkeypatch):
    """int8 scans whose 8-channel programs stay within four an SM take the small tiles (1.4b's
    4096 channels at one sequence, short prompts of the narrower models); 2.8b's 5120, float
    inputs, and shapes that take the wide tiles do not."""
    monkeypatch.setattr(scan_mod, "interpret_mode", lambda: False)
    monkeypatch.setattr(scan_mod, "_num_sms", lambda device: 132)
    few, narrow, wide = scan_mod._CHUNKED_CONFIG_FEW, scan_mod._CHUNKED_CONFIG, scan_mod._CHUNKED_CONFIG_WIDE
    pick = lambda batch, dim, n=16, int8=True: scan_mod._chunked_config(batch, dim, n, torch.device("cuda"),  # noqa: E731
                                                                       int8)
    assert pick(1, 4096) == few and pick(1, 1536) == few and pick(2, 2048) == few     # 512, 192, 512 programs
    assert pick(1, 5120) == narrow and pick(3, 2048) == narrow                         # 640, 768
    assert pick(1, 4224) == few and pick(1, 4232) == narrow                           # 528 (4 an SM), 529
    assert pick(1, 4096, int8=False) == narrow
    assert pick(1, 4096, n=8) == narrow and pick(1, 4096, n=32) == narrow   # measured with 16 state entries only
    assert pick(8, 4096) == wide
    monkeypatch.setattr(scan_mod, "interpret_mode", lambda: True)
    assert pick(1, 4096) == narrow
    monkeypatch.setattr(scan_mod, "interpret_mode", lambda: False)
    monkeypatch.setattr(scan_mod, "_CHUNKED_CONFIG_FEW", None)
    assert pick(1, 4096) == narrow


def test_selective_scan_segments_rule(monkeypatch):
    """One sequence is cut into segments only where it leaves the GPU short of programs (the
    narrower models), into a power of two of at least 512 steps each."""
    monkeypatch.setattr(scan_mod, "interpret_mode", lambda: False)
    monkeypatch.setattr(scan_mod, "_num_sms", lambda device: 132)
    count = lambda length, dim, batch=1, int8=True: scan_mod._segment_count(  # noqa: E731
        batch, length, dim, torch.device("cuda"), int8)
    assert [count(2048, d) for d in (5120, 4096, 3072, 2048, 1536)] == [1, 1, 2, 4, 4]
    assert [count(n, 1536) for n in (512, 1023, 1024, 4096)] == [1, 1, 2, 4]
    assert [count(n, 1536, int8=False) for n in (1024, 2047, 2048)] == [1, 1, 4]     # float inputs
    assert count(2048, 1536, batch=2) == 1
    monkeypatch.setattr(scan_mod, "_PREFILL_SEGMENTS", 3)
    assert count(2048, 5120) == 3 and count(2, 5120) == 2


@pytest.mark.skipif(not GPU, reason="the interpreter never picks the wide or small tiles (the layout test runs "
                    "their configs there, BLOCK_D clamped to 16)")
@pytest.mark.parametrize("batch,config", [(8, "_CHUNKED_CONFIG_WIDE"), (1, "_CHUNKED_CONFIG_FEW")])
def test_selective_scan_tile_rules_match_reference(batch, config, monkeypatch):
    """A prefill with programs enough for the wide tiles (8 sequences), or few enough for the
    small ones (one), takes them (spied) and matches the reference."""
    picked = []
    real = scan_mod._chunked_config
    monkeypatch.setattr(scan_mod, "_chunked_config", lambda *a: picked.append(real(*a)) or picked[-1])
    args = _int8_case(batch, 300, 1280, 16, torch.device("cuda"))
    y, h = selective_scan_int8(**args)
    ref_y, ref_h = selective_scan_int8_ref(**args)
    assert picked == [getattr(scan_mod, config)]
    assert rel_err(y, ref_y) < Y_TOL and rel_err(h, ref_h) < STATE_TOL


@pytest.mark.parametrize("impl", ["chunked", "serial"])
def test_selective_scan_prefill_impls_agree(impl, device, monkeypatch):
    """The serial prefill kernel stays selectable and correct; both match the reference,
    the float path (fp32 in, fp32 out) tightly."""
    monkeypatch.setattr(scan_mod, "_PREFILL_IMPL", impl)
    b, l, d, n = (2, 21, 12, 5) if device.type == "cpu" else (2, 300, 1280, 16)
    args = _int8_case(b, l, d, n, device)
    y, h = selective_scan_int8(**args)
    ref_y, ref_h = selective_scan_int8_ref(**args)
    assert rel_err(y, ref_y) < Y_TOL and rel_err(h, ref_h) < STATE_TOL
    u, z = torch.randn(b, l, d, device=device), torch.randn(b, l, d, device=device)
    dt = torch.rand(b, l, d, device=device) - 3
    B, C = torch.randn(b, l, n, device=device), torch.randn(b, l, n, device=device)
    h0 = torch.randn(b, d, n, device=device)
    y, h = selective_scan(u, dt, args["A"], B, C, args["D"], z, args["dt_bias"], True, h0)
    ref_y, ref_h = selective_scan_ref(u, dt, args["A"], B, C, args["D"], z, args["dt_bias"], True, h0)
    assert rel_err(y, ref_y) < 1e-5 and rel_err(h, ref_h) < STATE_TOL


@pytest.mark.skipif(GPU, reason="the in-order composition is the interpreter's stand-in for tl.associative_scan")
def test_selective_scan_interpreter_in_order_equals_associative(monkeypatch):
    """Under the interpreter the chunked kernel composes a chunk's steps in order instead
    of by tl.associative_scan (which it runs element by element): the same combines in the
    same order, so equal bit for bit, and the kernel tests stand for the GPU's scan."""
    args = _int8_case(2, 19, 12, 16, torch.device("cpu"))
    y, h = selective_scan_int8(**args)
    monkeypatch.setattr(scan_mod, "_INTERPRETER_SCAN", "associative")
    y2, h2 = selective_scan_int8(**args)
    assert torch.equal(y, y2) and torch.equal(h, h2)


@pytest.mark.parametrize("segments", [2, 3, 4])
@pytest.mark.parametrize("with_z,with_state", [(True, True), (False, False)])
def test_selective_scan_segments_match_reference(segments, with_z, with_state, device, monkeypatch):
    """One sequence cut into segments scanned in parallel, their states combined and their
    outputs corrected (selective_scan_segments) gives the reference's scan: int8 and float
    paths, a ragged last segment, with and without gate and initial state, the correction in
    blocks of 8 steps on the CPU, 16 on the GPU (several a segment; a multiple of the chunk of
    the tiles the GPU takes there). On the GPU, 2 and 3 segments of 1280 channels take the small
    tiles (_CHUNKED_CONFIG_FEW: 320 and 480 programs), 4 the default ones (640)."""
    monkeypatch.setattr(scan_mod, "_PREFILL_SEGMENTS", segments)
    monkeypatch.setattr(scan_mod, "_DTSUM_EVERY", 8 if device.type == "cpu" else 16)
    b, l, d, n = (1, 29, 12, 16) if device.type == "cpu" else (1, 1000, 1280, 16)
    args = _int8_case(b, l, d, n, device, with_z=with_z, with_state=with_state)
    y, h = selective_scan_int8(**args)
    ref_y, ref_h = selective_scan_int8_ref(**args)
    assert rel_err(y, ref_y) < Y_TOL and rel_err(h, ref_h) < STATE_TOL
    u, dt = torch.randn(b, l, d, device=device), torch.rand(b, l, d, device=device) - 3
    B, C = torch.randn(b, l, n, device=device), torch.randn(b, l, n, device=device)
    z = torch.randn(b, l, d, device=device) if with_z else None
    h0 = torch.randn(b, d, n, device=device) if with_state else None
    y, h = selective_scan(u, dt, args["A"], B, C, args["D"], z, args["dt_bias"], True, h0)
    ref_y, ref_h = selective_scan_ref(u, dt, args["A"], B, C, args["D"], z, args["dt_bias"], True, h0)
    assert rel_err(y, ref_y) < 1e-5 and rel_err(h, ref_h) < STATE_TOL
