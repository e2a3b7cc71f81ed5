"""SQLite item store: embedded, no server; WAL mode with synchronous=FULL so a commit is durable.

One writer connection (every write is ``BEGIN IMMEDIATE`` ... ``COMMIT``) and one read
connection per thread; WAL lets readers run while a write commits.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..errors import CorruptIndexError, DiskFullError, StoreError
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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    mean BLOB,
    logvar BLOB,
    uncertainty REAL,
    metadata TEXT,
    crc INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS items_by_seq ON items(seq);
"""
_COLUMNS = "id, seq, deleted, mean, logvar, uncertainty, metadata, crc"
_IN_CHUNK = 500  # ids per IN (...) clause, well under SQLite's variable limit

T = TypeVar("T")


def _damage_is_corruption(method: Callable[..., T]) -> Callable[..., T]:
    """Turn SQLite's "malformed"/"not a database" errors into CorruptIndexError."""

    @functools.wraps(method)
    def wrapper(self: SqliteStore, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as error:
            if type(error) is sqlite3.DatabaseError:  # subclasses (Operational, Integrity) are not damage
                raise CorruptIndexError(f"{self.path}: {error}") from error
            raise

    return wrapper


class SqliteStore(ItemStore):
    kind = "sqlite"

    def __init__(self, path: Path, dim: int) -> None:
        """Open an existing store (see ``create`` for a new one)."""
        self.path = Path(path)
        self.dim = dim
        if not self.path.is_file():
            raise CorruptIndexError(f"the item store {self.path} is missing")
        read_meta(self.path)  # a damaged file is refused before anything opens it for writing
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._guard = threading.Lock()  # protects _readers and the writer connection
        self._closed = False
        self._writer = self._connect(read_only=False)
        self._check_meta()

    @classmethod
    def create(cls, path: Path, dim: int, collection_uuid: str, description: dict[str, Any] | None = None
               ) -> SqliteStore:
        """A new store; ``description`` (the collection's document) is kept too, so a lost
        ``collection.json`` can be restored from the store."""
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            connection.execute("BEGIN IMMEDIATE")
            rows = [("format", str(STORE_FORMAT)), ("uuid", collection_uuid), ("dim", str(dim)),
                    ("last_seq", "0"), ("live_count", "0")]
            if description is not None:
                rows.append((DESCRIPTION_KEY, json.dumps(description, sort_keys=True)))
            connection.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", rows)
            connection.execute("COMMIT")
        finally:
            connection.close()
        return cls(path, dim)

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so a returned write survives power loss
            connection.execute("PRAGMA synchronous=FULL")
            if read_only:
                connection.execute("PRAGMA query_only=1")
        except sqlite3.DatabaseError as error:
            raise CorruptIndexError(f"{self.path}: {error}") from error
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            with self._guard:
                if self._closed:
                    raise StoreError(f"the store {self.path} is closed")
                connection = self._connect(read_only=True)
                self._readers.append(connection)
            self._local.connection = connection
        return connection

    @_damage_is_corruption
    def _check_meta(self) -> None:
        meta = dict(self._writer.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != str(STORE_FORMAT):
            raise CorruptIndexError(f"{self.path}: unknown store format {meta.get('format')!r}")
        if int(meta.get("dim", -1)) != self.dim:
            raise CorruptIndexError(f"{self.path}: store dimension {meta.get('dim')} != collection dimension "
                                    f"{self.dim}")

    def _meta(self, connection: sqlite3.Connection, key: str) -> str:
        row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise CorruptIndexError(f"{self.path}: meta key {key!r} is missing")
        return row[0]

    @_damage_is_corruption
    def write(self, upserts: Upserts, deletes: list[str]) -> WriteResult:
        with self._guard:
            connection = self._writer
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = self._write_in_transaction(connection, upserts, deletes)
                connection.execute("COMMIT")
            except sqlite3.OperationalError as error:
                _rollback(connection)
                if error.sqlite_errorcode == sqlite3.SQLITE_FULL:
                    raise DiskFullError(f"{self.path}: the disk is full; the write was refused and nothing "
                                        "changed") from error
                raise
            except BaseException:
                _rollback(connection)
                raise
        return result

    def _live_among(self, connection: sqlite3.Connection, ids: list[str]) -> set[str]:
        live: set[str] = set()
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start:start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            live.update(r[0] for r in connection.execute(
                f"SELECT id FROM items WHERE deleted = 0 AND id IN ({marks})", chunk))
        return live

    def _write_in_transaction(self, connection: sqlite3.Connection, upserts: Upserts,
                              deletes: list[str]) -> WriteResult:
        seq = int(self._meta(connection, "last_seq"))
        live_count = int(self._meta(connection, "live_count"))
        already_live = self._live_among(connection, upserts.ids)
        rows = []
        for i, item_id in enumerate(upserts.ids):
            seq += 1
            mean = upserts.mean[i].tobytes()
            logvar = upserts.logvar_bytes(i)
            text = upserts.metadata[i]
            rows.append((item_id, seq, 0, mean, logvar, float(upserts.uncertainty[i]), text,
                         row_crc(item_id, False, mean, logvar, text)))
        connection.executemany(
            f"INSERT INTO items({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "seq = excluded.seq, deleted = 0, mean = excluded.mean, logvar = excluded.logvar, "
            "uncertainty = excluded.uncertainty, metadata = excluded.metadata, crc = excluded.crc", rows)
        live_count += len(upserts.ids) - len(already_live)
        live_deletes = self._live_among(connection, deletes)
        doomed = [item_id for item_id in deletes if item_id in live_deletes]
        tombstones = []
        for item_id in doomed:
            seq += 1
            tombstones.append((seq, row_crc(item_id, True, None, None, None), item_id))
        connection.executemany("UPDATE items SET seq = ?, deleted = 1, mean = NULL, logvar = NULL, "
                               "uncertainty = NULL, metadata = NULL, crc = ? WHERE id = ?", tombstones)
        live_count -= len(doomed)
        connection.executemany("UPDATE meta SET value = ? WHERE key = ?",
                               [(str(seq), "last_seq"), (str(live_count), "live_count")])
        return WriteResult(seq, doomed)

    def _decode(self, raw: tuple) -> StoredRow:
        item_id, seq, deleted, mean, logvar, unc, text, crc = raw
        return decode_row(item_id, seq, bool(deleted), mean, logvar, unc, text, crc, self.dim, str(self.path))

    def _pages(self, where: str, after: int) -> Iterator[list[StoredRow]]:
        # keyset pagination on seq: each page is its own short read, no long-lived transaction.
        # A connection of its own, closed at the end: these scans run on short-lived threads
        # (background snapshots) whose thread-local connections would otherwise pile up.
        connection = self._connect(read_only=True)
        try:
            while True:
                raw = connection.execute(f"SELECT {_COLUMNS} FROM items WHERE {where} seq > ? ORDER BY seq LIMIT ?",
                                         (after, ROW_BATCH)).fetchall()
                if not raw:
                    return
                yield [self._decode(r) for r in raw]
                after = raw[-1][1]
        finally:
            connection.close()

    @_damage_is_corruption
    def rows_since(self, seq: int) -> Iterator[list[StoredRow]]:
        yield from self._pages("", seq)

    @_damage_is_corruption
    def live_rows(self) -> Iterator[list[StoredRow]]:
        yield from self._pages("deleted = 0 AND", 0)

    @_damage_is_corruption
    def rows(self, ids: list[str]) -> dict[str, StoredRow]:
        connection = self._reader()
        found: dict[str, StoredRow] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start:start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for raw in connection.execute(f"SELECT {_COLUMNS} FROM items WHERE deleted = 0 AND id IN ({marks})",
                                          chunk):
                row = self._decode(raw)
                found[row.id] = row
        return found

    @_damage_is_corruption
    def metadata(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        connection = self._reader()
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start:start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for item_id, text in connection.execute(
                    f"SELECT id, metadata FROM items WHERE deleted = 0 AND id IN ({marks})", chunk):
                found[item_id] = parse_metadata(text)
        return found

    @_damage_is_corruption
    def last_seq(self) -> int:
        return int(self._meta(self._reader(), "last_seq"))

    @_damage_is_corruption
    def live_count(self) -> int:
        return int(self._meta(self._reader(), "live_count"))

    @_damage_is_corruption
    def collection_uuid(self) -> str:
        return self._meta(self._reader(), "uuid")

    @_damage_is_corruption
    def purge_tombstones(self, upto_seq: int) -> int:
        with self._guard:
            cursor = self._writer.execute("DELETE FROM items WHERE deleted = 1 AND seq <= ?", (upto_seq,))
        return cursor.rowcount

    def close(self) -> None:
        with self._guard:
            if self._closed:
                return
            self._closed = True
            for connection in [*self._readers, self._writer]:
                connection.close()
            self._readers.clear()

    def destroy(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


SQLITE_MAGIC = b"SQLite format 3\x00"
DESCRIPTION_KEY = "collection"


def read_meta(path: Path) -> dict[str, str]:
    """The meta table of a store file, read without writing anything; CorruptIndexError if it is damaged.

    An empty or garbage file is refused from its header. Without a ``-wal`` file next to it (no
    crash to recover) the file is read as immutable, so not even a ``-shm`` file is created.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_MAGIC))
        size = path.stat().st_size
    except OSError as error:
        raise CorruptIndexError(f"the item store {path} cannot be read ({error.strerror or error})") from None
    if header != SQLITE_MAGIC or size < 512:
        raise CorruptIndexError(f"the item store {path} is damaged: not an SQLite database ({size} bytes)")
    options = "mode=ro" if Path(f"{path}-wal").exists() else "mode=ro&immutable=1"
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?{options}", uri=True)
    except sqlite3.Error as error:
        raise CorruptIndexError(f"the item store {path} cannot be opened ({error})") from error
    try:
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as error:
        raise CorruptIndexError(f"the item store {path} is damaged ({error})") from error
    finally:
        connection.close()
    if meta.get("format") != str(STORE_FORMAT) or "uuid" not in meta or "dim" not in meta:
        raise CorruptIndexError(f"the item store {path} is damaged: its meta table is incomplete")
    return meta


def _rollback(connection: sqlite3.Connection) -> None:
    # SQLite rolls back by itself on some errors (SQLITE_FULL among them); a second ROLLBACK would
    # then raise "no transaction is active" and hide the real error
    if connection.in_transaction:
        connection.execute("ROLLBACK")
