import pytest
import torch

from quamba.errors import QuambaError
from quamba.quantization.hadamard import hadamard_factors, hadamard_matrix


@pytest.mark.parametrize("n", [1, 2, 64, 12, 20, 28, 40, 192, 384, 640, 1280, 1536, 28 * 16, 40 * 32])
def test_orthonormal_in_fp64(n):
    R = hadamard_matrix(n)
    assert torch.allclose(R @ R.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    # entries are ±1/sqrt(n): a true Hadamard matrix, not just any rotation
    assert torch.allclose(R.abs(), torch.full_like(R, n ** -0.5))


@pytest.mark.parametrize("n", [0, 3, 100, 36, 1000, 24 * 3])
def test_unsupported_sizes_are_rejected(n):
    with pytest.raises(QuambaError, match=f"size {n}"):
        hadamard_factors(n)


def test_spreads_an_outlier():
    y = torch.zeros(1280, dtype=torch.float64)
    y[7] = 100.0
    rotated = y @ hadamard_matrix(1280)
    assert rotated.abs().max() < 100.0 / 1280 ** 0.5 + 1e-9
