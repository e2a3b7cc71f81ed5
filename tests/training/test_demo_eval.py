"""The demo benchmark runs end to end and its figures agree with direct computations."""

import numpy as np
import pytest

from models import demo_data
from models.demo_eval import evaluate_demo, render_report
from models.encoder import Encoder
from models.training import train


@pytest.fixture(scope="module")
def report_and_encoder(tiny_data, tmp_path_factory):
    from models.training import TrainConfig

    from .conftest import TINY_MODEL

    config = TrainConfig(data=[str(tiny_data / "train.jsonl")], tokenizer=str(tiny_data / "tokenizer.json"),
                         output_dir=str(tmp_path_factory.mktemp("eval-run")), model_config=TINY_MODEL, steps=3,
                         batch_size=16, warmup_steps=1, threads=1)
    encoder = Encoder.load(train(config, progress=False).model_dir, device="cpu")
    return evaluate_demo(encoder=encoder, split="val", num_images=24, corruption_images=3), encoder


def test_report_has_every_section_and_sane_values(report_and_encoder):
    report, _ = report_and_encoder
    t2i = report["text_to_image"]
    assert t2i["level0"]["cosine"]["R@1"] == 1.0  # "an object" describes every image
    assert t2i["level0"]["mean_positives"] == 24
    for level in range(4):
        for kind in ("cosine", "csd"):
            m = t2i[f"level{level}"][kind]
            assert 0 <= m["R@1"] <= m["R@5"] <= m["R@10"] <= 1
            assert 0 <= m["mAP@R"] <= 1 and 0 <= m["R-Precision"] <= 1
    assert -1 <= report["text_uncertainty"]["spearman_level"] <= 1
    assert len(report["image_uncertainty"]["blur"]["mean_by_strength"]) == 6
    assert set(report["targets"]) == {"t2i_R@1_level3", "spearman_level_text_uncertainty",
                                      "spearman_strength_image_uncertainty", "inclusion_level0_over_level3",
                                      "mAP@R_csd_vs_cosine_level1", "mAP@R_csd_vs_cosine_level2"}
    assert all(isinstance(t["met"], bool) for t in report["targets"].values())
    assert report["traversal"]["examples"][0]["path"][-1]["caption"] == "an object"
    text = render_report(report)
    assert "targets:" in text and "level 3 captions" in text


def test_level3_recall_equals_a_direct_computation(report_and_encoder):
    report, encoder = report_and_encoder
    scenes = demo_data.generate("val", 24, image_size=encoder.image_size)
    images = encoder.encode_images([s.image for s in scenes])
    captions = list(dict.fromkeys(s.captions[3] for s in scenes))
    texts = encoder.encode_texts(captions)
    hits = []
    for row, caption in enumerate(captions):
        best = int(np.argmax(images.mean @ texts.mean[row]))
        hits.append(scenes[best].matches(caption))
    assert report["text_to_image"]["level3"]["cosine"]["R@1"] == pytest.approx(np.mean(hits))


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="at least"):
        evaluate_demo(num_images=5)


def test_risk_coverage_section_agrees_with_a_direct_computation(report_and_encoder):
    report, encoder = report_and_encoder
    section = report["degraded_queries"]
    assert section["queries"] == 24 and section["degraded_share"] == 0.5
    assert set(section["by"]) == {"image_uncertainty", "top1_cosine"}
    for block in section["by"].values():
        assert block["risk@100%"] == pytest.approx(section["error_rate"])
        assert 0 <= block["aurc"] <= 1 and 0 <= block["auroc_degraded"] <= 1
    assert 0 <= report["image_uncertainty"]["auroc_degraded_vs_clean"] <= 1


def test_a_deterministic_model_gets_the_sections_that_need_no_uncertainty(clip_encoder):
    """CLIP on the same benchmark: retrieval and risk-coverage by top-1 cosine; no uncertainty sections."""
    report = evaluate_demo(encoder=clip_encoder, split="val", num_images=24, corruption_images=3)
    assert (report["model_family"], report["deterministic"]) == ("clip", True)
    assert report["text_uncertainty"] is None and report["image_uncertainty"] is None and report["inclusion"] is None
    for level in range(4):
        block = report["text_to_image"][f"level{level}"]
        assert block["csd"] == block["cosine"]  # CSD of points ranks exactly as cosine
    assert set(report["degraded_queries"]["by"]) == {"top1_cosine"}
    targets = report["targets"]
    assert targets["spearman_level_text_uncertainty"]["value"] is None
    assert targets["t2i_R@1_level3"]["value"] == report["text_to_image"]["level3"]["csd"]["R@1"]
    assert "n/a: a deterministic model has no uncertainty" in render_report(report)
