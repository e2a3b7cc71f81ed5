"""The model reproduces the official implementation's outputs on the reference checkpoints."""

import pytest
import torch
from safetensors.torch import load_file

from models import gaussian, load_model

ATOL = 1e-5


@pytest.fixture
def reference(reference_dir):
    model = load_model(reference_dir, device="cpu", dtype="fp32")
    return model, load_file(reference_dir / "inputs.safetensors"), load_file(reference_dir / "expected.safetensors")


def test_means_and_logvars_match_official(reference):
    model, inputs, expected = reference
    image = model.encode_image(inputs["pixel_values"])
    text = model.encode_text(inputs["input_ids"])
    torch.testing.assert_close(image.mean, expected["image_mean"], atol=ATOL, rtol=0)
    torch.testing.assert_close(image.logvar, expected["image_logvar"], atol=ATOL, rtol=0)
    torch.testing.assert_close(text.mean, expected["text_mean"], atol=ATOL, rtol=0)
    torch.testing.assert_close(text.logvar, expected["text_logvar"], atol=ATOL, rtol=0)


def test_logit_scale_and_bias_match_official(reference):
    model, _, expected = reference
    torch.testing.assert_close(model.logit_scale.exp().reshape(1), expected["logit_scale"], atol=ATOL, rtol=0)
    torch.testing.assert_close(model.logit_bias.reshape(1), expected["logit_bias"], atol=ATOL, rtol=0)


def test_csd_and_inclusion_match_official(reference):
    _, _, expected = reference
    i_mu, i_lv = expected["image_mean"], expected["image_logvar"]
    t_mu, t_lv = expected["text_mean"], expected["text_logvar"]
    torch.testing.assert_close(gaussian.csd(i_mu, i_lv, t_mu, t_lv), expected["csd_image_text"], atol=ATOL, rtol=1e-6)
    torch.testing.assert_close(gaussian.inclusion(i_mu, i_lv, t_mu, t_lv), expected["inclusion_image_in_text"],
                               atol=ATOL, rtol=1e-6)


def test_variances_matter(reference):
    """The fixture variances are large enough that dropping them would change CSD."""
    _, _, expected = reference
    means_only = gaussian.csd(expected["image_mean"], torch.full_like(expected["image_logvar"], -30),
                              expected["text_mean"], torch.full_like(expected["text_logvar"], -30))
    assert (means_only - expected["csd_image_text"]).abs().max() > 1e-2
