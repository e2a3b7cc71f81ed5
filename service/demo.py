"""Demo collections for a new data dir, so a newcomer can search right after ``make serve``.

From the procedural demo data set (``models.demo_data``: shape scenes with captions at
four levels of specificity, some images corrupted so they are genuinely ambiguous) we
index ``demo-images`` (the rendered scenes, images stored for display) and
``demo-captions`` (every distinct caption, from "an object" to the full sentence).

Only a data dir that was new or empty gets them: ``mark_if_new`` leaves a marker before
anything is written, the bootstrap removes it when both collections are complete, and a
start that finds the marker (a crash half-way) drops the partial collections and redoes it.
An existing data dir is never touched.

With collections in Milvus the data dir says nothing about the deployment, so the decision is
made on the catalog, once for all replicas: the first replica to start on an empty catalog
records "pending" (a Redis key with ``REDIS_URL``, else a file in the data dir), the replica
holding the bootstrap lease builds the collections and records "done"; other replicas serve
meanwhile and never build them again. A builder that dies leaves "pending" and an expiring lease:
the next replica to start drops the partial collections and builds them again. A catalog that
already holds collections records "skipped".
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
    from indexer.datadir import LOCK_NAME

    data_dir.mkdir(parents=True, exist_ok=True)
    if any(entry.name != LOCK_NAME for entry in data_dir.iterdir()):  # the lock of the `serve` holding it
        return False
    marker = data_dir / PENDING_MARKER
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write("demo collections are being built\n")
        handle.flush()
        os.fsync(handle.fileno())
    return True


def prepare(state: ServiceState) -> None:
    """Before anything is written: mark a new data dir (collections in Milvus: decided after opening)."""
    if not state.settings.milvus_uri:
        mark_if_new(state.settings.data_dir)


def bootstrap(state: ServiceState) -> bool:
    """Build the demo collections if this deployment is new; True when this process built them."""
    if state.settings.milvus_uri:
        return bootstrap_shared(state, _DemoRecord.for_settings(state.settings))
    return bootstrap_if_new(state)


class _DemoRecord:
    """Where a Milvus deployment records its demo bootstrap: Redis (shared) or a file (one replica)."""

    def __init__(self, get, set_value, lease) -> None:
        self.get, self.set, self.lease = get, set_value, lease

    @classmethod
    def for_settings(cls, settings) -> _DemoRecord:
        if settings.redis_url:
            import redis

            from indexer.leases import RedisLease

            client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
            key = f"{settings.milvus_prefix}:demo"
            return cls(lambda: client.get(key), lambda value, nx=False: client.set(key, value, nx=nx),
                       lambda: RedisLease(client, f"{key}-lease", ttl_s=30.0))
        from indexer.leases import FileLease

        path = settings.data_dir / ".demo-state"

        def set_value(value: str, nx: bool = False) -> None:
            if not (nx and path.exists()):
                path.write_text(value)

        return cls(lambda: path.read_text() if path.exists() else None, set_value,
                   lambda: FileLease(settings.data_dir / ".demo-lock"))


def bootstrap_shared(state: ServiceState, record: _DemoRecord) -> bool:
    """The demo bootstrap of a catalog shared by replicas (see the module docstring)."""
    status = record.get()
    if status is None:
        record.set("skipped" if state.collection_names() else "pending", nx=True)
        status = record.get()
    if status != "pending":
        return False
    lease = record.lease()
    if not lease.acquire():
        log.info("another replica is building the demo collections")
        return False
    try:
        if record.get() != "pending":  # finished while we waited for the lease
            return False
        for name in DEMO_COLLECTIONS.values():  # leftovers of a builder that died
            if name in state.collection_names():
                state.catalog.drop(name)
                state.media.drop(name)
        build_demo(state, state.settings.demo_scenes)
        record.set("done")
        return True
    finally:
        lease.release()


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
