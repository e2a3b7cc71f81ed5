"""The probability half of `eval` on a small gallery: every section, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from models import demo_data
from models.calibration import expected_calibration_error
from models.demo_eval import evaluate_demo, render_report
from models.demo_eval_probability import calibrator_for, quintiles, risk_coverage
from models.eval_plots import write_plots

IMAGES = 40


@pytest.fixture(scope="module")
def encoder():
    from models.encoder import Encoder

    return Encoder.load(None, device="cpu", batch_size=64)


@pytest.fixture(scope="module")
def report(encoder):
    return evaluate_demo(encoder=encoder, split="test", num_images=IMAGES, corruption_images=2)


def test_every_section_is_there_and_the_targets_are_judged(report):
    assert report["calibrator"]["source"] == "the model's calibration file"
    assert set(report["calibration"]) >= {"all", "level0", "level3", "top10"}
    assert "probability" in report["image_to_text"]["all_levels"] and "probability" in report["text_to_image"]["level2"]
    for name in ("text_level3_clean", "image_clean", "image_mixed"):
        block = report["uncertainty_quintiles"][name]
        expected = report["text_to_image"]["level3"]["csd"]["queries"] if name.startswith("text") else IMAGES
        assert len(block["R@1"]) == 5 and sum(block["queries"]) == expected
        curve = report["risk_coverage"][name]
        assert curve["risk"][-1] == pytest.approx(curve["random_risk"])  # full coverage: nothing abstained
    mixed = report["mixed_gallery"]
    assert mixed["images"] == IMAGES and 0 < mixed["corrupted"] < IMAGES
    for name in ("calibrated_ECE_all_pairs", "calibrated_ECE_worst_level", "precision_at_0.5_levels_0_1",
                 "recall_at_0.5_levels_0_1", "i2t_all_levels_mAP@R_probability_minus_cosine",
                 "risk_coverage_image_worst_gap_to_random"):
        assert isinstance(report["targets"][name]["met"], bool)
    text = render_report(report)
    assert "match probability (calibrator" in text and "risk (1 - R@1)" in text and "mixed gallery" in text


def test_calibration_figures_equal_a_direct_computation(report, encoder):
    scenes = demo_data.generate("test", IMAGES)
    images = encoder.encode_images([scene.image for scene in scenes])
    captions = list(dict.fromkeys(caption for scene in scenes for caption in scene.captions))
    level3 = [c for c in captions if demo_data.parse_caption(c).relation or demo_data.parse_caption(c).slot is not None]
    texts = encoder.encode_texts(level3)
    cosine = texts.mean.astype(np.float64) @ images.mean.astype(np.float64).T
    probability = encoder.calibrator.probability(cosine, texts.uncertainty[:, None], images.uncertainty[None, :])
    truth = np.array([[scene.matches(c) for scene in scenes] for c in level3])
    got = report["calibration"]["level3"]["calibrated"]
    assert got["ece"] == pytest.approx(expected_calibration_error(probability, truth), abs=1e-6)
    kept = probability >= 0.5
    if kept.any():
        assert got["at_threshold"]["precision"] == pytest.approx((kept & truth).sum() / kept.sum(), abs=1e-9)


def test_quintiles_and_risk_coverage_on_a_known_case():
    uncertainty = np.arange(10.0)
    hit = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 0], dtype=bool)  # the uncertain queries fail
    block = quintiles(uncertainty, hit)
    assert block["R@1"] == [1.0, 1.0, 1.0, 0.5, 0.0] and block["queries"] == [2] * 5
    curve = risk_coverage(uncertainty, hit)
    assert curve["random_risk"] == pytest.approx(0.3)
    assert curve["risk"][:6] == [0.0] * 6 and curve["risk"][-1] == pytest.approx(0.3)
    assert curve["better_than_random_up_to_0.9"] is True
    assert risk_coverage(-uncertainty, hit)["better_than_random_up_to_0.9"] is False  # abstaining on the wrong end


def test_plots_are_written_next_to_the_report(report, tmp_path):
    paths = write_plots(report, tmp_path, "eval")
    assert [p.name for p in paths] == ["eval-reliability.png", "eval-quintiles.png", "eval-risk-coverage.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert write_plots({"model": "m"}, tmp_path / "none") == []


def test_without_a_calibrator_file_eval_fits_one_on_the_validation_split(encoder):
    from models.encoder import Encoder

    bare = Encoder(encoder.model, encoder.tokenizer, encoder.backend, encoder.model_id)
    assert bare.calibrator is None
    calibrator, source = calibrator_for(bare, images=30)
    assert source == "fitted by eval on the val split" and calibrator.fit["images"] == 30
    assert calibrator.min_slope() > 0 and "15% corrupted" in calibrator.fit["note"]
