"""hadamard_quant (Triton) against the dense product hadamard_quant_ref(y, s, R)."""

from __future__ import annotations

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
