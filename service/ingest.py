"""Adding items to a collection from a request: validate all, encode, then write once.

Every item is checked before anything is written, so a request with one bad item adds
nothing and the collection is left as it was. Image bytes are stored before the index
entry that points at them (a crash in between leaves an unused file, never a dangling
entry). Default ids are content hashes, so sending the same text or image twice updates
one item instead of adding a duplicate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from indexer.commit import item_metadata

from .errors import InvalidInput
from .images import PreparedImage
from .schemas import AddItemsResponse, TextItemIn
from .state import ServiceState


def content_id(prefix: str, data: bytes) -> str:
    return f"{prefix}-{hashlib.sha256(data).hexdigest()[:20]}"


@dataclass
class ImageUpload:
    image: PreparedImage
    item_id: str | None
    metadata: dict[str, Any]


def _check_unique(ids: list[str]) -> None:
    seen = set()
    for item_id in ids:
        if item_id in seen:
            raise InvalidInput(f"item id {item_id!r} appears twice in this request")
        seen.add(item_id)


async def add_texts(state: ServiceState, name: str, items: list[TextItemIn]) -> AddItemsResponse:
    limits = state.limits
    texts = limits.texts([item.text for item in items], "items")
    ids = [limits.item_id(item.id) if item.id is not None else content_id("t", item.text.encode())
           for item in items]
    _check_unique(ids)
    metadata = [{**limits.metadata(item.metadata, f"items[{i}].metadata"), "text": item.text}
                for i, item in enumerate(items)]
    limits.collection(name)
    batch = await state.queries.texts(texts)  # before creating anything: a failure leaves no trace
    index, created = await run_in_threadpool(state.collection_or_create, name, "text")
    await run_in_threadpool(index.add, ids, batch.mean, batch.logvar, metadata)
    return AddItemsResponse(collection=name, created=created, ids=ids, size=len(index))


async def add_images(state: ServiceState, name: str, uploads: list[ImageUpload]) -> AddItemsResponse:
    limits = state.limits
    ids = [limits.item_id(u.item_id) if u.item_id is not None else content_id("i", u.image.data) for u in uploads]
    _check_unique(ids)
    metadata = []
    for i, upload in enumerate(uploads):
        # what the photo's EXIF says (date, camera, GPS; indexer.photos), under what the client sent
        meta = dict(item_metadata(limits.metadata(upload.metadata, f"metadata[{i}]"), upload.image.photo))
        meta.update(filename=upload.image.filename, width=upload.image.width, height=upload.image.height,
                    media_type=upload.image.media_type)
        metadata.append(meta)
    limits.collection(name)
    batch = await state.queries.images([u.image for u in uploads])
    index, created = await run_in_threadpool(state.collection_or_create, name, "image")
    for item_id, upload in zip(ids, uploads, strict=True):
        await run_in_threadpool(state.media.save, name, item_id, upload.image.data)
    await run_in_threadpool(index.add, ids, batch.mean, batch.logvar, metadata)
    return AddItemsResponse(collection=name, created=created, ids=ids, size=len(index))
