"""An in-memory index of items' metadata, slot-aligned with the vector table, for evaluating filters.

Every scalar in an item's metadata, at every field path (nested objects up to
``filters.MAX_PATH`` keys deep), is one entry of that path's column: (slot, kind, number, string
code); scalars inside arrays are entries too, marked as elements (for ``contains``). A filter
condition is a few vectorised comparisons over its path's entries, then a scatter into a boolean
mask over table slots, so a filter costs O(entries of the fields it reads + slots), never a
Python loop over items. Strings are dictionary-coded per path; ranges and prefixes over strings
are a bisection of the dictionary kept in code-point order.

Memory is about 21 bytes per metadata value (plus each distinct string once). A collection
indexes at most ``MAX_INDEXED_PATHS`` distinct field paths; filtering on a path beyond them is
refused with a clear error rather than answered wrongly.

The index is built on the first filtered search of a collection (one read of every live item's
metadata from the store), then kept in step by the writes; a compacting snapshot renumbers it with
the table (``remapped``). Dead slots keep their entries: the caller ANDs the mask with the live flags.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .errors import InvalidInputError
from .filters import MAX_PATH, Bounds, Condition, Filter, Group, prefix_successor
from .table import _Growable

MAX_INDEXED_PATHS = 256
NUMBER, STRING, BOOLEAN = 0, 1, 2  # kinds of a scalar; + ELEMENT for a scalar inside an array
ELEMENT = 3
_KIND_OF = {float: NUMBER, str: STRING, bool: BOOLEAN}


class _Column:
    """The entries of one field path."""

    def __init__(self) -> None:
        self.slots = _Growable(np.int64)
        self.kinds = _Growable(np.int8)
        self.numbers = _Growable(np.float64)  # the number; booleans as 0/1; NaN for strings
        self.codes = _Growable(np.int32)  # the string's code; -1 for numbers and booleans
        self.strings: list[str] = []
        self.code_of: dict[str, int] = {}
        self._order: tuple[int, list[int], np.ndarray] | None = None  # (dictionary size, codes in order, rank of code)

    def extend(self, slots: list[int], kinds: list[int], values: list[Any]) -> None:
        numbers, codes = [], []
        for kind, value in zip(kinds, values, strict=True):
            if kind % ELEMENT == STRING:
                code = self.code_of.get(value)
                if code is None:
                    code = self.code_of[value] = len(self.strings)
                    self.strings.append(value)
                numbers.append(math.nan)
                codes.append(code)
            else:
                numbers.append(float(value))
                codes.append(-1)
        self.slots.extend(np.asarray(slots, np.int64))
        self.kinds.extend(np.asarray(kinds, np.int8))
        self.numbers.extend(np.asarray(numbers, np.float64))
        self.codes.extend(np.asarray(codes, np.int32))

    def nbytes(self) -> int:
        return self.slots.size * 21 + sum(len(s) + 50 for s in self.strings)

    # --- matching: boolean arrays over this column's entries
    def equal(self, value: Any, element: bool) -> np.ndarray:
        kind = _KIND_OF[type(value)] + (ELEMENT if element else 0)
        of_kind = self.kinds.data == kind
        if kind % ELEMENT == STRING:
            code = self.code_of.get(value)
            return of_kind & (self.codes.data == code) if code is not None else np.zeros_like(of_kind)
        return of_kind & (self.numbers.data == float(value))

    def among(self, values: tuple[Any, ...]) -> np.ndarray:
        """Scalar entries equal to one of ``values`` (one kind, as ``in`` requires)."""
        kind = _KIND_OF[type(values[0])]
        of_kind = self.kinds.data == kind
        if kind == STRING:
            codes = [self.code_of[v] for v in values if v in self.code_of]
            return of_kind & np.isin(self.codes.data, np.asarray(codes, np.int32))
        return of_kind & np.isin(self.numbers.data, np.asarray([float(v) for v in values]))

    def within(self, bounds: Bounds) -> np.ndarray:
        if isinstance(bounds.low if bounds.low is not None else bounds.high, str):
            return self._strings_within(bounds.low, bounds.low_inclusive, bounds.high, bounds.high_inclusive)
        numbers = self.numbers.data
        keep = self.kinds.data == NUMBER
        if bounds.low is not None:
            keep &= numbers >= bounds.low if bounds.low_inclusive else numbers > bounds.low
        if bounds.high is not None:
            keep &= numbers <= bounds.high if bounds.high_inclusive else numbers < bounds.high
        return keep

    def starting_with(self, prefix: str) -> np.ndarray:
        return self._strings_within(prefix, True, prefix_successor(prefix), False)

    def _strings_within(self, low: str | None, low_inclusive: bool, high: str | None,
                        high_inclusive: bool) -> np.ndarray:
        """String entries s with low <= s (or <) and s < high (or <=), in code-point order."""
        order, rank = self._sorted()
        key = self.strings.__getitem__
        first = 0 if low is None else (bisect.bisect_left if low_inclusive else bisect.bisect_right)(
            order, low, key=key)
        end = len(order) if high is None else (bisect.bisect_right if high_inclusive else bisect.bisect_left)(
            order, high, key=key)
        codes = self.codes.data
        ranks = rank[np.maximum(codes, 0)] if len(rank) else np.zeros(len(codes), np.int64)
        return (self.kinds.data == STRING) & (ranks >= first) & (ranks < end)

    def _sorted(self) -> tuple[list[int], np.ndarray]:
        """Codes in code-point order of their strings, and each code's position in that order."""
        cached = self._order
        size = len(self.strings)
        if cached is not None and cached[0] == size:
            return cached[1], cached[2]
        known = cached[1] if cached is not None else []
        fresh = sorted(range(len(known), size), key=self.strings.__getitem__)
        # two sorted runs: Timsort merges them in linear time
        order = sorted(known + fresh, key=self.strings.__getitem__)
        rank = np.empty(size, np.int64)
        rank[np.asarray(order, np.int64)] = np.arange(size)
        self._order = (size, order, rank)
        return order, rank

    def remapped(self, old_slots: np.ndarray) -> _Column:
        """Entries whose slot is in ``old_slots`` (sorted), renumbered to their position there."""
        slots = self.slots.data
        position = np.searchsorted(old_slots, slots)
        keep = position < len(old_slots)
        keep[keep] = old_slots[position[keep]] == slots[keep]
        out = _Column()
        out.slots.extend(position[keep])
        out.kinds.extend(self.kinds.data[keep])
        out.numbers.extend(self.numbers.data[keep])
        codes = self.codes.data[keep]
        used = np.unique(codes[codes >= 0])
        out.strings = [self.strings[c] for c in used.tolist()]
        out.code_of = {s: i for i, s in enumerate(out.strings)}
        new_code = np.full(len(self.strings) + 1, -1, np.int32)
        new_code[used] = np.arange(len(used), dtype=np.int32)
        out.codes.extend(new_code[codes])  # -1 indexes the last cell, which stays -1
        return out


class MetadataIndex:
    """Columns of every field path of a collection's metadata (see the module docstring).

    ``built`` is False until ``build`` has read the whole collection; before that, ``add`` is a
    no-op, so an index nobody filters costs nothing. Not thread-safe by itself: the collection
    writes under its write lock, and builds under its read lock with a mutex of its own.
    """

    def __init__(self, max_paths: int = MAX_INDEXED_PATHS) -> None:
        self.max_paths = max_paths
        self.built = False
        self.overflowed = False  # some path was not indexed because max_paths were already taken
        self._columns: dict[tuple[str, ...], _Column] = {}

    def build(self, slots: np.ndarray, read: Callable[[list[int]], Iterable[dict[str, Any]]],
              batch: int = 2048) -> None:
        """Index the metadata of ``slots`` (the live ones), read in batches: ``read(slots) -> one dict per slot``."""
        slot_list = np.asarray(slots, np.int64).tolist()
        for start in range(0, len(slot_list), batch):
            chunk = slot_list[start:start + batch]
            self._add(chunk, read(chunk))
        self.built = True

    def add(self, slots: Iterable[int], docs: Iterable[dict[str, Any] | str | None]) -> None:
        """Index new slots' metadata (dicts or JSON texts); nothing happens until the index is built."""
        if self.built:
            self._add([int(s) for s in slots], [json.loads(d) if isinstance(d, str) else d for d in docs])

    def _add(self, slots: list[int], docs: Iterable[dict[str, Any] | None]) -> None:
        pending: dict[tuple[str, ...], tuple[list[int], list[int], list[Any]]] = {}
        for slot, doc in zip(slots, docs, strict=True):
            if doc:
                _flatten(doc, (), slot, pending)
        for path, (entry_slots, kinds, values) in pending.items():
            column = self._columns.get(path)
            if column is None:
                if len(self._columns) >= self.max_paths:
                    self.overflowed = True
                    continue
                column = self._columns[path] = _Column()
            column.extend(entry_slots, kinds, values)

    def remapped(self, old_slots: np.ndarray) -> MetadataIndex:
        """This index for a compacted table whose slot i was slot ``old_slots[i]`` (sorted) here."""
        out = MetadataIndex(self.max_paths)
        if self.built:
            out.built, out.overflowed = True, self.overflowed
            out._columns = {path: column.remapped(old_slots) for path, column in self._columns.items()}
        return out

    def nbytes(self) -> int:
        return sum(column.nbytes() for column in self._columns.values())

    @property
    def paths(self) -> int:
        return len(self._columns)

    # --- evaluation
    def evaluate(self, filter_: Filter, n_slots: int) -> np.ndarray:
        """Boolean mask [n_slots]: the slots whose metadata satisfies ``filter_`` (dead slots included)."""
        if not self.built:
            raise RuntimeError("the metadata index is not built")
        if isinstance(filter_, Group):
            masks = [self.evaluate(part, n_slots) for part in filter_.parts]
            if filter_.op == "not":
                return ~masks[0]
            reduce = np.logical_and if filter_.op == "and" else np.logical_or
            return reduce.reduce(masks) if len(masks) > 1 else masks[0]
        return self._condition(filter_, n_slots)

    def _condition(self, condition: Condition, n_slots: int) -> np.ndarray:
        op, value = condition.op, condition.value
        if op in ("ne", "not_in"):  # Milvus' != and not in: the complement, absent fields included
            return ~self._condition(Condition(condition.path, "eq" if op == "ne" else "in", value), n_slots)
        mask = np.zeros(n_slots, bool)
        column = self._columns.get(condition.path)
        if column is None:
            if self.overflowed:
                raise InvalidInputError(
                    f"field {'.'.join(condition.path)!r} cannot be filtered: this collection's metadata has more "
                    f"than {self.max_paths} distinct fields and only the first {self.max_paths} are indexed")
            return mask  # no item has it
        if op == "eq":
            matched = column.equal(value, element=False)
        elif op == "in":
            matched = column.among(value)
        elif op == "range":
            matched = column.within(value)
        elif op == "prefix":
            matched = column.starting_with(value)
        elif op == "contains":
            matched = column.equal(value, element=True)
        elif op == "contains_any":
            matched = np.logical_or.reduce([column.equal(v, element=True) for v in value])
        else:
            raise ValueError(f"unknown operator {op!r}")
        slots = column.slots.data[matched]
        mask[slots[slots < n_slots]] = True
        return mask


def _flatten(doc: dict[str, Any], prefix: tuple[str, ...], slot: int,
             pending: dict[tuple[str, ...], tuple[list[int], list[int], list[Any]]]) -> None:
    for key, value in doc.items():
        path = (*prefix, key)
        if isinstance(value, dict):
            if len(path) < MAX_PATH:
                _flatten(value, path, slot, pending)
            continue
        if isinstance(value, list):
            entries = [(kind + ELEMENT, v) for v in value if (kind := _scalar_kind(v)) is not None]
        else:
            kind = _scalar_kind(value)
            entries = [] if kind is None else [(kind, value)]
        if entries:
            slots, kinds, values = pending.setdefault(path, ([], [], []))
            for kind, v in entries:
                slots.append(slot)
                kinds.append(kind)
                values.append(v)


def _scalar_kind(value: Any) -> int | None:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int | float):
        try:
            return NUMBER if math.isfinite(float(value)) else None
        except OverflowError:  # an integer beyond a double's range: no filter can name it
            return None
    if isinstance(value, str):
        return STRING
    return None  # null, and arrays or objects inside arrays
