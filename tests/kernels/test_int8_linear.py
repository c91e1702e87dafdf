"""int8_linear / int8_linear_quant (Triton) against int8_linear_ref."""

from __future__ import annotations

import importlib

import pytest
import torch

pytest.importorskip("triton")

from quamba.kernels.int8_linear_ref import int8_linear_ref  # noqa: E402
from quamba.kernels.quantize_ref import quantize_ref  # noqa: E402
from quamba.kernels.triton import int8_linear, int8_linear_quant  # noqa: E402

from ._helpers import GPU, assert_int8_match, rand_int8, scale_for, shapes  # noqa: E402

# (M, N, K): M <= 64 takes the decode kernel (split-K where N is small; M <= 2 with N <= K the
# CUDA-core row kernel; test_gemv_rows_for_several_tokens raises that bound), larger M the GEMM.
SHAPES = shapes(
    gpu=[(1, 1280, 384), (1, 2560, 5120), (2, 2560, 5120), (2, 192, 5120), (7, 1536, 1280), (33, 384, 1536),
         (64, 1280, 1536),
         (65, 384, 1280), (300, 1536, 384), (2048, 1280, 1536),
         (1024, 192, 5120), (2048, 5120, 160)],   # narrow N (x_proj), short K (dt_proj): their own tiles
    cpu=[(1, 96, 80), (1, 40, 200), (2, 64, 384), (3, 64, 384), (7, 48, 64), (33, 40, 72), (70, 48, 80)],
)


def _inputs(M, N, K, device, per_token, per_channel):
    x_q = rand_int8(M, K, device=device)
    w_q = rand_int8(N, K, device=device)
    x_scale = (torch.rand(M, 1, device=device) * 0.02 + 0.001 if per_token
               else torch.tensor(0.013, device=device))
    w_scale = (torch.rand(N, device=device) * 0.002 + 1e-4 if per_channel
               else torch.tensor(7e-4, device=device))
    return x_q, w_q, x_scale, w_scale


@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("per_token,per_channel,with_bias", [(False, False, False), (True, True, True)])
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
def test_int8_linear_matches_ref(M, N, K, per_token, per_channel, with_bias, out_dtype, device):
    x_q, w_q, xs, ws = _inputs(M, N, K, device, per_token, per_channel)
    bias = torch.randn(N, device=device, dtype=torch.float16) if with_bias else None
    out = int8_linear(x_q, w_q, xs, ws, bias, out_dtype=out_dtype)
    ref = int8_linear_ref(x_q, w_q, xs, ws, bias, out_dtype=torch.float32)
    assert out.shape == (M, N) and out.dtype == out_dtype
    if out_dtype == torch.float32 and not with_bias:
        # the reference runs the kernels' epilogue operation for operation: the same bits
        assert torch.equal(out, ref.to(out.device))
    # with a bias, one FMA rounding apart; fp16: one fp16 rounding on top.
    rtol = 1e-5 if out_dtype == torch.float32 else 1e-3
    torch.testing.assert_close(out.float(), ref, rtol=rtol, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("M,N,K", SHAPES[:2] + SHAPES[-2:])
def test_int8_linear_quant_matches_ref(M, N, K, device):
    x_q, w_q, xs, ws = _inputs(M, N, K, device, False, True)
    bias = torch.randn(N, device=device)
    ref_fp = int8_linear_ref(x_q, w_q, xs, ws, bias, out_dtype=torch.float32)
    out_scale = scale_for(ref_fp)
    out = int8_linear_quant(x_q, w_q, xs, ws, bias, out_scale)
    assert_int8_match(out, quantize_ref(ref_fp, out_scale))


def test_int8_linear_3d_input_bf16_and_repeat(device):
    """(batch, seqlen, K) input; repeated launches of the split-K path give the
    same answer (the split-K counters are reset by each launch)."""
    K, N = (384, 64) if device.type == "cpu" else (5120, 2560)
    x_q = rand_int8(2, 1, K, device=device)
    w_q = rand_int8(N, K, device=device)
    xs, ws = torch.tensor(0.01, device=device), torch.rand(N, device=device) * 1e-3
    ref = int8_linear_ref(x_q, w_q, xs, ws, out_dtype=torch.float32)
    first = int8_linear(x_q, w_q, xs, ws, out_dtype=torch.bfloat16)
    assert first.shape == (2, 1, N)
    torch.testing.assert_close(first.float(), ref, rtol=8e-3, atol=1e-5 * float(ref.abs().max()))
    for _ in range(3):
        assert torch.equal(int8_linear(x_q, w_q, xs, ws, out_dtype=torch.bfloat16), first)


def test_int8_linear_rejects_bad_inputs(device):
    x_q = rand_int8(4, 32, device=device)
    w_q = rand_int8(16, 32, device=device)
    s = torch.tensor(0.1, device=device)
    with pytest.raises(ValueError, match="x_q must be int8"):
        int8_linear(x_q.float(), w_q, s, s)
    with pytest.raises(ValueError, match="K=32"):
        int8_linear(rand_int8(4, 31, device=device), w_q, s, s)
    with pytest.raises(ValueError, match="w_scale"):
        int8_linear(x_q, w_q, s, torch.ones(5, device=device))


@pytest.mark.parametrize("M,N,K", [SHAPES[0], SHAPES[1], SHAPES[-1]])
def test_int8_linear_quant_per_column_out_scale(M, N, K, device):
    """A (N,) out_scale requantizes each output column with its own scale: one
    launch for projections that share an input (in_proj's x and z halves)."""
    x_q, w_q, xs, ws = _inputs(M, N, K, device, False, True)
    ref_fp = int8_linear_ref(x_q, w_q, xs, ws, None, out_dtype=torch.float32)
    h = N // 3
    s1, s2 = scale_for(ref_fp[:, :h]), scale_for(ref_fp[:, h:], clip=0.5)
    out_scale = torch.cat([s1.expand(h), s2.expand(N - h)])
    out = int8_linear_quant(x_q, w_q, xs, ws, None, out_scale)
    ref = torch.cat([quantize_ref(ref_fp[:, :h], s1), quantize_ref(ref_fp[:, h:], s2)], 1)
    assert torch.equal(out, ref.to(out.device))  # the W8A8 block's case (no bias): the same int8
    # A strided slice of the output is a valid input for the next projection.
    out2 = int8_linear_quant(out[:, :K] if N >= K else out, w_q[:, :min(N, K)].contiguous(), xs, ws, None, s1)
    ref2 = quantize_ref(int8_linear_ref((out[:, :K] if N >= K else out).contiguous(),
                                        w_q[:, :min(N, K)].contiguous(), xs, ws, None,
                                        out_dtype=torch.float32), s1)
    assert_int8_match(out2, ref2)


@pytest.mark.parametrize("mode", ["narrow", "loop", "all", "off"])
@pytest.mark.parametrize("N,K", [(40, 200), (96, 80), (37, 3000)])
def test_one_token_kernel_choices_match_ref(mode, N, K, device, monkeypatch):
    """Every QUAMBA_GEMV_ROWS routing of a one-token product (single-pass rows, looped
    rows when K is longer than a slice, tensor cores) gives the reference result, plain
    and requantized."""
    monkeypatch.setenv("QUAMBA_GEMV_ROWS", mode)
    x_q, w_q, xs, ws = _inputs(1, N, K, device, False, True)
    static = mode == "narrow"   # also the path that reads the weight before pdl_wait
    bias = torch.randn(N, device=device)
    ref = int8_linear_ref(x_q, w_q, xs, ws, bias, out_dtype=torch.float32)
    torch.testing.assert_close(int8_linear(x_q, w_q, xs, ws, bias, out_dtype=torch.float32, static_weight=static),
                               ref, rtol=1e-5, atol=1e-5)
    s = scale_for(ref)
    assert_int8_match(int8_linear_quant(x_q, w_q, xs, ws, bias, s), quantize_ref(ref, s))


@pytest.mark.parametrize("M,N,K", shapes(gpu=[(3, 2560, 5120), (8, 192, 5120), (64, 2560, 5120)],
                                          cpu=[(3, 40, 600), (16, 96, 520)]))
def test_every_k_split_gives_the_unsplit_bits(M, N, K, device, monkeypatch):
    """Split counts that are and are not powers of two give the unsplit kernel's bits,
    launch after launch (the arrival counters are left at zero for the next launch)."""
    gemv = importlib.import_module("quamba.kernels.triton.int8_linear")
    x_q, w_q, xs, ws = _inputs(M, N, K, device, False, True)
    ref = int8_linear_ref(x_q, w_q, xs, ws, out_dtype=torch.float32).to(device)
    for split in (1, 2, 3, 5):
        monkeypatch.setattr(gemv, "_GEMV_OVERRIDE", {"SPLIT_K": split})
        assert gemv._gemv_config(M, N, K, device)["SPLIT_K"] == split
        for _ in range(2):
            assert torch.equal(int8_linear(x_q, w_q, xs, ws, out_dtype=torch.float32), ref), split


def test_k_split_fills_one_wave_of_programs(monkeypatch):
    """The heuristic: K split in two, four, ... while the programs fit the SMs once, two K blocks a split at least."""
    gemv = importlib.import_module("quamba.kernels.triton.int8_linear")
    monkeypatch.setattr(gemv, "_num_sms", lambda device: 132)
    monkeypatch.setattr(gemv, "interpret_mode", lambda: False)
    cuda = torch.device("cuda")
    split = {(M, N, K): gemv._gemv_config(M, N, K, cuda)["SPLIT_K"]
             for M, N, K in [(8, 2560, 5120), (8, 2048, 4096), (16, 8192, 2048), (8, 10240, 2560), (4, 192, 5120),
                             (64, 192, 1024)]}
    # 192 x 5120: 3 column blocks, split 8 -> 3 K blocks a split, 7 splits cover K.
    assert split == {(8, 2560, 5120): 2, (8, 2048, 4096): 4, (16, 8192, 2048): 1, (8, 10240, 2560): 1,
                     (4, 192, 5120): 7, (64, 192, 1024): 2}


class _CountLaunches:
    """Wraps a Triton kernel and counts its launches (``kernel[grid](...)``)."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


@pytest.mark.parametrize("words", ["dp4a", "off"])
def test_one_token_wide_output_takes_several_rows_a_program(words, device, monkeypatch):
    """One token, N >= 1024 <= K (out_proj): two weight rows a program (four on int32 words);
    an odd N leaves the last program short."""
    monkeypatch.delenv("QUAMBA_GEMV_ROWS_SHAPE", raising=False)
    monkeypatch.delenv("QUAMBA_GEMV_ROWS_SHAPE_NARROW", raising=False)
    gemv = importlib.import_module("quamba.kernels.triton.int8_linear")
    assert gemv._rows_route(1, 1025, 1100)["BLOCK_N"] == 2 and gemv._rows_route(2, 1025, 1100)["BLOCK_N"] == 1
    assert gemv._rows_route(1, 1025, 1100, words=True) == {"BLOCK_N": 4, "BLOCK_K": 2048, "num_warps": 8}
    assert gemv._rows_route(1, 192, 5120, words=True) == {"BLOCK_N": 4, "BLOCK_K": 8192, "num_warps": 4}
    assert gemv._rows_route(2, 2560, 5120, words=True) == {"BLOCK_N": 4, "BLOCK_K": 8192, "num_warps": 8}
    monkeypatch.setenv("QUAMBA_GEMV_WORDS", words)
    counter = _CountLaunches(gemv._int8_gemv_words_kernel)
    monkeypatch.setattr(gemv, "_int8_gemv_words_kernel", counter)
    x_q, w_q, xs, ws = _inputs(1, 1025, 1100, device, False, True)
    ref = int8_linear_ref(x_q, w_q, xs, ws, out_dtype=torch.float32)
    torch.testing.assert_close(int8_linear(x_q, w_q, xs, ws, out_dtype=torch.float32, static_weight=True), ref,
                               rtol=1e-5, atol=1e-5)
    assert counter.launches == (words != "off")


@pytest.mark.parametrize("words", ["dp4a", "shift", "off"])
@pytest.mark.parametrize("M,N,K", shapes(gpu=[(1, 2560, 5120), (2, 2560, 5120), (1, 192, 5120), (1, 768, 1536),
                                              (1, 1030, 4096), (1, 33, 200)],
                                         cpu=[(1, 40, 200), (2, 64, 80), (1, 12, 36)]))
def test_one_token_rows_on_int32_words_give_the_int8_kernels_bits(words, M, N, K, device, monkeypatch):
    """QUAMBA_GEMV_WORDS: the rows kernel reading W and x as int32 words of four int8
    (dp4a, or lanes sign-extended by shifts; the interpreter always shifts, so dp4a runs
    only on a GPU) gives the int8 rows kernel's exact bits, plain and requantized, rows with
    and without a masked tail block (5120 int8 = 1024 + 256 words; 200 = 32 + 18 of 32), the
    weight read before the wait or after it; "off" runs the int8 kernel."""
    gemv = importlib.import_module("quamba.kernels.triton.int8_linear")
    counter = _CountLaunches(gemv._int8_gemv_words_kernel)
    monkeypatch.setattr(gemv, "_int8_gemv_words_kernel", counter)
    monkeypatch.setenv("QUAMBA_GEMV_WORDS", words)
    x_q, w_q, xs, ws = _inputs(M, N, K, device, True, True)
    bias = torch.randn(N, device=device)
    ref = int8_linear_ref(x_q, w_q, xs, ws, bias, out_dtype=torch.float32)
    s = scale_for(ref)
    got = [int8_linear(x_q, w_q, xs, ws, bias, out_dtype=torch.float32, static_weight=static) for static in (True, False)]
    got_q = int8_linear_quant(x_q, w_q, xs, ws, bias, s, static_weight=True)
    assert counter.launches == (0 if words == "off" else 3)
    monkeypatch.setenv("QUAMBA_GEMV_WORDS", "off")
    int8_kernel = int8_linear(x_q, w_q, xs, ws, bias, out_dtype=torch.float32)
    assert all(torch.equal(g, int8_kernel) for g in got)
    assert torch.equal(got_q, int8_linear_quant(x_q, w_q, xs, ws, bias, s))
    torch.testing.assert_close(int8_kernel, ref, rtol=1e-5, atol=1e-5)
    assert_int8_match(got_q, quantize_ref(ref, s))


def test_rows_that_are_not_whole_words_take_the_int8_kernel(device, monkeypatch):
    """A K that is not a multiple of 4, or an input whose base or row stride is not 4-byte
    aligned, cannot be read as words: the int8 rows kernel serves it, with the same result."""
    gemv = importlib.import_module("quamba.kernels.triton.int8_linear")
    counter = _CountLaunches(gemv._int8_gemv_words_kernel)
    monkeypatch.setattr(gemv, "_int8_gemv_words_kernel", counter)
    _, w_q, xs, ws = _inputs(1, 40, 200, device, False, True)
    shifted = rand_int8(201, device=device)[1:].view(1, 200)      # base 1 byte past alignment
    strided = rand_int8(2, 203, device=device)[:, :200]           # rows 203 bytes apart
    x_odd, w_odd, _, ws_odd = _inputs(2, 40, 202, device, False, True)
    for x, w, w_s in ((shifted, w_q, ws), (strided, w_q, ws), (x_odd, w_odd, ws_odd)):
        ref = int8_linear_ref(x.contiguous(), w, xs, w_s, out_dtype=torch.float32)
        torch.testing.assert_close(int8_linear(x, w, xs, w_s, out_dtype=torch.float32, static_weight=True), ref,
                                   rtol=1e-5, atol=1e-5)
    assert counter.launches == 0
    assert gemv._as_words(strided) is None and gemv._as_words(shifted) is None
    assert gemv._head_tail(1280) == (1024, 256) and gemv._head_tail(50) == (32, 32) and gemv._head_tail(64) == (64, 0)
    monkeypatch.setenv("QUAMBA_GEMV_WORDS", "dp4")
    with pytest.raises(ValueError, match="QUAMBA_GEMV_WORDS"):
        int8_linear(shifted.contiguous(), w_q, xs, ws)


def test_rows_shape_override_for_ab_runs(device, monkeypatch):
    """QUAMBA_GEMV_ROWS_SHAPE sets the single-pass rows kernel's rows a program and warps for
    wide outputs (N >= 1024; N = 1029 leaves the last program one row), _NARROW for the others;
    a malformed value is refused."""
    gemv = importlib.import_module("quamba.kernels.triton.int8_linear")
    monkeypatch.setenv("QUAMBA_GEMV_ROWS_SHAPE", "4x2")
    assert gemv._rows_route(1, 2560, 5120) == {"BLOCK_N": 4, "BLOCK_K": 8192, "num_warps": 2}
    assert gemv._rows_route(1, 192, 5120)["BLOCK_N"] == 1       # x_proj keeps its shape
    monkeypatch.setenv("QUAMBA_GEMV_ROWS_SHAPE_NARROW", "2x1")
    assert gemv._rows_route(1, 192, 5120) == {"BLOCK_N": 2, "BLOCK_K": 8192, "num_warps": 1}
    x_q, w_q, xs, ws = _inputs(1, 1029, 1100, device, False, True)
    ref = int8_linear_ref(x_q, w_q, xs, ws, out_dtype=torch.float32)
    torch.testing.assert_close(int8_linear(x_q, w_q, xs, ws, out_dtype=torch.float32, static_weight=True), ref,
                               rtol=1e-5, atol=1e-5)
    for bad in ("4", "3x8"):
        monkeypatch.setenv("QUAMBA_GEMV_ROWS_SHAPE", bad)
        with pytest.raises(ValueError, match="QUAMBA_GEMV_ROWS_SHAPE"):
            int8_linear(x_q, w_q, xs, ws)


def test_unknown_prefill_gemm_choice_is_refused(device, monkeypatch):
    monkeypatch.setenv("QUAMBA_PREFILL_GEMM", "cublas")
    x_q, w_q, xs, ws = _inputs(65, 32, 48, device, False, False)
    with pytest.raises(ValueError, match="QUAMBA_PREFILL_GEMM"):
        int8_linear(x_q, w_q, xs, ws)


def test_unknown_gemv_routing_is_refused(device, monkeypatch):
    monkeypatch.setenv("QUAMBA_GEMV_ROWS", "narow")
    x_q, w_q, xs, ws = _inputs(1, 40, 200, device, False, False)
    with pytest.raises(ValueError, match="QUAMBA_GEMV_ROWS"):
        int8_linear(x_q, w_q, xs, ws)


@pytest.mark.parametrize("M,N,K", [SHAPES[0], SHAPES[-1]])
def test_int8_linear_out_buffer(M, N, K, device):
    """out= writes into a given (..., N) buffer with the same values; a wrong one is refused."""
    x_q, w_q, xs, ws = _inputs(M, N, K, device, False, True)
    ref = int8_linear(x_q, w_q, xs, ws)
    buf = torch.empty(M, N, dtype=torch.float16, device=device)
    got = int8_linear(x_q, w_q, xs, ws, out=buf)
    assert got.data_ptr() == buf.data_ptr() and torch.equal(got, ref)
    with pytest.raises(ValueError, match="out"):
        int8_linear(x_q, w_q, xs, ws, out=torch.empty(M, N + 1, dtype=torch.float16, device=device))


@pytest.mark.parametrize("M", [3, 8])
def test_gemv_rows_for_several_tokens(M, device, monkeypatch):
    """The CUDA-core kernel with its bound raised (QUAMBA_GEMV_ROWS_MAX_M) serves M tokens
    of a narrow weight, per-token input scales and a bias included."""
    monkeypatch.setenv("QUAMBA_GEMV_ROWS_MAX_M", str(M))
    N, K = (40, 200) if device.type == "cpu" else (2560, 5120)
    x_q, w_q, xs, ws = _inputs(M, N, K, device, True, True)
    bias = torch.randn(N, device=device)
    out = int8_linear(x_q, w_q, xs, ws, bias, out_dtype=torch.float32)
    ref = int8_linear_ref(x_q, w_q, xs, ws, bias, out_dtype=torch.float32)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


HOPPER = GPU and torch.cuda.get_device_capability() >= (9, 0)


@pytest.mark.skipif(not HOPPER, reason="the TMA prefill kernel needs sm_90+ (the interpreter runs the pointer kernel)")
@pytest.mark.parametrize("kinds", ["tma", "pointer"])
def test_prefill_gemm_kinds_match_ref(kinds, device, monkeypatch):
    """Each prefill kernel alone (the autotuner limited to the TMA or the pointer tiles)
    gives the reference result, plain and requantized, on aligned shapes, a short K, a
    narrow N, ragged edges, a strided input view and a misaligned base; the pointer
    kernel serves where a row is not 16-byte aligned (K = 200) even when TMA is asked for."""
    lin = importlib.import_module("quamba.kernels.triton.int8_linear")
    monkeypatch.setenv("QUAMBA_PREFILL_GEMM", kinds)
    lin._int8_gemm_tuned.cache.clear()
    try:
        for M, N, K in [(300, 1536, 384), (2048, 5120, 160), (1000, 192, 5120), (333, 250, 1040), (129, 96, 200)]:
            x_q, w_q, xs, ws = _inputs(M, N, K, device, False, True)
            bias = torch.randn(N, device=device)
            ref = int8_linear_ref(x_q, w_q, xs, ws, bias, out_dtype=torch.float32)
            out = int8_linear(x_q, w_q, xs, ws, bias, out_dtype=torch.float32)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
            s = scale_for(ref)
            assert_int8_match(int8_linear_quant(x_q, w_q, xs, ws, bias, s), quantize_ref(ref, s))
            wide = rand_int8(M, K + 32, device=device)      # a strided view: rows K + 32 apart
            ref_v = int8_linear_ref(wide[:, :K].contiguous(), w_q, xs, ws, out_dtype=torch.float32)
            torch.testing.assert_close(int8_linear(wide[:, :K], w_q, xs, ws, out_dtype=torch.float32), ref_v,
                                       rtol=1e-5, atol=1e-5 * float(ref_v.abs().max()))
            shifted = rand_int8(M * K + 1, device=device)[1:].view(M, K)   # base 1 byte past alignment
            ref_s = int8_linear_ref(shifted.clone(), w_q, xs, ws, out_dtype=torch.float32)
            torch.testing.assert_close(int8_linear(shifted, w_q, xs, ws, out_dtype=torch.float32), ref_s,
                                       rtol=1e-5, atol=1e-5 * float(ref_s.abs().max()))
        assert lin._tma_descriptors(shifted, w_q) == (None, None)
        # Autotuner keys are (M bucket, N, K, TMA_OK, dtypes...): with descriptors the asked-for
        # kind was chosen; without them (K = 200, the shifted base) always the pointer kernel.
        chosen = {key: cfg.kwargs["TMA"] for key, cfg in lin._int8_gemm_tuned.cache.items()}
        with_desc = [tma for key, tma in chosen.items() if key[3] == 1]
        assert with_desc and all(tma == (kinds == "tma") for tma in with_desc), chosen
        assert not any(tma for key, tma in chosen.items() if key[3] == 0)
        assert any(key[2] == 200 for key in chosen) and all(key[3] == 0 for key in chosen if key[2] == 200)
    finally:
        lin._int8_gemm_tuned.cache.clear()


@pytest.mark.parametrize("kinds,tma_ok,expect", [("both", 1, {True, False}), ("both", 0, {False}),
                                                 ("tma", 1, {True}), ("tma", 0, {False}), ("pointer", 1, {False})])
def test_prefill_gemm_config_choice(kinds, tma_ok, expect, monkeypatch):
    """Which configs the autotuner may time (host logic, no GPU): TMA tiles only with
    descriptors and when allowed, the pointer kernel otherwise, short-K tiles only for K <= 256."""
    lin = importlib.import_module("quamba.kernels.triton.int8_linear")
    monkeypatch.setenv("QUAMBA_PREFILL_GEMM", kinds)
    configs = lin._gemm_configs()
    for K, short in ((160, True), (2560, False)):
        kept = lin._prune_gemm_configs(configs, {"K": K, "TMA_OK": tma_ok})
        assert {c.kwargs["TMA"] for c in kept} == expect
        has_short = any(not c.kwargs["TMA"] and c.kwargs["BLOCK_K"] <= 64 and c.num_stages <= 3 for c in kept)
        assert has_short == (short and False in expect)


def test_tma_block_hook_sets_the_descriptor_tiles():
    """The autotuner's pre-hook gives a TMA config's tiles to the descriptors, and a pointer
    config one fixed shape (one compiled signature, whatever ran before)."""
    from types import SimpleNamespace

    lin = importlib.import_module("quamba.kernels.triton.int8_linear")
    x, w = SimpleNamespace(block_shape=[16, 16]), SimpleNamespace(block_shape=[16, 16])
    lin._set_tma_blocks({"x_desc": x, "w_desc": w, "TMA": True, "BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64})
    assert x.block_shape == [256, 64] and w.block_shape == [128, 64]
    lin._set_tma_blocks({"x_desc": x, "w_desc": w, "TMA": False, "BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32})
    assert x.block_shape == [16, 16] and w.block_shape == [16, 16]
    lin._set_tma_blocks({"x_desc": None, "w_desc": None, "TMA": False})   # no descriptors: nothing to set
