"""Kernel tests run on CUDA when there is one, else on Triton's CPU interpreter.

TRITON_INTERPRET must be set before the kernels are decorated (triton.jit reads
it then), so it is set here, before any test module imports quamba.kernels.triton.
On the interpreter the shapes are small (the whole directory in well under a
minute on two cores); on a GPU they include the model's real widths.
"""

from __future__ import annotations

import os

import pytest
import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if ON_GPU else "cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _gpu_tiles(monkeypatch):
    """The kernels' own tests run the tiles and program counts a GPU runs, masked last
    programs included, also under the interpreter (where whole-model tests take wide ones)."""
    try:
        from quamba.kernels.triton import _common
    except ImportError:          # no Triton: the test modules skip
        return
    monkeypatch.setattr(_common, "WIDE_INTERPRETER_TILES", False)
