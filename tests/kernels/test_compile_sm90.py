"""Every Triton kernel compiles for Hopper (sm_90), with the configurations the wrappers
launch on an H100, without a GPU: Triton's front end and its bundled ptxas run on the CPU.

The interpreter (which runs the kernels in CI) executes Python semantics and misses what
only the compiler checks: a jit function whose returns differ in type, a layout the
backend cannot lower, a tile that does not fit in shared memory. The cases are in
``_compile_sm90.py``, run in a subprocess without TRITON_INTERPRET (under it the kernels
are interpreted functions, which do not compile). Skipped where Triton has no CUDA
backend or no ptxas.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

from ._compile_sm90 import CASES  # noqa: E402

_PTXAS = os.environ.get("TRITON_PTXAS_PATH") or os.path.join(os.path.dirname(triton.__file__),
                                                              "backends", "nvidia", "bin", "ptxas")
try:
    importlib.import_module("triton.backends.nvidia.compiler")
    _SKIP = None if os.path.exists(_PTXAS) else f"no ptxas at {_PTXAS}"
except ImportError as exc:  # pragma: no cover - depends on the Triton build
    _SKIP = f"no CUDA backend in this Triton ({exc})"


@pytest.fixture(scope="module")
def compiled() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("_compile_sm90.py"))],
                         env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


@pytest.mark.skipif(_SKIP is not None, reason=str(_SKIP))
@pytest.mark.parametrize("label", [label for label, _, _ in CASES])
def test_kernel_compiles_for_sm90(label, compiled):
    assert compiled["status"][label] == "ok", f"{label}: {compiled['status'][label]}"


# The kernels that wait on the kernel before under programmatic dependent launch, and whether
# they let the next one start before their wait (TRIGGER_FIRST, a decode step's trigger chain)
# or after it. The interpreter runs neither instruction, so only the compiled code shows it.
_PDL_CASES = [label for label, _, _ in CASES
              if label.split("[")[0] in ("decode_gemv", "decode_gemv_rows", "decode_gemv_words", "decode_scan",
                                         "rmsnorm", "hadamard_decode")]


@pytest.mark.skipif(_SKIP is not None, reason=str(_SKIP))
@pytest.mark.parametrize("label", _PDL_CASES)
def test_trigger_first_kernels_let_the_next_start_before_their_wait(label, compiled):
    want = "trigger_first" if ("trigger_first" in label or "early_trigger" in label) else "wait_first"
    assert compiled["pdl_order"].get(label) == want
