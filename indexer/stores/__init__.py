"""Metadata stores: the durable source of truth for items (SQLite by default, Redis on request)."""

from .base import ItemStore, StoredRow, Upserts, WriteResult
from .sqlite import SqliteStore

__all__ = ["ItemStore", "SqliteStore", "StoredRow", "Upserts", "WriteResult"]
