"""The metadata store contract: the durable source of truth for a collection's items.

A store keeps one row per external id: (id, seq, deleted, mean, logvar, uncertainty,
metadata, crc). ``write`` applies one call's upserts and deletes in a single transaction and
returns only once it is durable; every row it touches gets a fresh, strictly increasing
sequence number, so "everything after snapshot seq S" is one range query. Deletes leave a
tombstone (deleted=1, no vectors) until a snapshot that reflects them lets ``purge_tombstones``
drop it. Each row carries a CRC32 over its content so bit rot in the store is caught on read.
A deterministic collection's rows hold an empty logvar (a point: S = 0).
"""

from __future__ import annotations

import json
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CorruptIndexError

STORE_FORMAT = 1
ROW_BATCH = 2048  # rows per page when streaming rows out of a store


@dataclass(frozen=True)
class Upserts:
    """One call's new or replaced items, already validated."""

    ids: list[str]
    mean: np.ndarray  # [N, D] float32, unit rows
    logvar: np.ndarray | None  # [N, D] float32; None for a deterministic collection's points
    uncertainty: np.ndarray  # [N] float64, sum of variances (0 for points)
    metadata: list[str]  # canonical JSON text per item

    @classmethod
    def empty(cls, dim: int) -> Upserts:
        return cls([], np.zeros((0, dim), np.float32), np.zeros((0, dim), np.float32), np.zeros(0), [])

    def logvar_bytes(self, i: int) -> bytes:
        """Row i's logvar as stored: float32 bytes, or empty for a point (a deterministic model's)."""
        return b"" if self.logvar is None else self.logvar[i].tobytes()


@dataclass(frozen=True)
class StoredRow:
    id: str
    seq: int
    deleted: bool
    mean: np.ndarray | None  # [D] float32; None for tombstones
    logvar: np.ndarray | None  # [D] float32; None for tombstones and for points (deterministic collections)
    uncertainty: float | None
    metadata: str | None  # JSON text


@dataclass(frozen=True)
class WriteResult:
    last_seq: int  # the store's sequence number after this write
    deleted: list[str]  # the ids that were live and are now tombstones


def row_crc(item_id: str, deleted: bool, mean: bytes | None, logvar: bytes | None, metadata: str | None) -> int:
    """CRC32 over everything a row says, so a flipped bit anywhere in it is detected on read."""
    crc = zlib.crc32(item_id.encode("utf-8"))
    crc = zlib.crc32(b"\x01" if deleted else b"\x00", crc)
    for part in (mean, logvar, metadata.encode("utf-8") if metadata is not None else None):
        crc = zlib.crc32(b"\xff" if part is None else len(part).to_bytes(8, "little") + part, crc)
    return crc


def decode_row(item_id: str, seq: int, deleted: bool, mean: bytes | None, logvar: bytes | None,
               uncertainty: float | None, metadata: str | None, crc: int, dim: int, where: str) -> StoredRow:
    """Build a StoredRow from raw store fields, verifying its CRC and vector sizes."""
    if row_crc(item_id, deleted, mean, logvar, metadata) != crc:
        raise CorruptIndexError(f"{where}: row {item_id!r} fails its checksum (the store is damaged; restore it "
                                "from a backup)")
    if deleted:
        return StoredRow(item_id, seq, True, None, None, None, None)
    if mean is None or logvar is None or len(mean) != 4 * dim or len(logvar) not in (0, 4 * dim):
        raise CorruptIndexError(f"{where}: row {item_id!r} has vectors of the wrong size")
    point = len(logvar) == 0  # a deterministic model's embedding: no variances
    return StoredRow(item_id, seq, False, np.frombuffer(mean, np.float32),
                     None if point else np.frombuffer(logvar, np.float32), float(uncertainty), metadata)


def parse_metadata(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


class ItemStore(ABC):
    """Durable rows of one collection. Thread-safe; writes are serialised by the caller's lock."""

    kind: str  # "sqlite" or "redis"

    @abstractmethod
    def write(self, upserts: Upserts, deletes: list[str]) -> WriteResult:
        """Apply upserts and deletes (ids not live are ignored) in one durable transaction."""

    @abstractmethod
    def rows_since(self, seq: int) -> Iterator[list[StoredRow]]:
        """Every row (tombstones included) with sequence number > ``seq``, in sequence order, in pages."""

    @abstractmethod
    def live_rows(self) -> Iterator[list[StoredRow]]:
        """Every live row, in sequence order, in pages (used to rebuild an index from the store)."""

    @abstractmethod
    def rows(self, ids: list[str]) -> dict[str, StoredRow]:
        """Full live rows for the given ids (missing or deleted ids are absent from the result)."""

    @abstractmethod
    def metadata(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Metadata of live ids (missing ids are absent)."""

    @abstractmethod
    def last_seq(self) -> int:
        """The highest sequence number ever handed out (0 for a new store)."""

    @abstractmethod
    def live_count(self) -> int:
        """Number of live (not deleted) rows."""

    @abstractmethod
    def purge_tombstones(self, upto_seq: int) -> int:
        """Drop tombstones with seq <= ``upto_seq`` (a committed snapshot reflects them); returns how many."""

    @abstractmethod
    def collection_uuid(self) -> str:
        """The uuid written at creation; snapshots record it so one never meets a foreign store."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. The data stays."""

    @abstractmethod
    def destroy(self) -> None:
        """Delete all of this collection's data from the store."""
