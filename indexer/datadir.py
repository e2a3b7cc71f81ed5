"""One process owns a data dir: an exclusive lock on ``<data dir>/.lock`` that names its holder.

Collections are locked one by one (``catalog.LOCK_FILE``), but two servers on one data dir would
split them between them, and each would report the other's as broken. So ``serve``, ``index``
and ``collections`` take this lock first; a second one is refused with the holder's pid and
what it runs. The kernel drops the lock when its process dies (``kill -9`` included), so a
stale file never blocks anyone; the text in it only says who holds it now.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

from .errors import IndexerError

LOCK_NAME = ".lock"


class DataDirBusyError(IndexerError, RuntimeError):
    """Another process holds the data dir."""


class DataDirLock:
    """The lock of one data dir. Within a process it is shared: a second holder (the service state
    inside the ``serve`` command that took it first) only counts up."""

    _held: dict[Path, list[int]] = {}  # resolved lock path -> [fd, holders] in this process
    _guard = threading.Lock()

    def __init__(self, data_dir: str | os.PathLike, purpose: str):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self.purpose = purpose
        self._key: Path | None = None

    def acquire(self) -> DataDirLock:
        """Take the lock or raise ``DataDirBusyError`` naming the holder (never waits)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        with self._guard:
            if self._key is not None:
                return self
            held = self._held.get(key)
            if held is not None:
                held[1] += 1
                self._key = key
                return self
            fd = self._lock()
            self._held[key] = [fd, 1]
            self._key = key
        return self

    def _lock(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # e.g. a folder where the lock file should be
            raise DataDirBusyError(f"cannot lock the data dir {self.data_dir}: {self.path}: "
                                   f"{error.strerror or error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise DataDirBusyError(f"the data dir {self.data_dir} is in use by {holder}; stop it first or "
                                   "use another data dir") from None
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                             "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record + b"\n", 0)
        return fd

    def release(self) -> None:
        with self._guard:
            if self._key is None:
                return
            held = self._held[self._key]
            held[1] -= 1
            if held[1] == 0:
                del self._held[self._key]
                try:
                    os.ftruncate(held[0], 0)  # nobody holds it now
                except OSError:
                    pass
                os.close(held[0])  # closing drops the flock
            self._key = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(raw: bytes) -> str:
    try:
        record = json.loads(raw.decode("utf-8"))
        return (f"pid {record['pid']} on {record['host']} ({record['purpose']}, since {record['since']})")
    except (ValueError, KeyError, TypeError):
        return "another process (it has not said which yet)"
