"""Files that cannot be torn: atomic writes, checksums, and the snapshot manifest.

Every file is written to a temporary name in the same folder, fsynced, renamed over its final
name and the folder fsynced, so after a crash a path holds either the old or the new content.
A snapshot is several such files plus ``MANIFEST.json``, written last, which names each file
with its size and SHA-256. Readers trust nothing the manifest does not vouch for: a missing,
truncated or bit-flipped file raises ``CorruptIndexError``. The manifest and ``collection.json``
carry a checksum of their own content too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .errors import CorruptIndexError

log = logging.getLogger(__name__)

HASH_NAME = "sha256"
MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = 1
_CHUNK = 8 << 20
_TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class FileRecord:
    name: str  # file name inside the snapshot folder
    size: int
    digest: str  # hex SHA-256 of the content

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, HASH_NAME: self.digest}


class HashingWriter:
    """File-like wrapper that hashes and counts what passes through ``write``."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.new(HASH_NAME)
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self._hash.update(data)
        self.size += len(data)
        self._raw.write(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[HashingWriter], None]) -> FileRecord:
    """Write ``path`` via ``write(stream)`` so that it is either absent/old or complete; returns its record."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{_TEMP_SUFFIX}")
    try:
        with open(temp, "wb") as raw:
            stream = HashingWriter(raw)
            write(stream)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return FileRecord(path.name, stream.size, stream.hexdigest())


def atomic_write_bytes(path: Path, data: bytes) -> FileRecord:
    return atomic_write(path, lambda stream: stream.write(data))


def file_digest(path: Path) -> tuple[int, str]:
    """(size, hex SHA-256) of a file, read in chunks."""
    digest = hashlib.new(HASH_NAME)
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def remove_temp_files(folder: Path) -> None:
    """Delete leftovers of writes that a crash interrupted (they are never referenced)."""
    for path in folder.glob(f".*{_TEMP_SUFFIX}"):
        path.unlink(missing_ok=True)


# --- self-checking JSON documents (the manifest, collection.json)

def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def write_checked_json(path: Path, document: dict[str, Any]) -> None:
    """Atomically write ``document`` with a ``checksum`` field over its canonical form."""
    body = {k: v for k, v in document.items() if k != "checksum"}
    body["checksum"] = hashlib.new(HASH_NAME, _canonical(body)).hexdigest()
    atomic_write_bytes(path, json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8"))


def read_checked_json(path: Path) -> dict[str, Any]:
    """Read a document written by ``write_checked_json``; CorruptIndexError if it does not verify."""
    try:
        document = json.loads(Path(path).read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptIndexError(f"{path} cannot be read as JSON: {error}") from None
    if not isinstance(document, dict) or "checksum" not in document:
        raise CorruptIndexError(f"{path} has no checksum field")
    claimed = document.pop("checksum")
    if hashlib.new(HASH_NAME, _canonical(document)).hexdigest() != claimed:
        raise CorruptIndexError(f"{path} fails its checksum (edited or damaged)")
    return document


# --- snapshot manifest

def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The committed snapshot's manifest, or None when no snapshot was ever committed."""
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        return None
    manifest = read_checked_json(path)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise CorruptIndexError(f"{path}: unsupported manifest format {manifest.get('format')!r}")
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any]) -> None:
    """Check every file the manifest names for presence, size and checksum."""
    for role, record in manifest["files"].items():
        path = Path(folder) / record["name"]
        if not path.is_file():
            raise CorruptIndexError(f"snapshot file {path} ({role}) is missing")
        actual = path.stat().st_size
        if actual != record["size"]:
            raise CorruptIndexError(f"snapshot file {path} ({role}) is {actual} bytes, the manifest says "
                                    f"{record['size']} (truncated or replaced)")
        _, digest = file_digest(path)
        if digest != record[HASH_NAME]:
            raise CorruptIndexError(f"snapshot file {path} ({role}) fails its {HASH_NAME} checksum (bit rot "
                                    "or a partial write)")


def commit_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Make ``manifest`` the committed snapshot (atomic), then delete files no manifest names."""
    write_checked_json(Path(folder) / MANIFEST_NAME, {**manifest, "format": MANIFEST_FORMAT})
    keep = {record["name"] for record in manifest["files"].values()} | {MANIFEST_NAME}
    removed = False
    for path in Path(folder).iterdir():
        if path.name not in keep and not path.name.endswith(_TEMP_SUFFIX):
            path.unlink(missing_ok=True)
            removed = True
    if removed:
        fsync_dir(Path(folder))


def discard_uncommitted(folder: Path, manifest: dict[str, Any] | None) -> None:
    """At open: remove temp files and files of snapshots whose manifest never got committed."""
    folder = Path(folder)
    remove_temp_files(folder)
    keep = {MANIFEST_NAME} | ({r["name"] for r in manifest["files"].values()} if manifest else set())
    for path in folder.iterdir():
        if path.name not in keep:
            log.info("removing %s: left by an interrupted snapshot", path)
            path.unlink(missing_ok=True)
