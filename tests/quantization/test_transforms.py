"""Equivalence-preserving transforms leave the fp logits unchanged (and do change the weights)."""

import torch

from quamba.quantization.calibration import observe_activations
from quamba.quantization.config import METHODS
from quamba.quantization.observers import ChannelAbsMaxObserver
from quamba.quantization.quantize import prepare_fp_model
from quamba.quantization.transforms import smooth_linear_inputs


def logits(model, ids):
    with torch.no_grad():
        return model(ids).double()


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_hadamard_on_ssm_output_is_invariant(ref_model):
    ids = torch.randint(0, 8192, (1, 96))
    rotated = prepare_fp_model(ref_model, METHODS["quamba"])
    assert rel(logits(rotated, ids), logits(ref_model, ids)) < 1e-5
    assert not torch.allclose(rotated.backbone.layers[0].mixer.out_proj.weight,
                              ref_model.backbone.layers[0].mixer.out_proj.weight)


def test_residual_rotation_is_invariant(ref_model):
    ids = torch.randint(0, 8192, (1, 96))
    rotated = prepare_fp_model(ref_model, METHODS["quarot"])
    assert rel(logits(rotated, ids), logits(ref_model, ids)) < 1e-5
    assert not torch.allclose(rotated.backbone.embedding.weight, ref_model.backbone.embedding.weight)
    assert ref_model.config.tie_embeddings  # the original is untouched


def test_smoothing_is_invariant(tiny_model):
    ids = torch.randint(0, 8192, (2, 64))
    model = prepare_fp_model(tiny_model, METHODS["smoothquant"])
    stats = observe_activations(model, ids, lambda i: {n: ChannelAbsMaxObserver() for n in ("in_proj_input", "u", "y")},
                                show_progress=False)
    smooth_linear_inputs(model, [{k: o.value for k, o in s.items()} for s in stats], 0.5)
    assert rel(logits(model, ids), logits(tiny_model, ids)) < 1e-5
    assert not torch.allclose(model.backbone.layers[0].mixer.x_proj.weight,
                              tiny_model.backbone.layers[0].mixer.x_proj.weight)
