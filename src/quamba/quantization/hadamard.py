"""Orthonormal Walsh–Hadamard matrices for the widths Mamba models have.

A Hadamard matrix H of order n has entries ±1 and H Hᵀ = n I, so R = H / √n is
orthogonal: rotating an activation by R and folding Rᵀ into the next weight
leaves the product unchanged, while spreading a few huge outliers over all
channels (Quamba §4.2, QuaRot). Sylvester's construction gives every 2^k;
d_inner is rarely a power of two (mamba-130m 1536 = 12·128, mamba-2.8b 5120 =
20·256), so we use R = (H_m ⊗ H_{2^k}) / √n with a Paley matrix H_m of order
m ∈ {12, 20, 28}. 40·2^k is 20·2^(k+1), so it is covered too.

Paley construction I (q prime, q ≡ 3 mod 4, order q+1): with the Jacobsthal
matrix Q_ij = χ(j − i) (χ the quadratic character mod q),
    H = I + [[0, 1ᵀ], [−1, Q]].
Paley construction II (q prime, q ≡ 1 mod 4, order 2(q+1)): with the symmetric
conference matrix S = [[0, 1ᵀ], [1, Q]],
    H = S ⊗ [[1, −1], [−1, −1]] + I ⊗ [[1, 1], [1, −1]].
"""

from __future__ import annotations

from functools import lru_cache

import torch

from quamba.errors import QuambaError

__all__ = ["hadamard_matrix", "hadamard_factors", "SUPPORTED_HADAMARD_BASES"]

# base order -> (Paley construction, prime q)
_PALEY = {12: (1, 11), 20: (1, 19), 28: (2, 13)}
SUPPORTED_HADAMARD_BASES = (1, 12, 20, 28)


def hadamard_factors(n: int) -> tuple[int, int]:
    """Split n into (m, 2^k) with m in SUPPORTED_HADAMARD_BASES, or raise QuambaError."""
    if n > 0:
        for m in (28, 20, 12, 1):
            if n % m == 0:
                p = n // m
                if p & (p - 1) == 0:
                    return m, p
    raise QuambaError(
        f"no Hadamard transform of size {n}: supported sizes are 2^k, 12·2^k, 20·2^k, 28·2^k and 40·2^k")


def _jacobsthal(q: int) -> torch.Tensor:
    squares = {(i * i) % q for i in range(1, q)}
    chi = [0] + [1 if i in squares else -1 for i in range(1, q)]
    idx = torch.arange(q)
    diff = (idx[None, :] - idx[:, None]) % q
    return torch.tensor(chi, dtype=torch.float64)[diff]


@lru_cache(maxsize=None)
def _paley(m: int) -> torch.Tensor:
    construction, q = _PALEY[m]
    Q = _jacobsthal(q)
    ones = torch.ones(q, 1, dtype=torch.float64)
    if construction == 1:
        top = torch.cat([torch.zeros(1, 1, dtype=torch.float64), ones.T], dim=1)
        bottom = torch.cat([-ones, Q], dim=1)
        return torch.eye(q + 1, dtype=torch.float64) + torch.cat([top, bottom], dim=0)
    S = torch.cat([torch.cat([torch.zeros(1, 1, dtype=torch.float64), ones.T], dim=1),
                   torch.cat([ones, Q], dim=1)], dim=0)
    a = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    return torch.kron(S, a) + torch.kron(torch.eye(q + 1, dtype=torch.float64), b)


def _sylvester(p: int) -> torch.Tensor:
    H = torch.ones(1, 1, dtype=torch.float64)
    while H.shape[0] < p:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H


@lru_cache(maxsize=16)
def _orthonormal(n: int) -> torch.Tensor:
    m, p = hadamard_factors(n)
    H = _sylvester(p) if m == 1 else torch.kron(_paley(m), _sylvester(p))
    return H / (n ** 0.5)


def hadamard_matrix(n: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The orthonormal (n, n) rotation R = (H_m ⊗ H_{2^k}) / √n; R Rᵀ = I."""
    return _orthonormal(n).to(dtype=dtype, device=device)
