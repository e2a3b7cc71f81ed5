"""The embedded demo model: loads by default, uses its own word-level tokenizer, and works."""

import json

import numpy as np
import pytest

from models import demo_data, load_model
from models.encoder import Encoder
from models.loading import DEMO_MODEL_DIR
from models.training import TrainConfig


@pytest.fixture(scope="module")
def encoder():
    return Encoder.load(None, device="cpu")


def test_default_model_is_the_demo_model_in_the_released_layout():
    model = load_model(None, device="cpu")
    assert model.source_dir == DEMO_MODEL_DIR
    for name in ("config.json", "model.safetensors", "tokenizer.json", "MODEL_CARD.md", "train_config.json"):
        assert (DEMO_MODEL_DIR / name).is_file(), name
    assert model.config.text_cfg.width == model.embed_dim  # an official-architecture config


def test_training_recipe_is_recorded_and_valid():
    recorded = TrainConfig.from_dict(json.loads((DEMO_MODEL_DIR / "train_config.json").read_text()))
    assert recorded.seed is not None and recorded.steps > 0
    shipped = json.loads((DEMO_MODEL_DIR / "config.json").read_text())
    assert shipped == load_model(None).config.to_dict()


def test_tokenizer_pads_with_zero_and_appends_eos(encoder):
    ids = encoder.tokenizer(["a red circle", "an object"])
    assert ids.shape == (2, encoder.context_length)
    assert ids[0, 3].item() == 1 and ids[0, 4:].eq(0).all()  # 3 words, EOS (1), padding (0)
    assert encoder.tokenizer(["A RED Circle."]).tolist() == ids[:1].tolist()


def test_true_captions_outscore_false_ones(encoder):
    scenes = demo_data.generate("val", 40)
    images = encoder.encode_images([s.image for s in scenes])
    captions = [s.captions[3] for s in scenes]
    texts = encoder.encode_texts(captions)
    similarity = images.mean @ texts.mean.T  # (image, caption)
    truth = np.array([[scene.matches(c) for c in captions] for scene in scenes])
    assert similarity[truth].mean() > similarity[~truth].mean() + 0.1
    best = similarity.argmax(axis=0)  # best image per caption
    assert truth[best, np.arange(40)].mean() > 0.3  # a true match on top far more often than chance


def test_more_general_captions_are_more_uncertain(encoder):
    scenes = demo_data.generate("val", 40)
    per_level = np.stack([encoder.encode_texts([s.captions[level] for s in scenes]).uncertainty
                          for level in range(demo_data.LEVELS)], axis=1)  # (scene, level)
    decreasing = (np.diff(per_level, axis=1) < 0).all(axis=1)
    assert decreasing.mean() >= 0.9, per_level.mean(axis=0)


def test_blurred_and_faded_images_are_more_uncertain_than_clean_ones(encoder):
    scenes = demo_data.generate("val", 30)
    clean = encoder.encode_images([s.image for s in scenes]).uncertainty
    for kind in ("blur", "low_contrast"):
        degraded = encoder.encode_images([s.corrupted(kind, 0.8) for s in scenes]).uncertainty
        assert (degraded > clean).mean() >= 0.9, kind


def test_an_image_sits_inside_its_general_caption_more_than_inside_its_specific_one(encoder):
    from models.gaussian import inclusion

    scenes = demo_data.generate("val", 30)
    images = encoder.encode_images([s.image for s in scenes])
    general, specific = (encoder.encode_texts([s.captions[level] for s in scenes]) for level in (0, 3))
    in_general = np.diag(inclusion(images.mean, images.logvar, general.mean, general.logvar))
    in_specific = np.diag(inclusion(images.mean, images.logvar, specific.mean, specific.logvar))
    assert (in_general > in_specific).mean() >= 0.9
