"""Files that cannot be torn: atomic writes, checksums, and the snapshot manifest.

Every file is written to a temporary name in the same folder, fsynced, renamed over its final
name and the folder fsynced, so after a crash a path holds either the old or the new content.
A snapshot is several such files plus ``MANIFEST.json``, written last, which names each file
with its size and SHA-256 digests. Readers trust nothing the manifest does not vouch for: a
missing, truncated or bit-flipped file raises ``CorruptIndexError``. The manifest and
``collection.json`` carry a checksum of their own content too.

A file's SHA-256 is taken per segment of ``SEGMENT_BYTES`` (manifest format 2: a list of
digests), so verifying a multi-GB vectors file at open is spread over every core instead of
one SHA-256 stream (3 GB at 1M x 768 takes ~4 s on one busy core); every byte is still
checked before the snapshot is used. Manifests of format 1 (one digest per file) still load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .errors import CorruptIndexError

log = logging.getLogger(__name__)

HASH_NAME = "sha256"
SEGMENTS = "sha256_segments"  # format 2: SHA-256 of each SEGMENT_BYTES piece of the file, in order
SEGMENT_BYTES = 64 << 20
MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = 2
READABLE_FORMATS = (1, 2)
_CHUNK = 8 << 20
_TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class FileRecord:
    name: str  # file name inside the snapshot folder
    size: int
    segments: tuple[str, ...]  # hex SHA-256 of each SEGMENT_BYTES piece of the content

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "segment_bytes": SEGMENT_BYTES, SEGMENTS: list(self.segments)}


class HashingWriter:
    """File-like wrapper that hashes (per segment) and counts what passes through ``write``."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.new(HASH_NAME)
        self._in_segment = 0
        self._digests: list[str] = []
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            take = min(SEGMENT_BYTES - self._in_segment, len(view) - done)
            self._hash.update(view[done:done + take])
            self._in_segment += take
            done += take
            if self._in_segment == SEGMENT_BYTES:
                self._digests.append(self._hash.hexdigest())
                self._hash, self._in_segment = hashlib.new(HASH_NAME), 0
        self.size += len(view)
        self._raw.write(view)
        return len(view)

    def flush(self) -> None:
        self._raw.flush()

    def segments(self) -> tuple[str, ...]:
        """The digests of every segment, the last (possibly short, or an empty file's) one included."""
        if self._in_segment or not self._digests:
            return (*self._digests, self._hash.hexdigest())
        return tuple(self._digests)


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
    return FileRecord(path.name, stream.size, stream.segments())


def atomic_write_bytes(path: Path, data: bytes) -> FileRecord:
    return atomic_write(path, lambda stream: stream.write(data))


def file_digest(path: Path, offset: int = 0, length: int | None = None) -> tuple[int, str]:
    """(size, hex SHA-256) of a file, or of ``length`` bytes from ``offset``, read in chunks."""
    digest = hashlib.new(HASH_NAME)
    size = 0
    with open(path, "rb") as handle:
        handle.seek(offset)
        while length is None or size < length:
            chunk = handle.read(_CHUNK if length is None else min(_CHUNK, length - size))
            if not chunk:
                break
            digest.update(chunk)  # hashlib releases the GIL for large buffers: segments hash in parallel
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
    if manifest.get("format") not in READABLE_FORMATS:
        raise CorruptIndexError(f"{path}: unsupported manifest format {manifest.get('format')!r}")
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any], threads: int | None = None) -> None:
    """Check every file the manifest names for presence, size and checksum (segments in parallel)."""
    finish_verification(start_verification(folder, manifest, threads))


def start_verification(folder: Path, manifest: dict[str, Any], threads: int | None = None,
                       roles: set[str] | None = None) -> list[Future]:
    """Check sizes now and start hashing every segment on a thread pool; ``finish_verification`` waits.

    The caller may do other work meanwhile (parse the small files, build the table) but must
    not use the snapshot before ``finish_verification`` has returned. ``roles``: only these files.
    """
    checks: list[tuple[Path, str, int, int, str]] = []  # (path, role, offset, length, expected digest)
    for role, record in manifest["files"].items():
        if roles is not None and role not in roles:
            continue
        path = Path(folder) / record["name"]
        if not path.is_file():
            raise CorruptIndexError(f"snapshot file {path} ({role}) is missing")
        actual = path.stat().st_size
        if actual != record["size"]:
            raise CorruptIndexError(f"snapshot file {path} ({role}) is {actual} bytes, the manifest says "
                                    f"{record['size']} (truncated or replaced)")
        if SEGMENTS in record:
            step = int(record["segment_bytes"])
            expected = list(record[SEGMENTS])
            if step <= 0 or len(expected) != max(1, -(-actual // step)):
                raise CorruptIndexError(f"snapshot file {path} ({role}): the manifest lists {len(expected)} segment "
                                        f"checksums for {actual} bytes")
            checks += [(path, role, i * step, step, digest) for i, digest in enumerate(expected)]
        else:  # format 1: one digest over the whole file
            checks.append((path, role, 0, actual, record[HASH_NAME]))
    if not checks:
        return []
    workers = max(1, min(threads or os.cpu_count() or 1, len(checks)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify")
    try:
        return [pool.submit(_check_segment, *check) for check in checks]
    finally:
        pool.shutdown(wait=False)  # the submitted checks still run; the threads end with them


def finish_verification(pending: list[Future]) -> None:
    """Wait for the checks ``start_verification`` started; raises the first CorruptIndexError."""
    failure = None
    for future in pending:
        error = future.exception()
        if error is not None and failure is None:
            failure = error
    if failure is not None:
        raise failure


class PendingVerification:
    """Checks still running after open (see ``snapshot.load``): ``wait`` blocks until they end.

    Raises the first ``CorruptIndexError`` they found, at every call; returns once all matched.
    """

    def __init__(self, pending: list[Future]):
        self._pending = pending
        self._error: BaseException | None = None
        self._done = not pending

    @property
    def done(self) -> bool:
        return self._done or all(future.done() for future in self._pending)

    def wait(self) -> None:
        if not self._done:
            try:
                finish_verification(self._pending)
            except BaseException as error:
                self._error = error
            self._done = True
        if self._error is not None:
            raise self._error


def _check_segment(path: Path, role: str, offset: int, length: int, expected: str) -> None:
    _, digest = file_digest(path, offset, length)
    if digest != expected:
        raise CorruptIndexError(f"snapshot file {path} ({role}) fails its {HASH_NAME} checksum at byte {offset} "
                                "(bit rot or a partial write)")


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
