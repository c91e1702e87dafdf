"""hadamard_quant (Triton) against the dense product hadamard_quant_ref(y, s, R)."""

from __future__ import annotations

import importlib

import pytest
import torch

pytest.importorskip("triton")

from quamba.kernels.hadamard_quant_ref import hadamard_quant_ref  # noqa: E402
from quamba.kernels.triton import hadamard_quant  # noqa: E402
from quamba.quantization.hadamard import hadamard_matrix  # noqa: E402

from ._helpers import assert_int8_match, scale_for, shapes  # noqa: E402

# n = m * 2^k for every base m; the GPU list has the Mamba widths.
WIDTHS = shapes(gpu=[384, 1280, 1536, 2048, 2560, 3584, 5120],
                cpu=[64, 96, 80, 56, 384])
# Many rows take the tensor-core kernel where the width has a Paley factor above 12 (where 2^k >=
# 16; `_prefill_takes_mma`): (1, 2048) on the GPU; on the CPU the variant tests below call it
# directly on 70 rows.
ROWS = shapes(gpu=[(1,), (2, 7), (33,), (70,), (2, 40), (1, 2048)], cpu=[(1,), (2, 7), (33,), (70,), (2, 40)])


@pytest.mark.parametrize("n", WIDTHS)
@pytest.mark.parametrize("lead", ROWS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_hadamard_quant_matches_dense(n, lead, dtype, device):
    R = hadamard_matrix(n, device=device)
    y = torch.randn(*lead, n, device=device, dtype=dtype)
    y[..., 3] = 40.0                      # an outlier channel, what the rotation is for
    scale = scale_for(y.float() @ R.float())
    out = hadamard_quant(y, scale)
    assert out.shape == y.shape and out.dtype == torch.int8
    assert_int8_match(out, hadamard_quant_ref(y, scale, R))


def test_hadamard_quant_rejects_unsupported_width(device):
    with pytest.raises(ValueError, match="Hadamard"):
        hadamard_quant(torch.randn(2, 36, device=device), torch.tensor(1.0, device=device))


@pytest.mark.parametrize("n", [w for w in WIDTHS if w % 3 == 0 or w % 5 == 0 or w % 7 == 0])
@pytest.mark.parametrize("mix", [0, 1, 2])
@pytest.mark.parametrize("rows", [1, 4])
def test_hadamard_quant_mix_variants(n, mix, rows, device):
    """Every way of applying the small factor (rank-1 loop, fp32 dot, tf32x3 dot)
    and several rows a program give the dense product."""
    hq = importlib.import_module("quamba.kernels.triton.hadamard_quant")   # the module, not the function
    R = hadamard_matrix(n, device=device)
    y = torch.randn(5, n, device=device)
    scale = scale_for(y @ R.float())
    m, p, A = hq._factor(n, y.device)
    out = torch.empty(5, n, dtype=torch.int8, device=device)
    hq._launch(y, scale, m, p, A, out, mix, rows=rows)
    assert_int8_match(out, hadamard_quant_ref(y, scale, R))


# The tensor-core kernel's variants on 70 rows (a ragged last row tile). Widths: 384 = 12·32
# (M_PAD 16), 1280 = 20·64 (M_PAD 32), 64 (no mix), 512 = 2^9 (with MAX_K 256: H_16 ⊗ H_32,
# the Sylvester factor joins the mix), 640 = 20·32 with MAX_K 16: the layout mamba-2.8b's
# 5120 = 20·256 takes with the default MAX_K 128 (a 40-row mix padded to 64, one row a tile).
MMA_CASES = [
    (384, {}), (1280, {}), (64, {}),
    (384, {"MIX_2D": False}), (1280, {"MIX_2D": False}),
    (384, {"MIX": 0}), (384, {"MIX": 1}), (1280, {"MIX": 1, "MIX_2D": False}),
    (384, {"TILE_ROWS": 16}),                          # one row a tile (2-D dots)
    (1280, {"TILE_ROWS": 32, "MIX_2D": False}),        # one row a tile, 3-D path
    (384, {"TILE_ROWS": 64, "COLS": 16, "ROW_BLOCKS": 3}),
    (384, {"MAX_K": 16}),                              # 12·32 as 24·16: A ⊗ H_2, M_PAD 32
    (512, {"MAX_K": 256}),                             # 2^9 as 16·32: H_16 ⊗ H_32
    (640, {"MAX_K": 16}),                              # 20·32 as 40·16: M_PAD 64, as 2.8b runs
]


@pytest.mark.parametrize("n,cfg", MMA_CASES, ids=[f"{n}-{c}" for n, c in MMA_CASES])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_hadamard_quant_mma_variants(n, cfg, dtype, device):
    """The many-row tensor-core kernel in every mix precision and layout, tile shape and
    factorization gives the dense product (fp32 y goes through its tf32x3 slices)."""
    hq = importlib.import_module("quamba.kernels.triton.hadamard_quant")
    R = hadamard_matrix(n, device=device)
    y = torch.randn(70, n, device=device).to(dtype)
    y[:, 5] = 30.0
    scale = scale_for(y.float() @ R.float())
    out = torch.full((70, n), 99, dtype=torch.int8, device=device)
    hq._launch_mma(y, scale, out, **cfg)
    assert_int8_match(out, hadamard_quant_ref(y, scale, R))


def test_hadamard_quant_dispatch(device, monkeypatch):
    """Many rows take the tensor-core kernel's prefill config where it was measured faster:
    above _MMA_MIN_ROWS rows where the width's Paley factor is above 12, from
    _MMA_MIN_ELEMENTS_SMALL_MIX elements where it is 12, never for powers of two (the
    butterfly has no mix and stays ahead). Up to _DECODE_MMA_MAX_ROWS rows, widths with a
    Paley factor take its decode config (16-column blocks; up to 64 rows where the factor is
    above 12). Widths with 2^k < 16 always take the butterfly kernel."""
    hq = importlib.import_module("quamba.kernels.triton.hadamard_quant")
    calls = []
    real = hq._launch_mma
    monkeypatch.setattr(hq, "_launch_mma",
                        lambda *a, **k: calls.append({n: v for n, v in k.items() if n != "trigger_first"})
                        or real(*a, **k))
    # The m = 12 threshold lowered to 300 rows of 384, so that the interpreter reaches it in CI.
    monkeypatch.setattr(hq, "_MMA_MIN_ELEMENTS_SMALL_MIX", 300 * 384)
    s = torch.tensor(0.05, device=device)
    decode, lo, hi = hq._DECODE_MMA_CONFIG, hq._DECODE_MMA_MAX_ROWS, hq._MMA_MIN_ROWS
    for M, n, expect in [(1, 384, [decode]), (lo, 384, [decode]), (lo + 1, 384, []), (hi, 384, []),
                         (hi + 1, 384, []), (300, 384, [{}]), (hi + 1, 96, []), (1, 96, []), (1, 64, []),
                         (hi + 1, 64, []), (hi + 1, 640, [{}]), (hi, 640, []),
                         (lo + 1, 640, [decode]), (64, 640, [decode]), (65, 640, [])]:   # 640 = 20 * 32
        calls.clear()
        y = torch.randn(M, n, device=device, dtype=torch.float16)
        out = hadamard_quant(y, s)
        assert calls == expect, (M, n)
        assert_int8_match(out, hadamard_quant_ref(y, s, hadamard_matrix(n, device=device)))


_hq = importlib.import_module("quamba.kernels.triton.hadamard_quant")
# Widths the decode config serves (the others, 2^k < 16, take the butterfly kernel).
DECODE_WIDTHS = [n for n in WIDTHS
                 if _hq._mma_plan(n, torch.device("cpu"), {**_hq._MMA_CONFIG, **_hq._DECODE_MMA_CONFIG})]


@pytest.mark.parametrize("n", DECODE_WIDTHS)
@pytest.mark.parametrize("rows", [1, 3, 64])
def test_hadamard_quant_decode_config(n, rows, device):
    """The tensor-core kernel with the decode config (a row tile a program, 16 columns),
    on the model's fp16 y."""
    hq = _hq
    R = hadamard_matrix(n, device=device)
    y = torch.randn(rows, n, device=device, dtype=torch.float16)
    y[:, 7] = 30.0
    scale = scale_for(y.float() @ R.float())
    out = torch.full((rows, n), 99, dtype=torch.int8, device=device)
    hq._launch_mma(y, scale, out, **hq._DECODE_MMA_CONFIG)
    assert_int8_match(out, hadamard_quant_ref(y, scale, R))
    # early_trigger only lets the next kernel start sooner: the same bits.
    assert torch.equal(hadamard_quant(y, scale, early_trigger=True), hadamard_quant(y, scale))
