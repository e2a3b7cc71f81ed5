"""Redis item store, used when the catalog is given a ``redis_url``.

Keys of a collection live under ``<prefix>:<collection uuid>:`` so two catalogs sharing one
Redis never collide and a crashed ``create`` leaves nothing a later one can pick up:

- ``meta``       hash: format, uuid, dim, last_seq, live_count
- ``i:<id>``     hash: seq, deleted, mean, logvar, unc, meta, crc (one row per id)
- ``seq``        sorted set id -> seq, for "rows after seq S" range reads
- ``dead``       set of tombstoned ids, so purging them needs no full scan

A write is one MULTI/EXEC transaction (WATCHing ``meta`` so a second writer is detected, not
merged). Durability is Redis's: the store refuses to open unless the server runs with
``appendonly yes`` and ``appendfsync always`` (Redis then fsyncs the AOF before it replies),
unless ``require_fsync=False`` is given.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis

from ..errors import CorruptIndexError, StoreError
from .base import (
    ROW_BATCH,
    STORE_FORMAT,
    ItemStore,
    StoredRow,
    Upserts,
    WriteResult,
    decode_row,
    parse_metadata,
    row_crc,
)

log = logging.getLogger(__name__)

_ROW_FIELDS = ("seq", "deleted", "mean", "logvar", "unc", "meta", "crc")
T = TypeVar("T")


def _redis_failures_are_store_errors(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(self: RedisStore, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise StoreError(f"Redis at {self.where} is unreachable: {error}") from error

    return wrapper


DESCRIPTION_FIELD = "collection"


def find_description(client: redis.Redis, prefix: str, name: str) -> dict | None:
    """The description a Redis store keeps of collection ``name`` (None when no store has one)."""
    for key in client.scan_iter(match=f"{prefix}:*:meta", count=1000):
        text = client.hget(key, DESCRIPTION_FIELD)
        if text:
            try:
                document = json.loads(text)
            except ValueError:
                continue
            if isinstance(document, dict) and document.get("name") == name:
                return document
    return None


def check_durability(client: redis.Redis, require_fsync: bool) -> None:
    """Refuse a Redis that would acknowledge writes it could lose on a crash."""
    try:
        config = client.config_get("append*")
    except redis.exceptions.ResponseError as error:  # CONFIG disabled (managed Redis): cannot tell
        log.warning("cannot read Redis persistence settings (%s); durability is the server's business", error)
        return
    appendonly = config.get(b"appendonly", config.get("appendonly"))
    appendfsync = config.get(b"appendfsync", config.get("appendfsync"))
    as_text = [v.decode() if isinstance(v, bytes) else v for v in (appendonly, appendfsync)]
    if as_text != ["yes", "always"]:
        message = (f"Redis runs with appendonly={as_text[0]} appendfsync={as_text[1]}: acknowledged writes could be "
                   "lost on a crash. Run it with `--appendonly yes --appendfsync always` (redis.conf: appendonly "
                   "yes, appendfsync always)")
        if require_fsync:
            raise StoreError(message + ", or set PROLIP_REDIS_REQUIRE_FSYNC=false to accept the risk")
        log.warning(message)


class RedisStore(ItemStore):
    kind = "redis"

    def __init__(self, client: redis.Redis, prefix: str, collection_uuid: str, dim: int) -> None:
        """Open an existing collection's keys (see ``create`` for new ones)."""
        self._client = client
        self.dim = dim
        self._uuid = collection_uuid
        self._prefix = f"{prefix}:{collection_uuid}:"
        self.where = f"{client.connection_pool.connection_kwargs.get('host', '?')}:" \
                     f"{client.connection_pool.connection_kwargs.get('port', '?')}/{self._prefix}"
        self._meta_key = self._prefix + "meta"
        self._seq_key = self._prefix + "seq"
        self._dead_key = self._prefix + "dead"
        self._check_meta()

    @classmethod
    def create(cls, client: redis.Redis, prefix: str, collection_uuid: str, dim: int,
               description: dict | None = None) -> RedisStore:
        """A new store; ``description`` (the collection's document) is kept in its meta hash too."""
        key = f"{prefix}:{collection_uuid}:meta"
        fields = {"format": STORE_FORMAT, "uuid": collection_uuid, "dim": dim, "last_seq": 0, "live_count": 0}
        if description is not None:
            fields[DESCRIPTION_FIELD] = json.dumps(description, sort_keys=True)
        client.hset(key, mapping=fields)
        return cls(client, prefix, collection_uuid, dim)

    def _item_key(self, item_id: str) -> str:
        return self._prefix + "i:" + item_id

    @_redis_failures_are_store_errors
    def _check_meta(self) -> None:
        meta = self._client.hgetall(self._meta_key)
        if not meta:
            raise CorruptIndexError(f"Redis has no data for this collection at {self.where} (was it flushed, or "
                                    "is this the wrong Redis?)")
        if meta.get(b"format") != str(STORE_FORMAT).encode() or meta.get(b"uuid") != self._uuid.encode():
            raise CorruptIndexError(f"{self.where}: unexpected store format or uuid")
        if int(meta.get(b"dim", b"-1")) != self.dim:
            raise CorruptIndexError(f"{self.where}: store dimension {meta.get(b'dim')} != {self.dim}")

    def _flags(self, ids: list[str]) -> list[bytes | None]:
        """The 'deleted' field of each id's row: None (absent), b'0' (live) or b'1' (tombstone)."""
        pipe = self._client.pipeline(transaction=False)
        for item_id in ids:
            pipe.hget(self._item_key(item_id), "deleted")
        return pipe.execute()

    @_redis_failures_are_store_errors
    def write(self, upserts: Upserts, deletes: list[str]) -> WriteResult:
        with self._client.pipeline(transaction=True) as pipe:
            pipe.watch(self._meta_key)
            seq = int(pipe.hget(self._meta_key, "last_seq"))
            live_count = int(pipe.hget(self._meta_key, "live_count"))
            upsert_flags = self._flags(upserts.ids)
            delete_flags = self._flags(deletes)
            pipe.multi()
            for i, item_id in enumerate(upserts.ids):
                seq += 1
                mean, logvar, text = upserts.mean[i].tobytes(), upserts.logvar_bytes(i), upserts.metadata[i]
                pipe.hset(self._item_key(item_id), mapping={
                    "seq": seq, "deleted": 0, "mean": mean, "logvar": logvar,
                    "unc": repr(float(upserts.uncertainty[i])), "meta": text,
                    "crc": row_crc(item_id, False, mean, logvar, text)})
                pipe.zadd(self._seq_key, {item_id: seq})
                if upsert_flags[i] == b"1":
                    pipe.srem(self._dead_key, item_id)
            live_count += sum(flag != b"0" for flag in upsert_flags)
            doomed = [item_id for item_id, flag in zip(deletes, delete_flags, strict=True) if flag == b"0"]
            for item_id in doomed:
                seq += 1
                key = self._item_key(item_id)
                pipe.hdel(key, "mean", "logvar", "unc", "meta")
                pipe.hset(key, mapping={"seq": seq, "deleted": 1, "crc": row_crc(item_id, True, None, None, None)})
                pipe.zadd(self._seq_key, {item_id: seq})
                pipe.sadd(self._dead_key, item_id)
            live_count -= len(doomed)
            pipe.hset(self._meta_key, mapping={"last_seq": seq, "live_count": live_count})
            try:
                pipe.execute()
            except redis.exceptions.WatchError:
                raise StoreError(f"another writer changed {self.where} during this write; one process must own a "
                                 "collection") from None
        return WriteResult(seq, doomed)

    def _fetch(self, ids: list[str]) -> list[list[Any]]:
        pipe = self._client.pipeline(transaction=False)
        for item_id in ids:
            pipe.hmget(self._item_key(item_id), _ROW_FIELDS)
        return pipe.execute()

    def _decode(self, item_id: str, fields: list[Any]) -> StoredRow:
        seq, deleted, mean, logvar, unc, text, crc = fields
        if seq is None or deleted is None or crc is None:
            raise CorruptIndexError(f"{self.where}: row {item_id!r} is missing or incomplete")
        return decode_row(item_id, int(seq), deleted == b"1", mean, logvar, float(unc) if unc is not None else None,
                          text.decode("utf-8") if text is not None else None, int(crc), self.dim, self.where)

    @_redis_failures_are_store_errors
    def rows_since(self, seq: int) -> Iterator[list[StoredRow]]:
        after = seq
        while True:
            page = self._client.zrangebyscore(self._seq_key, f"({after}", "+inf", start=0, num=ROW_BATCH,
                                              withscores=True)
            if not page:
                return
            ids = [member.decode("utf-8") for member, _ in page]
            yield [self._decode(i, f) for i, f in zip(ids, self._fetch(ids), strict=True)]
            after = int(page[-1][1])

    def live_rows(self) -> Iterator[list[StoredRow]]:
        for page in self.rows_since(0):
            live = [row for row in page if not row.deleted]
            if live:
                yield live

    @_redis_failures_are_store_errors
    def rows(self, ids: list[str]) -> dict[str, StoredRow]:
        found = {}
        for item_id, fields in zip(ids, self._fetch(ids), strict=True):
            if fields[0] is not None and fields[1] == b"0":
                found[item_id] = self._decode(item_id, fields)
        return found

    @_redis_failures_are_store_errors
    def metadata(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        pipe = self._client.pipeline(transaction=False)
        for item_id in ids:
            pipe.hmget(self._item_key(item_id), ("deleted", "meta"))
        return {item_id: parse_metadata(text.decode("utf-8") if text else None)
                for item_id, (deleted, text) in zip(ids, pipe.execute(), strict=True) if deleted == b"0"}

    @_redis_failures_are_store_errors
    def last_seq(self) -> int:
        return int(self._client.hget(self._meta_key, "last_seq") or 0)

    @_redis_failures_are_store_errors
    def live_count(self) -> int:
        return int(self._client.hget(self._meta_key, "live_count") or 0)

    def collection_uuid(self) -> str:
        return self._uuid

    @_redis_failures_are_store_errors
    def purge_tombstones(self, upto_seq: int) -> int:
        dead = [member.decode("utf-8") for member in self._client.sscan_iter(self._dead_key, count=1000)]
        purged = 0
        for start in range(0, len(dead), ROW_BATCH):
            chunk = dead[start:start + ROW_BATCH]
            pipe = self._client.pipeline(transaction=False)
            for item_id in chunk:
                pipe.zscore(self._seq_key, item_id)
            scores = pipe.execute()
            pipe = self._client.pipeline(transaction=True)
            for item_id, score in zip(chunk, scores, strict=True):
                if score is not None and score <= upto_seq:
                    pipe.delete(self._item_key(item_id))
                    pipe.zrem(self._seq_key, item_id)
                    pipe.srem(self._dead_key, item_id)
                    purged += 1
            pipe.execute()
        return purged

    def close(self) -> None:
        """Connections belong to the catalog's shared client; nothing to release here."""

    @_redis_failures_are_store_errors
    def destroy(self) -> None:
        batch = []
        for key in self._client.scan_iter(match=self._prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self._client.unlink(*batch)
                batch.clear()
        if batch:
            self._client.unlink(*batch)
