"""Metadata filters on a Milvus collection: pushed down as Milvus boolean expressions.

``MilvusCollection`` inherits these methods (the same ones ``GaussianIndex`` has from
``indexer.filtering``); the filter's JSON form is compiled by ``indexer.filters.to_milvus`` over
the collection's JSON ``metadata`` field.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import filters, validation
from ..errors import InvalidInputError, StoreError
from ..types import Item
from .schema import ID, LOGVAR, METADATA, UNCERTAINTY, VECTOR


class MilvusFiltering:
    """Filter methods of a Milvus collection (mixed into ``MilvusCollection``, which provides the attributes)."""

    name: str
    dim: int

    def count(self, expression: str = "") -> int:  # pragma: no cover - MilvusCollection's
        raise NotImplementedError

    def _query(self, expression: str, fields: list[str], limit: int | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError  # pragma: no cover - MilvusCollection's

    def _rows(self, ids: list[str], fields: list[str]) -> dict[str, dict[str, Any]]:
        raise NotImplementedError  # pragma: no cover - MilvusCollection's

    def _item(self, row: dict[str, Any]) -> Item:
        raise NotImplementedError  # pragma: no cover - MilvusCollection's

    @staticmethod
    def _expression(filter: Any) -> str:
        """The Milvus expression of a filter in the JSON form ('' for none); InvalidInputError when malformed."""
        return "" if filter is None else filters.to_milvus(filters.parse(filter), field=METADATA)

    def _count(self, expression: str) -> int:
        try:
            return self.count(expression)
        except StoreError as error:
            raise self._refused(expression, error) from error

    @staticmethod
    def _refused(expression: str, error: StoreError) -> Exception:
        """A filter Milvus would not evaluate becomes a clear InvalidInputError (else the error stands)."""
        if "not (" in expression and "unsupported expr" in str(error):
            return InvalidInputError("this Milvus (Milvus Lite 2.5 does) cannot evaluate a negated range, prefix "
                                     "or contains, which the filter holds; write the condition without `not`")
        return error

    def count_matching(self, filter: Any) -> int:
        """How many items match a filter (the JSON form of ``indexer.filters``), counted by Milvus."""
        return self._count(self._expression(filters.parse(filter)))

    def matching(self, filter: Any, limit: int) -> list[Item]:
        """Every item matching a filter (None: every item), by id; ``InvalidInputError`` when more than ``limit`` do."""
        expression = "" if filter is None else self._expression(filters.parse(filter))
        limit = validation.positive_int(limit, "limit")
        count = self._count(expression)
        if count > limit:
            raise InvalidInputError(f"the filter matches {count} items of {self.name!r}; at most {limit} can be "
                                    "taken at once: narrow it")
        rows = self._query(expression, [ID, VECTOR, LOGVAR, UNCERTAINTY, METADATA], limit=limit) if count else []
        return sorted((self._item(row) for row in rows), key=lambda item: item.id)

    def means(self, ids: list[str]) -> np.ndarray:
        """The stored unit means [len(ids), D] float32 of items; NaN rows for absent ids."""
        ids = validation.item_ids(ids, unique=False)
        out = np.full((len(ids), self.dim), np.nan, np.float32)
        rows = self._rows(sorted(set(ids)), [VECTOR])
        for i, item_id in enumerate(ids):
            if item_id in rows:
                out[i] = np.asarray(rows[item_id][VECTOR], np.float32)[:self.dim]
        return out
