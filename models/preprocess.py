"""Image decoding and the ProLIP eval transform, with Pillow and NumPy (no torchvision).

The transform equals the official one (open_clip's ``image_transform(is_train=False)``,
resize mode "shortest"): resize the shorter side to ``image_size`` with Pillow's bicubic
filter (the long side truncated as torchvision computes it), centre-crop to a square,
convert to RGB, scale to [0, 1] and normalise with the OpenAI CLIP mean and std.

Decoding adds what users' files need before that transform: EXIF orientation applied,
16-bit and 32-bit greyscale scaled to 8 bits (plain ``convert("RGB")`` would clip them to
white), and a pixel limit that rejects decompression bombs before any pixel is decoded.
HEIC/HEIF photos (iPhones' default) decode through pillow-heif (libheif), registered with
Pillow when this module is imported; AVIF through Pillow's own plugin.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MAX_PIXELS = 64_000_000  # ~8000 x 8000; far above any photo, far below a bomb

pillow_heif.register_heif_opener()  # Image.open reads .heic/.heif from here on (the header only, as for JPEG)

ImageInput = Image.Image | bytes | bytearray | str | os.PathLike


class ImageDecodeError(ValueError):
    """The input is not an image we can decode; the message says why."""


def load_image(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode bytes or a path into an upright PIL image, refusing oversized and broken files."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageDecodeError("empty file")
        stream, name = io.BytesIO(source), "upload"
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError(f"{path}: no such file")
        stream, name = open(path, "rb"), str(path)  # noqa: SIM115 - closed below
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; we decide ourselves below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageDecodeError(
                f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
        # loads the pixels (truncation surfaces here) and turns them upright in place: no copy of
        # an image that needs no turning
        ImageOps.exif_transpose(image, in_place=True)
        return image
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(f"{name}: {error}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name}: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as error:  # truncated / corrupt data
        raise ImageDecodeError(f"{name}: cannot decode image ({error})") from None
    finally:
        if not isinstance(source, (bytes, bytearray)):
            stream.close()


HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_STRIP_PIXELS = 1 << 20  # high-bit-depth images are scaled to 8 bits this many pixels at a time


def decodable_extensions() -> frozenset[str]:
    """File extensions (lower case, no dot) of the formats this Pillow can open, plugins included.

    Asked when needed, not at import: a decoder plugin registered later (pillow-heif's opener, say)
    counts from then on.
    """
    Image.init()
    return _decodable(len(Image.EXTENSION), len(Image.OPEN))  # registering a plugin changes the key


@functools.lru_cache(maxsize=4)
def _decodable(extensions: int, openers: int) -> frozenset[str]:
    return frozenset(ext.lstrip(".").lower() for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of any Pillow mode; high-bit-depth greyscale is rescaled, not clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in HIGH_BIT_MODES:
        return _high_bit_to_grey(image).convert("RGB")
    return image.convert("RGB")


def _high_bit_to_grey(image: Image.Image) -> Image.Image:
    """16/32-bit greyscale scaled to 8 bits ("L"), in strips: the float copy never holds the whole image."""
    low, high = image.getextrema()
    high = max(float(high), 0.0)
    if image.mode == "F":
        top = max(high, 1e-12)
    else:
        top = 65535.0 if image.mode.startswith("I;16") or high > 255 else 255.0
    width, height = image.size
    eight_bit = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    for top_row in range(0, height, rows):
        strip = np.asarray(image.crop((0, top_row, width, min(top_row + rows, height))), dtype=np.float64)
        eight_bit[top_row:top_row + rows] = np.clip(strip / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(eight_bit, mode="L")


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after scaling the shorter side to ``size`` (torchvision's rounding)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def eval_transform(image: Image.Image, size: int) -> np.ndarray:
    """One PIL image -> normalised float32 array [3, size, size]."""
    if image.mode in HIGH_BIT_MODES:
        # cannot be resized bicubically: scaled to 8-bit grey first (resizing grey and then
        # making it RGB gives the same values as resizing its RGB copy, at a third of the memory)
        image = _high_bit_to_grey(image)
    elif image.mode not in ("RGB", "RGBA", "L"):
        # palette and 1-bit images would be resized with nearest neighbour by Pillow: make them RGB first
        image = to_rgb(image)
    width, height = image.size
    new_width, new_height = resized_size(width, height, size)
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.BICUBIC)
    left = int(round((new_width - size) / 2.0))
    top = int(round((new_height - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    # As the official pipeline, RGB conversion comes after resize and crop.
    pixels = np.asarray(to_rgb(image), dtype=np.float32) / 255.0  # (S, S, 3)
    pixels = (pixels - np.asarray(OPENAI_CLIP_MEAN, np.float32)) / np.asarray(OPENAI_CLIP_STD, np.float32)
    return pixels.transpose(2, 0, 1)  # (3, S, S)


class ImagePreprocessor:
    """Decodes and transforms batches of images for a model of input side ``image_size``."""

    def __init__(self, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS):
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = image_size
        self.max_pixels = max_pixels

    def array(self, images: Sequence[ImageInput] | Iterable[ImageInput]) -> np.ndarray:
        """Images -> float32 array [B, 3, S, S]."""
        batch = [eval_transform(load_image(image, self.max_pixels), self.image_size) for image in images]
        if not batch:
            return np.zeros((0, 3, self.image_size, self.image_size), dtype=np.float32)
        return np.stack(batch)

    def __call__(self, images: Sequence[ImageInput] | Iterable[ImageInput]) -> torch.Tensor:
        """Images -> float32 tensor [B, 3, S, S]."""
        import torch  # here, not at the top: decoding alone (indexer, CLI) should not pay for torch

        return torch.from_numpy(self.array(images))
