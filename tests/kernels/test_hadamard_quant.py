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
ROWS = shapes(gpu=[(1,), (2, 7), (33,), (1, 2048)], cpu=[(1,), (2, 7), (33,)])


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
