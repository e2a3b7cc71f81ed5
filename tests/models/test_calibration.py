"""The calibrator: a fit recovers a known logistic truth, its cosine bound is tight, its file round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.calibration import (
    CalibrationError,
    Calibrator,
    PairData,
    expected_calibration_error,
    fit_calibrator,
    load_for_model,
    precision_recall,
    reliability,
)
from models.gaussian import PairLogit

PAIR_LOGIT = PairLogit.ppcl(18.4, -10.0)
TRUE_WEIGHTS = {"pair_logit": 1.5, "cosine": 25.0, "log_text_uncertainty": -1.0, "log_image_uncertainty": -0.5,
                "cosine_x_log_text_uncertainty": 15.0}
TRUE = Calibrator("m@1", PAIR_LOGIT, TRUE_WEIGHTS, 8.0, text_range=(0.04, 0.5), image_range=(1e-4, 0.3))


def synthetic_pairs(n: int, seed: int, truth: Calibrator = TRUE) -> PairData:
    """Pairs whose labels are drawn from ``truth``'s probabilities (inside its S ranges: nothing is clipped)."""
    rng = np.random.default_rng(seed)
    cosine = rng.uniform(-0.2, 0.9, n)
    text = np.exp(rng.uniform(np.log(0.04), np.log(0.5), n))
    image = np.exp(rng.uniform(np.log(1e-4), np.log(0.3), n))
    label = rng.random(n) < truth.probability(cosine, text, image)
    return PairData(cosine, text, image, label, np.ones(n), rng.integers(0, 500, n))


def test_ece_and_reliability_match_a_hand_computation():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.5])
    y = np.array([0, 1, 1, 1, 0])
    table = reliability(p, y, bins=10)
    assert [(row["low"], row["pairs"]) for row in table] == [(0.0, 2), (0.5, 1), (0.9, 2)]
    # bins: [0, .1): mean .05, observed .5; [.5, .6): .5 vs 0; [.9, 1]: .95 vs 1
    expected = 2 / 5 * 0.45 + 1 / 5 * 0.5 + 2 / 5 * 0.05
    assert expected_calibration_error(p, y, bins=10) == pytest.approx(expected)
    # a weight of 2 counts a pair twice
    assert expected_calibration_error(p, y, np.array([1, 1, 1, 1, 2]), bins=10) == pytest.approx(
        expected_calibration_error(np.append(p, 0.5), np.append(y, 0), bins=10))
    assert precision_recall(p, y) == {"precision": 2 / 3, "recall": 2 / 3, "kept": 3}
    assert precision_recall(p, y, threshold=0.99)["precision"] is None  # nothing kept: undefined, not NaN


def test_a_fit_recovers_the_probabilities_of_a_known_logistic_truth():
    calibrator = fit_calibrator(synthetic_pairs(40_000, seed=1), PAIR_LOGIT, "m@1", {"data": "synthetic"})
    fresh = synthetic_pairs(20_000, seed=2)
    fitted = calibrator.probability(fresh.cosine, fresh.text_uncertainty, fresh.image_uncertainty)
    true = TRUE.probability(fresh.cosine, fresh.text_uncertainty, fresh.image_uncertainty)
    assert np.abs(fitted - true).mean() < 0.01
    assert expected_calibration_error(fitted, fresh.label) < 0.01
    held = calibrator.metrics["held_out"]
    assert held["calibrated"]["ece"] < 0.02 and held["raw"]["ece"] > 0.1  # the raw pair probability is not calibrated
    assert calibrator.fit["data"] == "synthetic" and calibrator.fit["pairs"] == 40_000
    assert set(calibrator.weights) == set(TRUE_WEIGHTS) and calibrator.min_slope() > 0


def test_a_model_without_uncertainties_falls_back_to_cosine():
    rng = np.random.default_rng(3)
    cosine = rng.uniform(-0.2, 0.9, 20_000)
    label = rng.random(cosine.size) < 1 / (1 + np.exp(-(12 * cosine - 5)))
    data = PairData(cosine, None, None, label, np.ones(cosine.size), rng.integers(0, 300, cosine.size))
    calibrator = fit_calibrator(data, PairLogit(12.0, 0.0, -3.0), "clip@1")
    assert list(calibrator.weights) == ["cosine"] and not calibrator.uses_uncertainty
    assert calibrator.weights["cosine"] == pytest.approx(12, rel=0.1) and calibrator.bias == pytest.approx(-5, rel=0.1)
    assert calibrator.probability(0.5, None, None) == pytest.approx(1 / (1 + np.exp(-1)), abs=0.03)
    scorer = calibrator.for_query("image", "text", None)
    assert scorer.bound(0.3, None, None) == pytest.approx(float(scorer.logit(0.3, None)))


def test_a_fit_that_does_not_grow_with_the_cosine_is_refused():
    rng = np.random.default_rng(4)
    cosine = rng.uniform(-0.2, 0.9, 5_000)
    label = rng.random(cosine.size) < 1 / (1 + np.exp(8 * cosine - 3))  # matches get *rarer* as cosine grows
    data = PairData(cosine, None, None, label, np.ones(cosine.size), rng.integers(0, 100, cosine.size))
    with pytest.raises(CalibrationError, match="does not grow with the cosine"):
        fit_calibrator(data, PAIR_LOGIT, "m@1")
    with pytest.raises(CalibrationError, match="both matches and non-matches"):
        fit_calibrator(PairData(cosine, None, None, np.ones(cosine.size, bool), np.ones(cosine.size),
                                np.zeros(cosine.size)), PAIR_LOGIT, "m@1")


@pytest.mark.parametrize("query_modality", ["text", "image"])
def test_the_cosine_bound_is_the_largest_logit_any_item_can_reach(query_modality):
    """bound(c, low, high) >= the logit of every (cosine <= c, S in [low, high]), and is reached."""
    rng = np.random.default_rng(5)
    item_modality = "image" if query_modality == "text" else "text"
    for weights in (TRUE_WEIGHTS, {**TRUE_WEIGHTS, "log_image_uncertainty": 2.0, "log_text_uncertainty": 3.0},
                    {**TRUE_WEIGHTS, "pair_logit": -0.5}):
        calibrator = Calibrator("m@1", PAIR_LOGIT, weights, 8.0, text_range=(0.04, 0.5), image_range=(1e-4, 0.3))
        for _ in range(20):
            query_unc = float(np.exp(rng.uniform(np.log(0.02), np.log(0.6))))
            scorer = calibrator.for_query(query_modality, item_modality, query_unc)
            low, high = np.sort(np.exp(rng.uniform(np.log(1e-5), np.log(0.8), 2)))
            c = float(rng.uniform(-0.3, 0.95))
            grid_s = np.geomspace(low, high, 4001)
            grid = scorer.logit(np.linspace(c - 0.5, c, 51)[:, None], grid_s[None, :])
            bound = scorer.bound(c, low, high)
            assert bound >= grid.max() - 1e-9
            assert bound <= grid.max() + 1e-3 * max(1.0, abs(bound))  # tight: the grid gets close


def test_the_file_round_trips_and_refuses_other_weights(tmp_path):
    calibrator = fit_calibrator(synthetic_pairs(5_000, seed=6), PAIR_LOGIT, "demo@abc", {"data": "synthetic"})
    path = calibrator.save(tmp_path / "model" / "calibration.json")
    loaded = Calibrator.load(path, "demo@abc")
    assert loaded == calibrator
    assert load_for_model(tmp_path / "model", "demo@abc") == calibrator
    assert load_for_model(tmp_path / "elsewhere", "demo@abc") is None
    assert load_for_model(tmp_path / "elsewhere", "demo@abc", override=path) == calibrator
    with pytest.raises(CalibrationError, match="fitted for model 'demo@abc', not 'demo@def'"):
        Calibrator.load(path, "demo@def")
    assert Calibrator.load(path, "renamed-copy@abc") == calibrator  # the weights decide, not the folder's name
    broken = tmp_path / "broken.json"
    for text, message in (("{", "cannot read"), (json.dumps({"format": "x"}), "not a calibration file"),
                          (json.dumps({**calibrator.to_dict(), "weights": {"colour": 1.0}}), "unknown calibration"),
                          (json.dumps({**calibrator.to_dict(), "bias": "NaN"}), "finite"),
                          (json.dumps({**calibrator.to_dict(), "text_range": [0, 1]}), "0 < low")):
        broken.write_text(text)
        with pytest.raises(CalibrationError, match=message):
            Calibrator.load(broken)
    with pytest.raises(CalibrationError, match="does not exist"):
        Calibrator.load(tmp_path / "missing.json")
