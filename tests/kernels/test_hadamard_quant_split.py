"""hadamard_quant_split (decode rows, one program per chunk) against the dense product and
against the one-program-a-row kernel."""

from __future__ import annotations

import importlib

import pytest
import torch

pytest.importorskip("triton")

from quamba.kernels.hadamard_quant_ref import hadamard_quant_ref  # noqa: E402
from quamba.kernels.triton.hadamard_quant_split import hadamard_quant_split  # noqa: E402
from quamba.quantization.hadamard import hadamard_matrix  # noqa: E402

from ._helpers import assert_int8_match, scale_for, shapes  # noqa: E402

hq = importlib.import_module("quamba.kernels.triton.hadamard_quant")   # the module, not the function

# n = m * 2^k with m > 1 and 2^k >= 16; the GPU list has Mamba widths (5120 = 20 * 256).
WIDTHS = shapes(gpu=[192, 1280, 1536, 3584, 5120], cpu=[192, 640, 448])


@pytest.mark.parametrize("n", WIDTHS)
@pytest.mark.parametrize("rows", [1, 3, 64])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_split_matches_dense_and_row_kernel(n, rows, dtype, device):
    R = hadamard_matrix(n, device=device)
    y = torch.randn(rows, n, device=device, dtype=dtype)
    y[:, 3] = 40.0                          # an outlier channel
    scale = scale_for(y.float() @ R.float())
    m, p, A = hq._factor(n, y.device)
    out = hadamard_quant_split(y, scale.reshape(()), m, p, A, torch.empty(rows, n, dtype=torch.int8, device=device))
    assert_int8_match(out, hadamard_quant_ref(y, scale, R))
    row_kernel = torch.empty_like(out)
    hq._launch(y, scale.reshape(()), m, p, A, row_kernel, 2)
    assert_int8_match(out, row_kernel)


def test_split_counters_reset_between_launches(device):
    """The per-row counters are left at zero, so back-to-back launches (a CUDA graph
    replaying decode steps) each mix exactly once."""
    n = 640 if device.type == "cpu" else 5120
    m, p, A = hq._factor(n, torch.device(device))
    y = torch.randn(2, n, device=device)
    scale = scale_for(y @ hadamard_matrix(n, device=device).float()).reshape(())
    first = hadamard_quant_split(y, scale, m, p, A, torch.empty(2, n, dtype=torch.int8, device=device))
    for _ in range(3):
        again = hadamard_quant_split(y, scale, m, p, A, torch.empty(2, n, dtype=torch.int8, device=device))
        assert torch.equal(again, first)
