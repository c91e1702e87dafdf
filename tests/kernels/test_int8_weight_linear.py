"""int8_weight_linear (Triton) against int8_weight_linear_ref, and the int8 LM head on it."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from quamba.kernels.int8_weight_linear_ref import int8_weight_linear_ref  # noqa: E402
from quamba.kernels.triton import int8_weight_linear  # noqa: E402
from quamba.quantization.qembedding import QEmbedding, QLMHead  # noqa: E402

from ._helpers import GPU, rand_int8, shapes  # noqa: E402

# (M, N, K): a decode step of the 2.8b and 130m heads (vocab 50280: not a multiple of any
# tile), a batch of 8 and 64 tokens, and prefill-sized M over a narrower table.
SHAPES = shapes(
    gpu=[(1, 50280, 2560), (2, 50280, 768), (8, 1000, 768), (64, 4099, 2560), (300, 50280, 768),
         (2048, 1000, 2560)],
    cpu=[(1, 100, 72), (3, 50, 40), (20, 33, 64), (70, 40, 48)],
)


@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_int8_weight_linear_matches_ref(M, N, K, dtype, device):
    x = torch.randn(M, K, device=device).to(dtype)
    w_q = rand_int8(N, K, device=device)
    w_scale = torch.rand(N, device=device) * 1e-3 + 1e-4
    out = int8_weight_linear(x, w_q, w_scale)
    assert out.shape == (M, N) and out.dtype == dtype
    _assert_close_to_ref(out, int8_weight_linear_ref(x, w_q, w_scale))


def _assert_close_to_ref(out, ref):
    """The same exact products summed in another fp32 order: one rounding step of the output,
    or, where the sum cancels to near zero, the fp32 error of sums as large as the largest
    outputs (measured up to 2e-6 of the largest |output| on the H100)."""
    assert out.dtype == ref.dtype and out.shape == ref.shape
    ref = ref.float().cpu()
    torch.testing.assert_close(out.float().cpu(), ref, rtol=torch.finfo(out.dtype).eps,
                               atol=1e-5 * float(ref.abs().max()))


def test_int8_weight_linear_3d_input_and_bad_inputs(device):
    x = torch.randn(2, 3, 40, device=device).half()
    w_q, w_scale = rand_int8(24, 40, device=device), torch.rand(24, device=device)
    out = int8_weight_linear(x, w_q, w_scale)
    assert out.shape == (2, 3, 24)
    _assert_close_to_ref(out, int8_weight_linear_ref(x, w_q, w_scale))
    with pytest.raises(ValueError, match="x must be float16, bfloat16"):
        int8_weight_linear(x.float(), w_q, w_scale)
    with pytest.raises(ValueError, match="K=40"):
        int8_weight_linear(x[..., :39], w_q, w_scale)
    with pytest.raises(ValueError, match="one float scale a row"):
        int8_weight_linear(x, w_q, w_scale[:5])
    with pytest.raises(ValueError, match="one float scale a row"):
        int8_weight_linear(x, w_q, torch.ones(24, dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match="K = 0"):
        int8_weight_linear(x[..., :0], w_q[:, :0], w_scale)
    with pytest.raises(ValueError, match="w_q must be int8"):
        int8_weight_linear(x, w_q.half(), w_scale)


@pytest.mark.skipif(not GPU, reason="the head takes the kernel for CUDA tensors only")
def test_int8_head_runs_the_kernel_on_cuda_and_captures_in_a_graph():
    """QLMHead on fp16 CUDA activations gives the kernel's result (not a dequantized copy of
    the table times the activations), also replayed from a CUDA graph."""
    table = QEmbedding.from_float(torch.randn(50280, 768, device="cuda") * 0.02)
    head = QLMHead(table, tied=True)
    h = torch.randn(2, 1, 768, device="cuda").half()
    eager = head(h)
    assert torch.equal(eager, int8_weight_linear(h, table.weight, table.weight_scale))
    _assert_close_to_ref(eager, int8_weight_linear_ref(h, table.weight, table.weight_scale))
    static_in = h.clone()
    graph = torch.cuda.CUDAGraph()
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        static_out = head(static_in)
    graph.replay()
    assert torch.equal(static_out, eager)


def test_reference_is_the_head_of_the_dequantized_table():
    """The twin against the plain formula it stands for: logits = h · (E_q · s_row)ᵀ, in fp64."""
    x = torch.randn(5, 48, dtype=torch.float64)
    w_q = rand_int8(30, 48, device="cpu")
    w_scale = torch.rand(30) * 1e-2
    want = x @ (w_q.double() * w_scale.double()[:, None]).T
    got = int8_weight_linear_ref(x.float(), w_q, w_scale)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not GPU, reason="4 GiB of output")
def test_int8_weight_linear_past_two_to_the_31_outputs():
    """43000 tokens of a 50280-row head: the output's offsets pass 2**31 (a perplexity batch of
    21 windows of 2048); the last rows are right, not an illegal address."""
    M, N, K = 43000, 50280, 16
    x = torch.randn(M, K, device="cuda").half()
    w_q, w_scale = rand_int8(N, K, device="cuda"), torch.rand(N, device="cuda") * 1e-2
    out = int8_weight_linear(x, w_q, w_scale)
    torch.cuda.synchronize()
    _assert_close_to_ref(out[-8:], int8_weight_linear_ref(x[-8:], w_q, w_scale))
    del out


def test_int8_head_on_the_cpu_is_the_reference():
    table = QEmbedding.from_float(torch.randn(100, 32) * 0.02)
    h = torch.randn(3, 32)
    assert torch.equal(QLMHead(table, tied=False)(h), int8_weight_linear_ref(h, table.weight, table.weight_scale))
