"""What a collection does with metadata filters: selecting, counting and listing matching items.

``GaussianIndex`` inherits these methods; they work on its table, store, lock and
``MetadataIndex`` (built on the first filtered call, see ``indexer.metadata_index``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from . import filters, search, validation
from .errors import InvalidInputError
from .metadata_index import MetadataIndex
from .ranking import Ranked
from .stores.base import ItemStore, StoredRow, parse_metadata
from .table import VectorTable
from .types import Item

log = logging.getLogger(__name__)


class Filtering:
    """Filter methods of a collection (mixed into ``GaussianIndex``, which provides the attributes below)."""

    name: str
    dim: int
    _table: VectorTable
    _store: ItemStore
    _lock: Any
    _metadata: MetadataIndex
    _metadata_build: threading.Lock

    def _check_usable(self) -> None:  # pragma: no cover - GaussianIndex's
        raise NotImplementedError

    def _await_verified(self) -> None:  # pragma: no cover - GaussianIndex's
        raise NotImplementedError

    def count_matching(self, filter: Any) -> int:
        """How many items match a filter (the JSON form of ``indexer.filters``)."""
        condition = filters.parse(filter)
        with self._lock.read():
            self._check_usable()
            return self._selection(condition).count

    def matching(self, filter: Any, limit: int) -> list[Item]:
        """Every item matching a filter (None: every item), by id; ``InvalidInputError`` when more than ``limit`` do."""
        condition = None if filter is None else filters.parse(filter)
        limit = validation.positive_int(limit, "limit")
        with self._lock.read():
            self._check_usable()
            if condition is None:
                selection = search.Selection.of(self._table.live.copy())
            else:
                selection = self._selection(condition)
            if selection.count > limit:
                raise InvalidInputError(f"the filter matches {selection.count} items of {self.name!r}; at most "
                                        f"{limit} can be taken at once: narrow it")
            ids = sorted(self._table.ids_at(np.flatnonzero(selection.mask)))
            rows = self._store.rows(ids)
        return [_item(rows[i]) for i in ids if i in rows]

    def means(self, ids: list[str]) -> np.ndarray:
        """The stored unit means [len(ids), D] float32 of items, read from memory; NaN rows for absent ids."""
        ids = validation.item_ids(ids, unique=False)
        out = np.full((len(ids), self.dim), np.nan, np.float32)
        self._await_verified()  # the vectors of a snapshot being checked are read only once they pass
        with self._lock.read():
            self._check_usable()
            found = [(row, slot) for row, item_id in enumerate(ids) if (slot := self._table.slot(item_id)) is not None]
            if found:
                rows, slots = (np.asarray(column, np.int64) for column in zip(*found, strict=True))
                out[rows] = self._table.vectors(slots)[:, :self.dim]
        return out

    def _selection(self, condition: filters.Filter) -> search.Selection:
        """The live slots whose metadata matches (call under the read lock)."""
        if not self._metadata.built:
            with self._metadata_build:  # one build; other searches wait for it
                if not self._metadata.built:
                    self._metadata = self._build_metadata_index()
        mask = self._metadata.evaluate(condition, self._table.n_slots)
        return search.Selection.of(mask & self._table.live)

    def _build_metadata_index(self) -> MetadataIndex:
        started = time.perf_counter()
        table = self._table

        def read(slots: list[int]) -> list[dict[str, Any]]:
            ids = table.ids_at(np.asarray(slots, np.int64))
            found = self._store.metadata(ids)
            return [found.get(item_id, {}) for item_id in ids]

        metadata = MetadataIndex()
        metadata.build(table.live_slots(), read)
        log.info("collection %r: indexed the metadata of %d items for filters (%d fields, %.1f MB) in %.2fs",
                 self.name, len(table), metadata.paths, metadata.nbytes() / 1e6, time.perf_counter() - started)
        return metadata



def _item(row: StoredRow) -> Item:
    """As ``GaussianIndex.get`` reads a row (a point from a deterministic collection has no logvar)."""
    if row.logvar is None:
        return Item(row.id, row.mean.copy(), None, None, parse_metadata(row.metadata))
    return Item(row.id, row.mean.copy(), row.logvar.copy(), float(row.uncertainty), parse_metadata(row.metadata))


def in_total_order(ranked: Ranked, ids: list[str], rank: str, k: int) -> list[tuple[int, str]]:
    """(position in ``ranked``, id) of the k best, ordered by score and then id: a total order, so pages agree."""
    keyed = ranked.score if rank == "csd" else -ranked.score
    if len(keyed) <= 1 or bool(np.all(np.diff(keyed) > 0)):  # no ties: the order stands
        return list(enumerate(ids))[:k]
    return sorted(enumerate(ids), key=lambda pair: (keyed[pair[0]], pair[1]))[:k]
