"""Scores against the model's own Gaussian math, on real encodings."""

import numpy as np
import pytest

from models import gaussian
from models.encoder import GaussianBatch
from service.scoring import ensemble_prompts, match_probability, score_candidates, walk_queries

TEXTS = ["a red circle", "a blue square", "the dog", "a photo of a cat", "green", "an object"]


def test_match_probability_from_summaries_equals_the_model_formula(encoder):
    batch = encoder.encode_texts(TEXTS)
    query, items = batch.mean[:1], batch.mean[1:]
    expected = gaussian.match_probability(batch.mean[:1].astype(np.float64), batch.logvar[:1].astype(np.float64),
                                          batch.mean[1:].astype(np.float64), batch.logvar[1:].astype(np.float64),
                                          encoder.logit_scale, encoder.logit_bias)[0]
    got = match_probability((query @ items.T)[0], batch.uncertainty[0], batch.uncertainty[1:], encoder.pair_logit)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_candidate_scores_are_consistent(encoder):
    query = encoder.encode_texts(["a red circle"])
    candidates = encoder.encode_texts(TEXTS)
    scores = score_candidates(query, candidates, encoder.pair_logit)
    # for unit means CSD is a decreasing function of the match logit: the two orders agree
    np.testing.assert_array_equal(scores.order("csd"), np.argsort(-scores.pair_probability, kind="stable"))
    assert scores.probability is None  # no calibrator given
    with pytest.raises(ValueError, match="no calibrated probability"):
        scores.order("probability")
    np.testing.assert_allclose(scores.class_probability.sum(), 1.0)
    np.testing.assert_allclose(scores.uncertainty, candidates.uncertainty, rtol=1e-6)
    expected_csd = gaussian.csd(query.mean.astype(np.float64), query.logvar.astype(np.float64),
                                candidates.mean.astype(np.float64), candidates.logvar.astype(np.float64))[0]
    np.testing.assert_allclose(scores.csd, expected_csd, atol=1e-5)
    assert scores.order("cosine")[0] == 0  # the identical text is the closest mean
    with pytest.raises(ValueError):
        scores.order("random")


def _batch(uncertainties_per_class: list[list[float]], dim: int = 4) -> GaussianBatch:
    rng = np.random.default_rng(0)
    rows = [u for cls in uncertainties_per_class for u in cls]
    mean = rng.normal(size=(len(rows), dim)).astype(np.float32)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    logvar = np.log(np.asarray(rows, np.float64)[:, None] / dim * np.ones((1, dim))).astype(np.float32)
    return GaussianBatch(mean, logvar)


def test_prompt_filters_keep_the_certain_prompts():
    prompts = _batch([[1.0, 2.0, 9.0], [5.0, 1.0, 1.5]])
    assert ensemble_prompts(prompts, 2, 3, "none").kept == [[0, 1, 2], [0, 1, 2]]
    assert ensemble_prompts(prompts, 2, 3).kept == [[0, 1, 2], [0, 1, 2]]  # no prompt dropped unless asked
    assert ensemble_prompts(prompts, 2, 3, "mean_std", 0.0).kept == [[0, 1], [1, 2]]
    assert ensemble_prompts(prompts, 2, 3, "most_certain", 1).kept == [[0], [1]]
    very_strict = ensemble_prompts(prompts, 2, 3, "mean_std", -10.0)
    assert very_strict.kept == [[0], [1]]  # never empty: the most certain prompt stays
    out = ensemble_prompts(prompts, 2, 3, "mean_std", 0.0).embeddings
    np.testing.assert_allclose(np.linalg.norm(out.mean, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out.logvar[0], prompts.logvar[[0, 1]].mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown prompt filter"):
        ensemble_prompts(prompts, 2, 3, "best")


def test_walk_goes_from_start_towards_root():
    rng = np.random.default_rng(1)
    start, root = rng.normal(size=8), rng.normal(size=8)
    start /= np.linalg.norm(start)
    root /= np.linalg.norm(root)
    points = walk_queries(start, root, 10)
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(points[0], start, atol=1e-6)
    similarity_to_root = points @ root
    assert np.all(np.diff(similarity_to_root) > 0)


def test_pair_logit_forms_agree_with_each_familys_own_formula(encoder):
    """PairLogit's ProLIP form is match_logits; its PCME++ form is -a * CSD + shift, for unit means."""
    batch = encoder.encode_texts(TEXTS)
    mean, logvar = batch.mean.astype(np.float64), batch.logvar.astype(np.float64)
    ppcl = gaussian.PairLogit.ppcl(encoder.logit_scale, encoder.logit_bias)
    np.testing.assert_allclose(ppcl.pairwise(mean, logvar, mean, logvar),
                               gaussian.match_logits(mean, logvar, mean, logvar, encoder.logit_scale,
                                                     encoder.logit_bias), rtol=1e-9)
    pcme = gaussian.PairLogit.negative_csd(negative_scale=3.5, shift=1.25)
    np.testing.assert_allclose(pcme.pairwise(mean, logvar, mean, logvar),
                               -3.5 * gaussian.csd(mean, logvar, mean, logvar) + 1.25, atol=1e-9)
    assert gaussian.PairLogit.from_dict(pcme.to_dict()) == pcme
    with pytest.raises(ValueError, match="numeric"):
        gaussian.PairLogit.from_dict({"cos_weight": "x"})
