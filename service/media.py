"""Uploaded image bytes kept beside the index, so results can be shown (the web UI needs them).

Files live at ``<data dir>/.media/<collection>/<sha1 of item id>``: item ids may hold any
character but '/', and hashing keeps file names safe. Writes are atomic (temp file,
fsync, rename), so a crash leaves either the old file or the new one.

Replicas that share their collections (Milvus) must share this folder too: ``PROLIP_MEDIA_DIR``
names it, on a volume every replica mounts (one Docker volume on one host; a ReadWriteMany
volume such as NFS, EFS or CephFS across hosts). The atomic rename is what makes concurrent
writers from several replicas safe: a reader sees a whole file or none. Object storage was the
other choice; a shared volume keeps this class as it is and needs no new client or credentials.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


class MediaStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, collection: str, item_id: str) -> Path:
        return self.root / collection / hashlib.sha1(item_id.encode()).hexdigest()

    def save(self, collection: str, item_id: str, data: bytes) -> Path:
        target = self.path(collection, item_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def read(self, collection: str, item_id: str) -> bytes | None:
        path = self.path(collection, item_id)
        return path.read_bytes() if path.is_file() else None

    def delete(self, collection: str, item_id: str) -> None:
        self.path(collection, item_id).unlink(missing_ok=True)

    def drop(self, collection: str) -> None:
        shutil.rmtree(self.root / collection, ignore_errors=True)
