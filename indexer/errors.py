"""The indexer's error hierarchy: one place, so the service maps each kind to one HTTP status."""

from __future__ import annotations


class IndexerError(Exception):
    """Base class of every error the indexer raises on purpose."""


class InvalidInputError(IndexerError, ValueError):
    """A caller passed something unusable (shape, dtype, NaN, id, name, k...). Nothing was changed."""


class UnknownCollectionError(IndexerError, LookupError):
    """No collection of that name exists in the catalog."""

    def __str__(self) -> str:  # LookupError would quote the message like a dict key
        return str(self.args[0]) if self.args else "unknown collection"


class CollectionExistsError(IndexerError, ValueError):
    """``create`` was asked for a name that is already taken."""


class CorruptIndexError(IndexerError):
    """Persisted state failed verification (checksum, size, manifest, store/snapshot mismatch).

    Raised instead of loading anything that might be wrong. ``Catalog.rebuild`` rebuilds the
    FAISS snapshot from the metadata store, which is the source of truth.
    """


class IndexClosedError(IndexerError, RuntimeError):
    """The index was closed (or dropped) and can no longer be used."""


class CollectionDroppedError(IndexClosedError, UnknownCollectionError):
    """The collection was dropped while a caller still held it: it no longer exists."""


class CollectionBusyError(IndexerError, RuntimeError):
    """Another process holds this collection's lock: one process owns a collection at a time."""


class StoreError(IndexerError, RuntimeError):
    """The metadata store cannot give the durability it must (e.g. Redis without fsync-always AOF)."""


class DiskFullError(StoreError):
    """The disk holding a collection is full: the write or snapshot was refused and nothing changed."""
