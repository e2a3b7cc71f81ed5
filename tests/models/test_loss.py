"""The ProLIP loss reproduces the official implementation's terms on the reference features."""

import json

import pytest
import torch
from safetensors.torch import load_file

from models.architecture import GaussianEmbedding
from models.loss import ProLIPLoss

from ..conftest import REFERENCE

LOSS_DIR = REFERENCE / "loss"


@pytest.fixture(scope="module")
def reference():
    inputs = load_file(LOSS_DIR / "inputs.safetensors")
    expected = json.loads((LOSS_DIR / "expected.json").read_text())
    return inputs, expected["hyperparameters"], expected["expected"]


def _gaussian(inputs, prefix):
    return GaussianEmbedding(inputs[f"{prefix}_mean"], inputs[f"{prefix}_logvar"])


def _terms(inputs, hyper, **override):
    loss = ProLIPLoss(**{**hyper, **override})
    return loss(_gaussian(inputs, "image"), _gaussian(inputs, "text"), inputs["logit_scale"], inputs["logit_bias"],
                masked_image=_gaussian(inputs, "masked_image"), masked_text=_gaussian(inputs, "masked_text"),
                output_dict=True)


def test_every_term_matches_official(reference):
    inputs, hyper, expected = reference
    terms = _terms(inputs, hyper)
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value, abs=1e-4, rel=1e-5), name


def test_total_is_sum_of_terms(reference):
    inputs, hyper, expected = reference
    loss = ProLIPLoss(**hyper)
    total = loss(_gaussian(inputs, "image"), _gaussian(inputs, "text"), inputs["logit_scale"], inputs["logit_bias"],
                 masked_image=_gaussian(inputs, "masked_image"), masked_text=_gaussian(inputs, "masked_text"))
    assert total.item() == pytest.approx(sum(expected.values()), abs=1e-4)


def test_weights_scale_terms_and_zero_weights_drop_them(reference):
    inputs, hyper, expected = reference
    terms = _terms(inputs, hyper, ppcl_lambda=2.0, inclusion_alpha=0.0, vib_beta=0.0)
    assert terms["ppcl"].item() == pytest.approx(2 * expected["ppcl"], abs=1e-4)
    assert "inclusion" not in terms and "vib" not in terms


def test_gradients_reach_means_and_variances(reference):
    inputs, hyper, _ = reference
    image = GaussianEmbedding(inputs["image_mean"].clone().requires_grad_(),
                              inputs["image_logvar"].clone().requires_grad_())
    text = GaussianEmbedding(inputs["text_mean"].clone().requires_grad_(),
                             inputs["text_logvar"].clone().requires_grad_())
    ProLIPLoss(**hyper)(image, text, inputs["logit_scale"], inputs["logit_bias"]).backward()
    for tensor in (image.mean, image.logvar, text.mean, text.logvar):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_mismatched_batches_and_half_masked_inputs_are_rejected(reference):
    inputs, hyper, _ = reference
    loss = ProLIPLoss(**hyper)
    image, text = _gaussian(inputs, "image"), _gaussian(inputs, "text")
    short = GaussianEmbedding(text.mean[:4], text.logvar[:4])
    with pytest.raises(ValueError, match="differ"):
        loss(image, short, inputs["logit_scale"], inputs["logit_bias"])
    with pytest.raises(ValueError, match="together"):
        loss(image, text, inputs["logit_scale"], inputs["logit_bias"], masked_image=_gaussian(inputs, "masked_image"))
