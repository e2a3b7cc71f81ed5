"""Where near-duplicates fall on the demo model: the figures behind the default duplicate threshold.

Encodes held-out demo scenes, copies of them (re-encoded as JPEG, halved in size, slightly cropped)
and reports, for each kind of copy, the cosine of its mean with the original's and the share at or
above a threshold; then the same for distinct scenes (each one's nearest other scene, and pairs whose
most specific captions differ or coincide):

    python scripts/duplicate_threshold.py [--scenes 300] [--threshold 0.98]
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--threshold", type=float, default=0.98)
    args = parser.parse_args()

    from indexer.duplicates import DEFAULT_THRESHOLD
    from models import demo_data
    from models.encoder import Encoder

    encoder = Encoder.load(None, device="cpu")  # the embedded demo model
    scenes = demo_data.generate("test", args.scenes)
    images = [scene.image for scene in scenes]
    base = encoder.encode_images(images).mean.astype(np.float64)

    def jpeg(image: Image.Image, quality: int) -> Image.Image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue()))

    def crop(image: Image.Image, keep: float) -> Image.Image:
        dx, dy = int(image.width * (1 - keep) / 2), int(image.height * (1 - keep) / 2)
        return image.crop((dx, dy, image.width - dx, image.height - dy))

    t = args.threshold
    print(f"demo model, {args.scenes} held-out scenes; threshold {t} (default {DEFAULT_THRESHOLD})")
    copies = {"JPEG quality 90": lambda im: jpeg(im, 90), "JPEG quality 60": lambda im: jpeg(im, 60),
              "half size": lambda im: im.resize((im.width // 2, im.height // 2)),
              "95 % crop": lambda im: crop(im, 0.95)}
    for name, make in copies.items():
        cosine = (encoder.encode_images([make(im) for im in images]).mean.astype(np.float64) * base).sum(1)
        print(f"{name:>16}: median cosine {np.median(cosine):.4f}, 5th percentile {np.percentile(cosine, 5):.4f}, "
              f"share >= {t}: {(cosine >= t).mean():.3f}")
    gram = base @ base.T
    np.fill_diagonal(gram, -1)
    nearest = gram.max(1)
    print(f"distinct scenes: median nearest-neighbour cosine {np.median(nearest):.4f}; share with a neighbour >= {t}: "
          f"{(nearest >= t).mean():.3f}")
    pairs = np.triu_indices(len(scenes), 1)
    same = np.array([scenes[i].captions[-1] == scenes[j].captions[-1] for i, j in zip(*pairs, strict=True)])
    values = gram[pairs]
    if same.any():
        print(f"pairs with the same most specific caption ({same.sum()}): median cosine {np.median(values[same]):.4f}, "
              f"share >= {t}: {(values[same] >= t).mean():.3f}")
    print(f"pairs with different most specific captions ({(~same).sum()}): share >= {t}: "
          f"{(values[~same] >= t).mean():.4f}")


if __name__ == "__main__":
    main()
