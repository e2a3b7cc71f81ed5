"""BPRW reproduces the official code's outputs (tests/fixtures/bprw) and fits known mixing weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.prompt_weighting import mixing_weights, reweight_class

FIXTURES = Path(__file__).parents[1] / "fixtures" / "bprw"
CASES = json.loads((FIXTURES / "cases.json").read_text())["cases"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_class_embeddings_match_the_official_bprw(name):
    case = CASES[name]
    data = np.load(FIXTURES / f"{name}.npz")
    shots = case["images_per_class"]
    for c in range(case["classes"]):
        rows = slice(50 * c, 50 * c + shots)
        got = reweight_class(data["prompt_mean"][c], data["prompt_variance"][c], data["image_mean"][rows],
                             data["image_logvar"][rows], noise=data["noise"][c], alpha=case["alpha"],
                             stable_eps=case["stable_eps"], init=case["init"])
        # the official code runs in float32; this runs in float64
        np.testing.assert_allclose(got.weights, data["weights"][c], atol=2e-5)
        np.testing.assert_allclose(got.mean, data["class_mean"][c], atol=2e-5)
        np.testing.assert_allclose(got.variance, data["class_variance"][c], rtol=1e-4)
    # the reference is not trivially uniform: the images move the weights
    assert np.abs(data["weights"] - 1 / case["templates"]).max() > 0.05


def test_mixing_weights_recover_a_known_mixture():
    rng = np.random.default_rng(0)
    means = rng.standard_normal((3, 4))
    variances = np.full((3, 4), 0.05)
    truth = np.array([0.6, 0.3, 0.1])
    component = rng.choice(3, size=6000, p=truth)
    samples = means[component] + np.sqrt(0.05) * rng.standard_normal((6000, 4))
    np.testing.assert_allclose(mixing_weights(samples, means, variances, alpha=1.0, stable_eps=0.0), truth, atol=0.02)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="expected"):
        mixing_weights(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="alpha"):
        mixing_weights(np.zeros((2, 4)), np.zeros((2, 4)), np.ones((2, 4)), alpha=0.5)
    with pytest.raises(ValueError, match="init"):
        mixing_weights(np.zeros((2, 4)), np.zeros((2, 4)), np.ones((2, 4)), init="inverse_5")
