"""The bytes of an image item, wherever they live, so every image collection can be shown.

Uploaded and demo images are kept in the media store. Items a batch job indexed from a
folder or a csv/jsonl manifest are read back from the job's source file: the item records
the file's path relative to the source (``metadata["path"]``). Items from WebDataset shards
are read back from their member in the shard, at the offset the job recorded when it
indexed them. Job files are opened only through the job manager's confinement, so nothing
outside the configured job roots is ever served. Items fetched from URLs keep no bytes
here (None): the service does not re-fetch them on a viewer's behalf.
"""

from __future__ import annotations

import io
import logging
import mimetypes
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .schemas import ITEM_IMAGE_MEDIA_TYPES

log = logging.getLogger(__name__)

# source formats (indexer.sources.FORMATS) whose item paths are files relative to a folder
_FOLDER_SOURCES = {"directory": False, "csv": True, "jsonl": True}  # format -> paths relative to the parent


@dataclass(frozen=True)
class ItemImage:
    data: bytes
    media_type: str


@dataclass(frozen=True)
class ImageLocation:
    """Where an item's image bytes are: a whole file, or ``size`` bytes at ``offset`` in one."""

    path: Path
    offset: int = 0
    size: int | None = None  # None: the whole file


def locate_item_image(state: Any, collection: str, item: Any) -> ImageLocation | None:
    """Where the image of ``item`` in ``collection`` is stored, or None when nowhere."""
    stored = state.media.path(collection, item.id)
    if stored.is_file():
        return ImageLocation(stored)
    source_file = _job_source_file(state, collection, dict(item.metadata or {}))
    if source_file is not None:
        return ImageLocation(source_file)
    return _shard_member(state, collection, item.id)


def read_item_image(state: Any, collection: str, item: Any, max_bytes: int) -> ItemImage | None:
    """The image of ``item`` in ``collection`` with its media type, or None when no bytes can be found."""
    location = locate_item_image(state, collection, item)
    if location is None:
        return None
    size = location.size if location.size is not None else location.path.stat().st_size
    if size > max_bytes:
        log.warning("not serving %s for %s/%s: %d bytes is over the upload limit", location.path, collection,
                    item.id, size)
        return None
    with open(location.path, "rb") as handle:
        handle.seek(location.offset)
        data = handle.read(size)
    if len(data) != size:  # a shard rewritten or truncated since it was indexed
        log.warning("not serving %s for %s/%s: %d of %d bytes left", location.path, collection, item.id,
                    len(data), size)
        return None
    metadata = dict(item.metadata or {})
    media_type = metadata.get("media_type") or _guess_type(metadata) or _sniff_type(data)
    if media_type not in ITEM_IMAGE_MEDIA_TYPES:  # only the types the API documents
        media_type = "application/octet-stream"
    return ItemImage(data, str(media_type))


def _job_source_file(state: Any, collection: str, metadata: dict[str, Any]) -> Path | None:
    relative = metadata.get("path")
    if not isinstance(relative, str) or not relative:
        return None
    for jobs, job in _jobs_filling(state, collection, _FOLDER_SOURCES):
        source = Path(job.source)
        path = _confined(jobs, (source.parent if _FOLDER_SOURCES[job.format] else source) / relative)
        if path is not None and path.is_file():
            return path
    return None


def _shard_member(state: Any, collection: str, item_id: str) -> ImageLocation | None:
    for jobs, job in _jobs_filling(state, collection, ("webdataset",)):
        ref = jobs.store.indexed_ref(job.job_id, item_id)
        if not ref or "tar" not in ref:
            continue
        path = _confined(jobs, ref["tar"])
        offset, size = int(ref["offset"]), int(ref["size"])
        if path is not None and path.is_file() and path.stat().st_size >= offset + size:  # else cut short since
            return ImageLocation(path, offset, size)
    return None


def _jobs_filling(state: Any, collection: str, formats: Iterable[str]) -> Iterator[tuple[Any, Any]]:
    """(job manager, job) for each job, newest first, that indexed ``collection`` from one of ``formats``.

    A collection may be filled by several jobs; any of them may hold an item's bytes.
    """
    jobs = getattr(state, "jobs", None)
    if jobs is None:
        return
    try:
        listed = jobs.list()
    except Exception as error:  # a damaged job history must not take the collections' images with it
        log.warning("cannot read the job history to find item images: %s", error)
        return
    for job in listed:
        if job.collection == collection and job.format in formats:
            yield jobs, job


def _confined(jobs: Any, path: str | Path) -> Path | None:
    """``path`` resolved inside the job roots, or None when it lies outside them or cannot be resolved."""
    from indexer.roots import PathNotAllowedError

    try:
        return jobs.confinement.resolve(path)
    except (PathNotAllowedError, FileNotFoundError, OSError):
        return None


def _sniff_type(data: bytes) -> str | None:
    """The media type of image bytes, from their header (shard members carry no file name here)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return Image.MIME.get(image.format or "")
    except (UnidentifiedImageError, OSError):
        return None


def _guess_type(metadata: dict[str, Any]) -> str | None:
    for key in ("filename", "path"):
        name = metadata.get(key)
        if isinstance(name, str):
            guessed, _ = mimetypes.guess_type(name)
            if guessed and guessed.startswith("image/"):
                return guessed
    return None
