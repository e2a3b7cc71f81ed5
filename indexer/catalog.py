"""The catalog: named collections under one data folder, each a ``GaussianIndex``.

Layout of ``data_dir``::

    <name>/collection.json   what the collection is (modality, dim, model id and family, whether it holds
                             a deterministic model's points, index spec, uuid, store)
    <name>/store.sqlite      the item store (SQLite; absent when the collection lives in Redis)
    <name>/snapshot/         the FAISS snapshot (see ``indexer.snapshot``)
    <name>/LOCK              flock'ed by the one process that has the collection open

Creating and dropping are crash-safe: a collection is assembled in ``.creating-<uuid>`` and
renamed into place (atomic), and a drop first renames it to ``.dropping-<uuid>``; the catalog
finishes or discards such leftovers when it opens.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import validation
from .config import NAME_PATTERN, IndexSpec
from .errors import (
    CollectionBusyError,
    CollectionExistsError,
    CorruptIndexError,
    InvalidInputError,
    StoreError,
    UnknownCollectionError,
)
from .gaussian_index import GaussianIndex
from .persistence import fsync_dir, read_checked_json, write_checked_json
from .stores.base import ItemStore
from .stores.sqlite import SqliteStore
from .types import CollectionInfo

log = logging.getLogger(__name__)

COLLECTION_FILE = "collection.json"
STORE_FILE = "store.sqlite"
LOCK_FILE = "LOCK"
_CREATING = ".creating-"
_DROPPING = ".dropping-"


class _CollectionLock:
    """An exclusive flock on ``<collection>/LOCK``; the OS releases it if the process dies."""

    def __init__(self, folder: Path, name: str) -> None:
        try:
            self._fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # e.g. a folder where the lock file should be
            raise StoreError(f"collection {name!r} cannot be locked: {folder / LOCK_FILE}: "
                             f"{error.strerror or error}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise CollectionBusyError(f"collection {name!r} is open in another process (or another Catalog)") from None

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


class Catalog:
    """Many named collections under ``data_dir``; metadata in SQLite, or in Redis with ``redis_url``.

    Thread-safe. ``get`` returns the same open ``GaussianIndex`` object until it is dropped or the
    catalog closes.
    """

    def __init__(self, data_dir: str | Path, redis_url: str | None = None, *, auto_snapshot: bool = True,
                 redis_prefix: str = "prolip", redis_require_fsync: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._auto_snapshot = auto_snapshot
        self._lock = threading.RLock()
        self._open: dict[str, tuple[GaussianIndex, _CollectionLock]] = {}
        self._closed = False
        if not all(c.isalnum() or c in "_-.:" for c in redis_prefix) or not redis_prefix:
            raise InvalidInputError(f"redis_prefix must be letters, digits and _-.: only, not {redis_prefix!r}")
        self._redis_prefix = redis_prefix
        self._redis = None
        if redis_url is not None:
            import redis

            from .stores.redis import check_durability

            self._redis = redis.Redis.from_url(redis_url)
            try:
                self._redis.ping()
            except redis.exceptions.RedisError as error:
                raise StoreError(f"cannot reach Redis at {redis_url}: {error}") from error
            check_durability(self._redis, redis_require_fsync)
        self._finish_interrupted()

    # ------------------------------------------------------------------ helpers
    def _folder(self, name: str) -> Path:
        return self.data_dir / validation.collection_name(name)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the catalog is closed")

    def _read_info(self, name: str, folder: Path | None = None) -> CollectionInfo:
        folder = folder or self._folder(name)
        path = folder / COLLECTION_FILE
        if not path.is_file():
            if holds_collection_data(folder):
                raise CorruptIndexError(f"collection {name!r} is damaged: {path} is missing; `prolip-retrieval "
                                        f"collections rebuild {name}` restores it from the item store")
            raise UnknownCollectionError(f"no collection named {name!r} in {self.data_dir}")
        try:
            return read_info(folder)
        except CorruptIndexError as error:
            raise CorruptIndexError(f"collection {name!r} is damaged: {error}; `prolip-retrieval collections "
                                    f"rebuild {name}` restores it from the item store") from error

    def _open_store(self, info: CollectionInfo, folder: Path) -> ItemStore:
        if info.store == "sqlite":
            return SqliteStore(folder / STORE_FILE, info.dim)
        if self._redis is None:
            raise StoreError(f"collection {info.name!r} keeps its metadata in Redis; open the catalog with redis_url")
        from .stores.redis import RedisStore

        return RedisStore(self._redis, self._redis_prefix, info.uuid, info.dim)

    def _destroy_store_of(self, folder: Path) -> None:
        """Delete a collection's Redis keys (SQLite data goes with its folder)."""
        try:
            document = read_checked_json(folder / COLLECTION_FILE)
        except CorruptIndexError:
            return
        if document.get("store") == "redis" and self._redis is not None:
            from .stores.redis import RedisStore

            try:
                RedisStore(self._redis, self._redis_prefix, document["uuid"], int(document["dim"])).destroy()
            except CorruptIndexError:
                pass  # nothing left in Redis

    def _finish_interrupted(self) -> None:
        for folder in self.data_dir.iterdir():
            if folder.name.startswith((_CREATING, _DROPPING)) and folder.is_dir():
                log.info("removing %s, left by an interrupted create/drop", folder)
                self._destroy_store_of(folder)
                shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ public API
    def create(self, name: str, modality: str, dim: int, model_id: str,
               spec: IndexSpec | dict[str, Any] | None = None, *, model_family: str | None = None,
               deterministic: bool = False) -> GaussianIndex:
        """Create an empty collection and return it open. CollectionExistsError if the name is taken.

        ``model_family`` (prolip, pcmepp, clip) is recorded for listings; ``deterministic`` makes it a
        collection of points (a deterministic model's embeddings: no logvar, S = 0; see the package
        docstring). Both are fixed for the collection's life.
        """
        asked = validation.new_collection(name, modality, dim, model_id, spec, model_family, deterministic)
        name, modality, dim, spec = asked.name, asked.modality, asked.dim, asked.spec
        with self._lock:
            self._check_open()
            target = self._folder(name)
            if target.exists():
                raise CollectionExistsError(f"collection {name!r} already exists")
            collection_uuid = uuid.uuid4().hex
            staging = self.data_dir / f"{_CREATING}{collection_uuid}"
            staging.mkdir()
            try:
                store_kind = "redis" if self._redis is not None else "sqlite"
                description = {
                    "name": name, "uuid": collection_uuid, "modality": modality, "dim": dim, "model_id": model_id,
                    "model_family": model_family, "deterministic": deterministic,
                    "spec": spec.to_dict(), "store": store_kind,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                write_checked_json(staging / COLLECTION_FILE, description)
                if store_kind == "redis":
                    from .stores.redis import RedisStore

                    RedisStore.create(self._redis, self._redis_prefix, collection_uuid, dim, description)
                else:
                    SqliteStore.create(staging / STORE_FILE, dim, collection_uuid, description).close()
                (staging / "snapshot").mkdir()
                fsync_dir(staging)
                os.rename(staging, target)
                fsync_dir(self.data_dir)
            except BaseException:
                self._destroy_store_of(staging)
                shutil.rmtree(staging, ignore_errors=True)
                raise
            log.info("created collection %r (%s, dim %d, %s model %s%s, %s store)", name, modality, dim,
                     model_family or "unknown", model_id, ", deterministic" if deterministic else "", store_kind)
            return self._get(name, rebuild=False)

    def get(self, name: str) -> GaussianIndex:
        """The open collection ``name`` (opened on first use). UnknownCollectionError if there is none."""
        return self._get(validation.collection_name(name), rebuild=False)

    def _get(self, name: str, rebuild: bool) -> GaussianIndex:
        with self._lock:
            self._check_open()
            if name in self._open:
                return self._open[name][0]
            folder = self._folder(name)
            info = self._read_info(name, folder)
            lock = _CollectionLock(folder, name)
            store = None
            try:
                store = self._open_store(info, folder)
                if store.collection_uuid() != info.uuid:
                    raise CorruptIndexError(f"collection {name!r}: the store belongs to another collection")
                index = GaussianIndex(info, folder, store, auto_snapshot=self._auto_snapshot, rebuild=rebuild)
            except BaseException:
                if store is not None:
                    store.close()
                lock.release()
                raise
            self._open[name] = (index, lock)
            return index

    def rebuild(self, name: str, *, modality: str | None = None, model_id: str | None = None) -> GaussianIndex:
        """Discard the FAISS snapshot and rebuild it from the item store (after a CorruptIndexError).

        A missing or damaged ``collection.json`` is restored first from the description the store
        keeps; stores made before they kept one need ``modality`` and ``model_id`` said again.
        """
        name = validation.collection_name(name)
        with self._lock:
            self._check_open()
            self._close_one(name, snapshot=False)
            folder = self._folder(name)
            try:
                self._read_info(name, folder)
            except CorruptIndexError as error:
                log.warning("%s", error)
                self._restore_description(name, folder, modality, model_id)
            index = self._get(name, rebuild=True)
        index.snapshot(rebuild=True)
        return index

    def _restore_description(self, name: str, folder: Path, modality: str | None, model_id: str | None) -> None:
        """Write ``collection.json`` again from what the item store knows about its collection."""
        document: dict[str, Any] | None = None
        if (folder / STORE_FILE).is_file():
            from .stores.sqlite import DESCRIPTION_KEY, read_meta

            meta = read_meta(folder / STORE_FILE)
            document = json.loads(meta[DESCRIPTION_KEY]) if DESCRIPTION_KEY in meta else {
                "uuid": meta["uuid"], "dim": int(meta["dim"]), "store": "sqlite"}
        elif self._redis is not None:
            from .stores.redis import find_description

            document = find_description(self._redis, self._redis_prefix, name)
        if document is None:
            raise CorruptIndexError(f"collection {name!r}: no item store to restore it from (no {STORE_FILE}; its "
                                    "metadata may live in Redis: open the catalog with the Redis URL)")
        document = {**document, "name": name}
        if modality is not None:
            document["modality"] = validation.modality(modality)
        if model_id is not None:
            document["model_id"] = model_id
        missing = [key for key in ("modality", "model_id") if key not in document]
        if missing:
            raise InvalidInputError(f"collection {name!r}: its store predates stored descriptions; say its "
                                    f"{' and '.join(missing)} again (`collections rebuild {name} --modality image "
                                    "--model-id MODEL`)")
        document.setdefault("spec", IndexSpec().to_dict())
        document.setdefault("created_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        _info_from(document, folder / COLLECTION_FILE)  # complete before anything is written
        write_checked_json(folder / COLLECTION_FILE, document)
        fsync_dir(folder)
        log.info("restored %s from the item store of %r", COLLECTION_FILE, name)

    def broken(self) -> dict[str, str]:
        """Folders holding a collection's data that cannot be described: name -> why (see ``rebuild``)."""
        found = {}
        with self._lock:
            self._check_open()
            for folder in sorted(self.data_dir.iterdir()):
                if folder.name.startswith(".") or not NAME_PATTERN.fullmatch(folder.name):
                    continue
                if not holds_collection_data(folder):
                    continue
                try:
                    self._read_info(folder.name, folder)
                except (CorruptIndexError, UnknownCollectionError) as error:
                    found[folder.name] = str(error)
        return found

    def list(self) -> list[CollectionInfo]:
        """Every collection, sorted by name, with its live size."""
        with self._lock:
            self._check_open()
            open_sizes = {name: len(index) for name, (index, _) in self._open.items()}
            return list_collections(self.data_dir, self._redis, self._redis_prefix, open_sizes)

    def drop(self, name: str) -> None:
        """Delete a collection and all its data. UnknownCollectionError if there is none."""
        name = validation.collection_name(name)
        with self._lock:
            self._check_open()
            folder = self._folder(name)
            try:
                tomb_id = self._read_info(name, folder).uuid
            except CorruptIndexError:  # a damaged collection can be dropped too
                tomb_id = uuid.uuid4().hex
            if name in self._open:
                index, lock = self._open.pop(name)
                index.close(snapshot=False, dropped=True)
            else:
                lock = _CollectionLock(folder, name)  # refuses if another process has it open
            tomb = self.data_dir / f"{_DROPPING}{tomb_id}"
            os.rename(folder, tomb)
            fsync_dir(self.data_dir)
            lock.release()
            self._destroy_store_of(tomb)
            shutil.rmtree(tomb, ignore_errors=True)
            log.info("dropped collection %r", name)

    def unload(self, name: str, snapshot: bool = True) -> None:
        """Close one open collection and release its lock (a later ``get`` reopens it)."""
        name = validation.collection_name(name)
        with self._lock:
            self._close_one(name, snapshot=snapshot)

    def __contains__(self, name: object) -> bool:
        return (isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None
                and (self.data_dir / name / COLLECTION_FILE).is_file())

    def _close_one(self, name: str, snapshot: bool) -> None:
        if name in self._open:
            index, lock = self._open.pop(name)
            try:
                index.close(snapshot=snapshot)
            finally:
                lock.release()

    def close(self) -> None:
        """Close every open collection (snapshotting pending writes) and the Redis connection."""
        with self._lock:
            if self._closed:
                return
            for name in list(self._open):
                self._close_one(name, snapshot=True)
            self._closed = True
            if self._redis is not None:
                self._redis.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _with_size(info: CollectionInfo, size: int | None) -> CollectionInfo:
    return replace(info, size=size)


def holds_collection_data(folder: Path) -> bool:
    """Whether a folder holds (or held) a collection: its description, item store or snapshot."""
    return folder.is_dir() and any((folder / name).exists() for name in (COLLECTION_FILE, STORE_FILE, "snapshot"))


def _info_from(document: Any, path: Path) -> CollectionInfo:
    try:
        return CollectionInfo(name=document["name"], modality=document["modality"], dim=int(document["dim"]),
                              model_id=document["model_id"], spec=IndexSpec.from_dict(document["spec"]),
                              uuid=document["uuid"], created_at=document["created_at"], store=document["store"],
                              model_family=document.get("model_family"),  # absent: made before families
                              deterministic=bool(document.get("deterministic", False)))
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptIndexError(f"{path} is incomplete: {error}") from error


def read_info(folder: Path) -> CollectionInfo:
    """What ``<folder>/collection.json`` says; CorruptIndexError when it is damaged or incomplete."""
    path = folder / COLLECTION_FILE
    return _info_from(read_checked_json(path), path)


def list_collections(data_dir: str | Path, redis_client: Any = None, redis_prefix: str = "prolip",
                     open_sizes: dict[str, int] | None = None) -> list[CollectionInfo]:
    """The collections under ``data_dir`` with their live sizes, read-only: nothing is created,
    locked or cleaned up, so it is safe beside a running service (``prolip-retrieval doctor``).

    Sizes of Redis-backed collections need ``redis_client``; without it they are None. Folders whose
    description is damaged are left out (``Catalog.broken`` reports them).
    """
    data_dir = Path(data_dir)
    infos = []
    for folder in sorted(data_dir.iterdir()) if data_dir.is_dir() else []:
        if folder.name.startswith(".") or not (folder / COLLECTION_FILE).is_file():
            continue
        try:
            info = read_info(folder)
        except CorruptIndexError as error:
            log.warning("skipping %s: %s", folder, error)
            continue
        size = (open_sizes or {}).get(info.name)
        if size is None:
            size = _stored_size(info, folder, redis_client, redis_prefix)
        infos.append(_with_size(info, size))
    return infos


def _stored_size(info: CollectionInfo, folder: Path, redis_client: Any, redis_prefix: str) -> int | None:
    try:
        if info.store == "sqlite":
            from .stores.sqlite import read_meta  # read-only, and refuses a damaged file without writing to it

            return int(read_meta(folder / STORE_FILE)["live_count"])
        if redis_client is not None:
            value = redis_client.hget(f"{redis_prefix}:{info.uuid}:meta", "live_count")
            return int(value) if value is not None else None
    except Exception as error:  # listing must not fail because one store is unreadable
        log.warning("cannot count items of %r: %s", info.name, error)
    return None


def open_catalog(data_dir: str | Path, *, redis_url: str | None = None, milvus_uri: str | None = None,
                 **options: Any) -> Any:
    """The deployment's catalog: Milvus when ``milvus_uri`` is given, else the embedded FAISS one.

    Both keep the same contract (``create/get/list/drop/rebuild/unload/close`` and collections
    with ``add/delete/get/search/stats/...``); callers never ask which they have. ``options``
    go to the chosen class (``auto_snapshot``, ``redis_prefix``, ``redis_require_fsync`` for
    ``Catalog``; ``token``, ``prefix``, ``consistency``, ``index_type`` for ``MilvusCatalog``).
    """
    if milvus_uri:
        from .milvus import MilvusCatalog

        return MilvusCatalog(milvus_uri, **options)
    return Catalog(data_dir, redis_url=redis_url, **options)
