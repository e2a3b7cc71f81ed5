"""The encoder runtime: batching is invisible, outputs equal the model's, sources resolve."""

import numpy as np
import pytest
import torch
from PIL import Image

from models import ModelSourceError, load_model
from models.encoder import Encoder


@pytest.fixture
def encoder(reference_model_with_tokenizer):
    return Encoder.load(reference_model_with_tokenizer, device="cpu", batch_size=3)


def test_text_batches_equal_one_big_batch(encoder):
    texts = ["a red circle", "a blue square", "the dog", "a photo of a cat", "green", "a"]
    batched = encoder.encode_texts(texts)
    encoder.batch_size = 64
    whole = encoder.encode_texts(texts)
    assert batched.mean.shape == (6, 64)
    np.testing.assert_allclose(batched.mean, whole.mean, atol=1e-5)
    np.testing.assert_allclose(batched.logvar, whole.logvar, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(whole.mean, axis=1), 1.0, atol=1e-5)


def test_images_equal_the_model_on_preprocessed_pixels(encoder, reference_model_with_tokenizer):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(4)]
    seen = []
    out = encoder.encode_images(images, progress=seen.append)
    assert seen == [3, 1]
    model = load_model(reference_model_with_tokenizer, device="cpu")
    direct = model.encode_image(encoder.preprocessor(images))
    np.testing.assert_allclose(out.mean, direct.mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(out.uncertainty, direct.uncertainty.double().numpy(), rtol=1e-5)


def test_empty_input_gives_empty_batch(encoder):
    assert len(encoder.encode_texts([])) == 0
    assert encoder.encode_images([]).mean.shape == (0, 64)


def test_logit_scale_is_exponentiated(encoder):
    assert encoder.logit_scale == pytest.approx(float(encoder.model.logit_scale.exp()))


def test_pair_logit_is_the_models_ppcl_logit(encoder):
    scale, bias = float(encoder.model.logit_scale.exp()), float(encoder.model.logit_bias)
    assert (encoder.family, encoder.deterministic) == ("prolip", False)
    assert encoder.pair_logit.cos_weight == pytest.approx(scale)  # exponentiated, not the raw log-scale
    assert encoder.pair_logit.variance_weight == pytest.approx(-scale / 2)
    assert encoder.pair_logit.bias == pytest.approx(bias)


def test_unknown_backend_and_bad_source_are_clear_errors(reference_model_with_tokenizer, tmp_path):
    with pytest.raises(ValueError, match="unknown backend"):
        Encoder.load(reference_model_with_tokenizer, backend="tensorrt")
    with pytest.raises(ModelSourceError, match="neither a folder"):
        Encoder.load(tmp_path / "nope")


def test_offline_hub_model_error_is_actionable(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelSourceError, match="huggingface-cli download"):
        load_model("hf-hub:SanghyukChun/ProLIP-ViT-B-16-DC-1B-12_8B")


@pytest.mark.parametrize("name", ["ViT-B-16-ProLIP", "ViT-B-16-ProLIP-long", "ViT-L-16-ProLIP",
                                  "ViT-SO400M-14-ProLIP", "ViT-H-14-ProLIP"])
def test_every_released_architecture_builds_with_the_official_shapes(name):
    from models import ProLIP, architecture_config

    config = architecture_config(name)
    with torch.device("meta"):  # shapes only: no memory, no time
        model = ProLIP(config)
    pos = model.text.positional_embedding.shape
    assert pos == (config.text_cfg.context_length + 2, config.text_cfg.width)
    grid = config.vision_cfg.image_size // config.vision_cfg.patch_size
    assert model.visual.positional_embedding.shape[0] == grid * grid + 2
    assert model.visual.transformer.resblocks[0].attn.heads == config.vision_cfg.heads


def test_model_id_names_the_weights_not_the_path(reference_model_with_tokenizer, tmp_path):
    import shutil

    from models import model_id

    copy = shutil.copytree(reference_model_with_tokenizer, tmp_path / "elsewhere" / "b16like")
    assert model_id(copy) == model_id(reference_model_with_tokenizer)
    assert model_id(copy).startswith("b16like@")
    with open(copy / "model.safetensors", "r+b") as handle:  # one flipped byte in the weights
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    assert model_id(copy) != model_id(reference_model_with_tokenizer)
