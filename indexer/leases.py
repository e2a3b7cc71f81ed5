"""Who runs a job: a lease, held by one run at a time and given up by a run that dies.

Two kinds, one interface (``acquire``, ``release``, ``held_elsewhere``, ``lost``):

- ``FileLease``: an exclusive flock on ``<data dir>/job-locks/<job>.lock``. The kernel frees it
  the moment its process dies, so a restarted process (or another one on the same host and
  data dir) can take the job over at once. One data dir, one host.
- ``RedisLease``: a Redis key set with NX and a time to live, renewed by a thread every third
  of it. A replica that dies stops renewing; the key expires after ``ttl_s`` and any replica
  may take the job over. A run whose renewal fails (it was paused longer than the TTL, or Redis
  was unreachable) loses the lease: ``lost`` turns true and ``on_lost`` is called so the run
  stops at its next chunk boundary. Renewal and release compare the holder's token first, so a
  run never extends or deletes a lease another run has since taken.

Taking a job over twice is harmless for the index (chunks are upserts by id, applied once by
their marker; see ``indexer.commit``); the lease keeps the work from being done twice.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from .errors import StoreError

log = logging.getLogger(__name__)

LOCK_DIR = "job-locks"

# renew only our own lease: the value is the holder's token
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class FileLease:
    """An exclusive flock on ``path``; the kernel frees it if the process dies."""

    lost = False  # a flock is never taken away from a live process

    def __init__(self, path: Path):
        self.path = path
        self._handle = None

    def acquire(self, on_lost: Callable[[], None] | None = None) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        except OSError as error:  # e.g. a folder where the lock file should be
            raise StoreError(f"cannot lock {self.path}: {error.strerror or error}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def held_elsewhere(self) -> bool:
        """True when some run (this process's or another's) holds the lock now."""
        if self.acquire():
            self.release()
            return False
        return True


class RedisLease:
    """A Redis key with a TTL, renewed while held (see the module docstring)."""

    def __init__(self, client, key: str, ttl_s: float):
        if ttl_s <= 0:
            raise ValueError("a lease needs a positive time to live")
        self.client = client
        self.key = key
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.token = uuid.uuid4().hex
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, on_lost: Callable[[], None] | None = None) -> bool:
        if not self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew, args=(on_lost,), name=f"lease-{self.key[-12:]}",
                                        daemon=True)
        self._thread.start()
        return True

    def _renew(self, on_lost: Callable[[], None] | None) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                kept = self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms)
            except Exception as error:  # noqa: BLE001 - Redis away: the lease may expire; try again next beat
                log.warning("cannot renew the lease %s: %s", self.key, error)
                continue
            if not kept:
                log.error("lost the lease %s (expired and taken over); stopping this run", self.key)
                self.lost = True
                if on_lost is not None:
                    on_lost()
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except Exception as error:  # noqa: BLE001 - it expires by itself
            log.warning("cannot release the lease %s (it expires by itself): %s", self.key, error)

    def held_elsewhere(self) -> bool:
        """True when some run (this process's or another replica's) holds the lease now."""
        return bool(self.client.exists(self.key))
