"""Image decoding and the eval transform: official geometry, odd modes, hostile files."""

import io

import numpy as np
import pytest
from PIL import Image

from models.preprocess import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImageDecodeError,
    ImagePreprocessor,
    eval_transform,
    load_image,
    resized_size,
)


def encode(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def test_shortest_side_resize_uses_torchvision_rounding():
    assert resized_size(640, 480, 224) == (298, 224)  # int(224 * 640 / 480) = 298
    assert resized_size(480, 640, 224) == (224, 298)
    assert resized_size(100, 100, 32) == (32, 32)


def test_centre_crop_keeps_the_middle_and_normalises():
    # A wide image whose middle third is white and sides black: after resize + centre
    # crop only white remains, which normalises to (1 - mean) / std per channel.
    image = np.zeros((32, 96, 3), dtype=np.uint8)
    image[:, 32:64] = 255
    out = eval_transform(Image.fromarray(image), 32)
    assert out.shape == (3, 32, 32)
    expected = (1.0 - np.array(OPENAI_CLIP_MEAN)) / np.array(OPENAI_CLIP_STD)
    np.testing.assert_allclose(out[:, 8:24, 8:24].mean(axis=(1, 2)), expected, atol=1e-5)


def test_matches_a_direct_pillow_computation():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    resized = image.resize((int(24 * 70 / 50), 24), Image.BICUBIC)
    left = int(round((resized.width - 24) / 2.0))
    crop = np.asarray(resized.crop((left, 0, left + 24, 24)), dtype=np.float32) / 255
    expected = ((crop - OPENAI_CLIP_MEAN) / OPENAI_CLIP_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(eval_transform(image, 24), expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "LA", "CMYK", "1"])
def test_any_mode_becomes_three_channels(mode):
    image = Image.new("RGB", (40, 30), (200, 30, 60)).convert(mode)
    batch = ImagePreprocessor(16)([encode(image, "PNG" if mode != "CMYK" else "JPEG")])
    assert batch.shape == (1, 3, 16, 16)
    assert np.isfinite(batch.numpy()).all()


def test_sixteen_bit_greyscale_is_rescaled_not_clipped():
    values = np.full((20, 20), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    image = load_image(encode(Image.fromarray(values)))
    out = eval_transform(image, 8)
    grey = (128 / 255 - np.array(OPENAI_CLIP_MEAN)) / np.array(OPENAI_CLIP_STD)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), grey, atol=1e-2)


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (60, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = load_image(encode(image, "JPEG", exif=exif))
    assert decoded.size == (20, 60)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("L", (4000, 4000)))
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        load_image(bomb, max_pixels=1_000_000)


@pytest.mark.parametrize("payload,reason", [
    (b"", "empty"),
    (b"definitely not an image", "not a recognised image"),
])
def test_garbage_is_a_clear_error(payload, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(payload)


def test_truncated_file_is_a_clear_error():
    data = encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        load_image(data[: len(data) // 2])
