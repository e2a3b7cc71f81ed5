"""The bytes of an image item, wherever they live, so every image collection can be shown.

Uploaded and demo images are kept in the media store. Items a batch job indexed from a
folder or a csv/jsonl manifest are read back from the job's source file: the item records
the file's path relative to the source (``metadata["path"]``), and the file is opened only
through the job manager's confinement, so nothing outside the configured job roots is ever
served. Items from WebDataset shards or URLs have no local file to show (None).
"""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# source formats (indexer.sources.FORMATS) whose item paths are files relative to a folder
_FOLDER_SOURCES = {"directory": False, "csv": True, "jsonl": True}  # format -> paths relative to the parent


@dataclass(frozen=True)
class ItemImage:
    data: bytes
    media_type: str


def locate_item_image(state: Any, collection: str, item: Any) -> Path | None:
    """The file holding the image of ``item`` in ``collection``, or None when there is none."""
    stored = state.media.path(collection, item.id)
    if stored.is_file():
        return stored
    return _job_source_file(state, collection, dict(item.metadata or {}))


def read_item_image(state: Any, collection: str, item: Any, max_bytes: int) -> ItemImage | None:
    """The image of ``item`` in ``collection`` with its media type, or None when no bytes can be found."""
    path = locate_item_image(state, collection, item)
    if path is None:
        return None
    size = path.stat().st_size
    if size > max_bytes:
        log.warning("not serving %s for %s/%s: %d bytes is over the upload limit", path, collection, item.id, size)
        return None
    metadata = dict(item.metadata or {})
    media_type = metadata.get("media_type") or _guess_type(metadata) or "application/octet-stream"
    return ItemImage(path.read_bytes(), str(media_type))


def _job_source_file(state: Any, collection: str, metadata: dict[str, Any]) -> Path | None:
    relative = metadata.get("path")
    jobs = getattr(state, "jobs", None)
    if not isinstance(relative, str) or not relative or jobs is None:
        return None
    from indexer.roots import PathNotAllowedError

    for job in jobs.list():  # a collection may be filled by several jobs; any may hold the file
        if job.collection != collection or job.format not in _FOLDER_SOURCES:
            continue
        source = Path(job.source)
        base = source.parent if _FOLDER_SOURCES[job.format] else source
        try:
            path = jobs.confinement.resolve(base / relative)
        except (PathNotAllowedError, FileNotFoundError, OSError):
            continue
        if path.is_file():
            return path
    return None


def _guess_type(metadata: dict[str, Any]) -> str | None:
    for key in ("filename", "path"):
        name = metadata.get(key)
        if isinstance(name, str):
            guessed, _ = mimetypes.guess_type(name)
            if guessed and guessed.startswith("image/"):
                return guessed
    return None
