"""Demo collections for a new data dir, so a newcomer can search right after ``make serve``.

From the procedural demo data set (``models.demo_data``: shape scenes with captions at
four levels of specificity, some images corrupted so they are genuinely ambiguous) we
index ``demo-images`` (the rendered scenes, images stored for display) and
``demo-captions`` (every distinct caption, from "an object" to the full sentence).

Only a data dir that was new or empty gets them: ``mark_if_new`` leaves a marker before
anything is written, the bootstrap removes it when both collections are complete, and a
start that finds the marker (a crash half-way) drops the partial collections and redoes it.
An existing data dir is never touched.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .ingest import content_id
from .state import DEMO_COLLECTIONS, ServiceState

log = logging.getLogger(__name__)

PENDING_MARKER = ".demo-pending"
DEMO_SPLIT = "test"
CORRUPT_FRACTION = 0.15
ENCODE_CHUNK = 128


def mark_if_new(data_dir: Path) -> bool:
    """Create ``data_dir`` if needed; when it is new or empty, leave the marker. True if marked."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if any(data_dir.iterdir()):
        return False
    marker = data_dir / PENDING_MARKER
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write("demo collections are being built\n")
        handle.flush()
        os.fsync(handle.fileno())
    return True


def bootstrap_if_new(state: ServiceState) -> bool:
    """Build the demo collections when the data dir was marked new; True when built."""
    marker = state.settings.data_dir / PENDING_MARKER
    if not marker.is_file():
        return False
    for name in DEMO_COLLECTIONS.values():  # leftovers of an interrupted bootstrap
        if name in state.collection_names():
            state.catalog.drop(name)
            state.media.drop(name)
    build_demo(state, state.settings.demo_scenes)
    marker.unlink()
    return True


def _scenes(n: int):
    from models import demo_data

    rng = np.random.default_rng(7)
    for scene in demo_data.generate(DEMO_SPLIT, n):
        kind, strength, image = None, 0.0, scene.image
        if rng.random() < CORRUPT_FRACTION:
            kind = str(rng.choice(demo_data.CORRUPTIONS))
            strength = float(rng.uniform(0.3, 1.0))
            image = scene.corrupted(kind, strength)
        yield scene, kind, strength, image


def build_demo(state: ServiceState, n_scenes: int) -> None:
    encoder = state.encoder
    log.info("indexing the demo collections (%d scenes) into %s", n_scenes, state.settings.data_dir)
    images = catalog_create(state, DEMO_COLLECTIONS["image"], "image")
    captions: dict[str, int] = {}
    scenes = list(_scenes(n_scenes))
    with tqdm(total=len(scenes), desc="demo images", unit="img", disable=None) as bar:
        for start in range(0, len(scenes), ENCODE_CHUNK):
            chunk = scenes[start:start + ENCODE_CHUNK]
            batch = encoder.encode_images([image for _, _, _, image in chunk])
            ids, metadata = [], []
            for scene, kind, strength, image in chunk:
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                state.media.save(DEMO_COLLECTIONS["image"], scene.id, buffer.getvalue())
                ids.append(scene.id)
                metadata.append({"scene": scene.id, "captions": list(scene.captions), "corruption": kind,
                                 "strength": round(strength, 3), "media_type": "image/png",
                                 "filename": f"{scene.id}.png"})
                for level, caption in enumerate(scene.captions):
                    captions.setdefault(caption, level)
            images.add(ids, batch.mean, batch.logvar, metadata)
            bar.update(len(chunk))
    texts = catalog_create(state, DEMO_COLLECTIONS["text"], "text")
    caption_list = sorted(captions, key=lambda text: (captions[text], text))
    with tqdm(total=len(caption_list), desc="demo captions", unit="text", disable=None) as bar:
        for start in range(0, len(caption_list), ENCODE_CHUNK):
            chunk = caption_list[start:start + ENCODE_CHUNK]
            batch = encoder.encode_texts(chunk)
            texts.add([content_id("t", text.encode()) for text in chunk], batch.mean, batch.logvar,
                      [{"text": text, "level": captions[text]} for text in chunk])
            bar.update(len(chunk))
    log.info("demo collections ready: %d images, %d captions", len(images), len(texts))


def model_description(encoder) -> dict:
    """What a new collection records about the model that fills it (family; points or Gaussians)."""
    return {"model_family": getattr(encoder, "family", None),
            "deterministic": bool(getattr(encoder, "deterministic", False))}


def catalog_create(state: ServiceState, name: str, modality: str):
    return state.catalog.create(name, modality=modality, dim=state.encoder.embed_dim,
                                model_id=state.encoder.model_id, **model_description(state.encoder))
