"""The shipped deterministic CLIP of the demo world: a CLIP checkpoint trained like the demo ProLIP, and it works."""

import json

import numpy as np
import pytest

from models import demo_data, load_model
from models.encoder import Encoder
from models.loading import DEMO_MODEL_DIR
from models.training import TrainConfig

DEMO_CLIP_DIR = DEMO_MODEL_DIR.parent / "demo-clip"


@pytest.fixture(scope="module")
def encoder():
    return Encoder.load(DEMO_CLIP_DIR, device="cpu")


def test_it_is_a_clip_checkpoint_with_its_recipe_and_report():
    model = load_model(DEMO_CLIP_DIR, device="cpu")
    assert (model.family, model.deterministic) == ("clip", True)
    files = ("config.json", "model.safetensors", "tokenizer.json", "train_config.json", "eval.json", "MODEL_CARD.md")
    for name in files:
        assert (DEMO_CLIP_DIR / name).is_file(), name
    recorded = TrainConfig.from_dict(json.loads((DEMO_CLIP_DIR / "train_config.json").read_text()))
    prolip = TrainConfig.from_dict(json.loads((DEMO_MODEL_DIR / "train_config.json").read_text()))
    # the last stage of the same schedule, without the terms that need variances
    for name in ("steps", "batch_size", "lr", "warmup_steps", "weight_decay", "seed", "data"):
        assert getattr(recorded, name) == getattr(prolip, name), name
    assert recorded.vib_beta == recorded.inclusion_alpha == recorded.inclusion_alpha_occ == 0
    report = json.loads((DEMO_CLIP_DIR / "eval.json").read_text())
    assert (report["model_family"], report["deterministic"], report["images"]) == ("clip", True, 1000)


def test_true_captions_outscore_false_ones(encoder):
    scenes = demo_data.generate("val", 40)
    images = encoder.encode_images([s.image for s in scenes])
    captions = [s.captions[3] for s in scenes]
    texts = encoder.encode_texts(captions)
    assert images.logvar is None and texts.logvar is None
    similarity = images.mean @ texts.mean.T  # (image, caption)
    truth = np.array([[scene.matches(c) for c in captions] for scene in scenes])
    assert similarity[truth].mean() > similarity[~truth].mean() + 0.1
    best = similarity.argmax(axis=0)
    assert truth[best, np.arange(40)].mean() > 0.3
