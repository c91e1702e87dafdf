"""The W8A8 model: real int8 vs fake quant, SQNR against fp, determinism, errors."""

import math

import pytest
import torch

from quamba.errors import QuambaError
from quamba.eval.data import calibration_samples, eval_windows
from quamba.eval.perplexity import perplexity
from quamba.quantization.config import METHODS, QuantConfig, get_method
from quamba.quantization.inspect import sqnr
from quamba.quantization.qmixer import QMambaMixer
from quamba.quantization.quantize import quantize


@pytest.fixture(scope="module")
def calib(calib_ids):
    return calibration_samples(calib_ids, 16, 256, seed=0)


@pytest.fixture(scope="module")
def tiny_quamba(tiny_model, calib):
    return quantize(tiny_model, get_method("quamba"), calib, show_progress=False)


def test_holds_int8_weights_and_computes_in_integers(tiny_quamba):
    mixer = tiny_quamba.backbone.layers[0].mixer
    assert isinstance(mixer, QMambaMixer)
    for layer in (mixer.in_proj, mixer.x_proj, mixer.dt_proj, mixer.out_proj, mixer.conv1d):
        assert layer.weight.dtype == torch.int8
        assert layer.input_scale.dtype == torch.float32 and layer.input_scale.dim() == 0
    captured = {}
    orig = torch._int_mm
    def spy(a, b):
        captured.setdefault("dtypes", set()).add((a.dtype, b.dtype))
        return orig(a, b)
    torch._int_mm = spy
    try:
        with torch.no_grad():
            tiny_quamba(torch.randint(0, 8192, (1, 8)))
    finally:
        torch._int_mm = orig
    assert captured["dtypes"] == {(torch.int8, torch.int8)}


def test_real_int8_and_fake_quant_agree(tiny_quamba, val_ids):
    windows = eval_windows(val_ids, 256, max_windows=4)
    with torch.no_grad():
        real = tiny_quamba.set_fake_quant(False)(windows)
        fake = tiny_quamba.set_fake_quant(True)(windows)
    tiny_quamba.set_fake_quant(False)
    assert sqnr(fake, real) >= 40
    assert (real.argmax(-1) == fake.argmax(-1)).float().mean() >= 0.999


def test_quantized_logits_close_to_fp(tiny_model, tiny_quamba, val_ids):
    windows = eval_windows(val_ids, 256, max_windows=2)
    with torch.no_grad():
        assert sqnr(tiny_model(windows), tiny_quamba(windows)) > 20


def test_step_decoding_matches_prefill(tiny_quamba):
    ids = torch.randint(0, 8192, (1, 24))
    with torch.no_grad():
        full = tiny_quamba(ids)
        cache = tiny_quamba.allocate_cache(1)
        parts = [tiny_quamba(ids[:, :10], cache)] + [tiny_quamba(ids[:, t:t + 1], cache) for t in range(10, 24)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-4)


def test_calibration_is_deterministic(tiny_model, calib_ids):
    a = quantize(tiny_model, get_method("quamba"), calibration_samples(calib_ids, 4, 128, seed=3), show_progress=False)
    b = quantize(tiny_model, get_method("quamba"), calibration_samples(calib_ids, 4, 128, seed=3), show_progress=False)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("method", [m for m in METHODS if m != "fp16"])
def test_every_method_runs_and_stays_sane(tiny_model, calib, val_ids, method):
    windows = eval_windows(val_ids, 256, max_windows=2)
    fp = perplexity(tiny_model, windows, show_progress=False).ppl
    q = perplexity(quantize(tiny_model, get_method(method), calib, show_progress=False), windows,
                   show_progress=False).ppl
    assert math.isfinite(q) and q < 1.5 * fp


def test_config_round_trips_through_json():
    for config in METHODS.values():
        assert QuantConfig.from_dict(config.to_dict()) == config
    with pytest.raises(QuambaError, match="format version 99"):
        QuantConfig.from_dict({**METHODS["quamba"].to_dict(), "version": 99})


def test_static_method_needs_calibration(tiny_model):
    with pytest.raises(QuambaError, match="needs calibration data"):
        quantize(tiny_model, get_method("quamba"), None)


def test_nan_during_calibration_names_layer_and_tensor(tiny_model, calib):
    import copy
    broken = copy.deepcopy(tiny_model)
    with torch.no_grad():
        broken.backbone.layers[2].mixer.x_proj.weight[0, 0] = float("nan")
    with pytest.raises(QuambaError, match="layer 2 activation 'dt_low'"):
        quantize(broken, get_method("w8a8-naive"), calib[:2], show_progress=False)


def test_unsupported_hadamard_size(tiny_model, calib):
    import copy
    odd = copy.deepcopy(tiny_model)
    odd.config.expand = 3  # d_inner 576 = 9 * 64: no Hadamard matrix of that order here
    with pytest.raises(QuambaError, match="no Hadamard transform of size 576"):
        quantize(odd, get_method("quamba"), calib[:1], show_progress=False)


def test_short_calibration_text(calib_ids):
    short = calib_ids[:1000]
    with pytest.raises(QuambaError, match="has 1000 tokens = 3 samples of 256, fewer than the 8 requested"):
        calibration_samples(short, 8, 256)
    assert calibration_samples(short, 8, 256, allow_short=True).shape == (3, 256)
    with pytest.raises(QuambaError, match="shorter than one sample"):
        calibration_samples(short[:100], 8, 256)
