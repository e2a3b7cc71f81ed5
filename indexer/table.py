"""The in-memory vector table: one append-only slot per item version, aligned with FAISS labels.

Slot ``s`` holds the augmented vector [mu, -S/2] ([D+1] float32) that FAISS stores under label
``s``, the external id, the uncertainty S (float64) and a live flag. An upsert kills the old slot
and appends a new one; a delete kills the slot. Slots are never reused or moved, so FAISS
labels stay valid without FAISS-side removals (HNSW cannot remove at all); dead slots are
filtered at search time and dropped when a snapshot compacts the table.

Rows loaded from a snapshot sit in a read-only memory map (``base``); rows appended since live
in a growable array (``tail``). Rows are never modified once written, which is what lets a
snapshot read a frozen ``TableView`` without holding a lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

_GROWTH = 1.5
_MIN_CAPACITY = 1024


class _Growable:
    """A 1-D or 2-D array with amortised O(1) appends along axis 0; ``data`` is the filled prefix."""

    def __init__(self, dtype: np.dtype, width: int | None = None) -> None:
        self._shape_tail = () if width is None else (width,)
        self._array = np.empty((0, *self._shape_tail), dtype)
        self.size = 0

    def extend(self, rows: np.ndarray) -> None:
        needed = self.size + len(rows)
        if needed > len(self._array):
            capacity = max(needed, int(len(self._array) * _GROWTH), _MIN_CAPACITY)
            grown = np.empty((capacity, *self._shape_tail), self._array.dtype)
            grown[:self.size] = self._array[:self.size]
            self._array = grown  # readers holding the old array keep a valid (frozen) copy
        self._array[self.size:needed] = rows
        self.size = needed

    @property
    def data(self) -> np.ndarray:
        return self._array[:self.size]


@dataclass(frozen=True)
class TableView:
    """A frozen picture of the table at one moment (for snapshots built without holding a lock)."""

    base: np.ndarray  # [B, D+1] float32
    tail: np.ndarray  # [T, D+1] float32
    ids: list[str]  # [B+T]
    uncertainty: np.ndarray  # [B+T] float64
    live: np.ndarray  # [B+T] bool

    @property
    def n_slots(self) -> int:
        return len(self.ids)

    def chunks(self, slots: np.ndarray, rows: int = 65536) -> Iterator[np.ndarray]:
        """Vectors of ``slots`` in order, ``rows`` at a time (bounded memory for multi-GB tables)."""
        for start in range(0, len(slots), rows):
            yield gather(self.base, self.tail, slots[start:start + rows])


def gather(base: np.ndarray, tail: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Rows ``slots`` (any shape of int64) of base ++ tail, as [..., D+1] float32."""
    flat = np.asarray(slots, dtype=np.int64).ravel()
    out = np.empty((flat.size, base.shape[1]), np.float32)
    in_base = flat < len(base)
    out[in_base] = base[flat[in_base]]
    out[~in_base] = tail[flat[~in_base] - len(base)]
    return out.reshape(*np.shape(slots), base.shape[1])


class VectorTable:
    def __init__(self, dim: int, base: np.ndarray | None = None, ids: list[str] | None = None,
                 uncertainty: np.ndarray | None = None, live: np.ndarray | None = None) -> None:
        """``dim`` is the embedding dimension D; base rows are [D+1] augmented vectors."""
        self.dim = dim
        self._base = base if base is not None else np.zeros((0, dim + 1), np.float32)
        n = len(self._base)
        self._tail = _Growable(np.float32, dim + 1)
        self._ids: list[str] = list(ids) if ids is not None else []
        self._uncertainty = _Growable(np.float64)
        self._uncertainty.extend(uncertainty if uncertainty is not None else np.zeros(0))
        self._live = _Growable(np.bool_)
        self._live.extend(live if live is not None else np.ones(n, bool))
        if not (len(self._ids) == self._uncertainty.size == self._live.size == n):
            raise ValueError("snapshot arrays disagree in length")
        live_flags = self._live.data
        self._slot_of = {self._ids[s]: s for s in np.flatnonzero(live_flags).tolist()}
        if len(self._slot_of) != int(live_flags.sum()):
            raise ValueError("an id is live in more than one slot")
        self._bitmap: np.ndarray | None = None

    # --- reading
    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._slot_of

    @property
    def n_slots(self) -> int:
        return len(self._ids)

    @property
    def n_dead(self) -> int:
        return self.n_slots - len(self._slot_of)

    def slot(self, item_id: str) -> int | None:
        return self._slot_of.get(item_id)

    def ids_at(self, slots: np.ndarray) -> list[str]:
        return [self._ids[s] for s in np.asarray(slots).ravel().tolist()]

    def vectors(self, slots: np.ndarray) -> np.ndarray:
        """Augmented vectors [..., D+1] float32 of ``slots``."""
        return gather(self._base, self._tail.data, slots)

    def uncertainty(self, slots: np.ndarray) -> np.ndarray:
        return self._uncertainty.data[np.asarray(slots, dtype=np.int64)]

    @property
    def live(self) -> np.ndarray:
        """Live flag per slot [n_slots] bool (a view: read it under the index's read lock)."""
        return self._live.data

    def live_bitmap(self) -> np.ndarray:
        """Live flags packed as FAISS's IDSelectorBitmap wants them (bit s of byte s // 8, LSB first)."""
        if self._bitmap is None:
            self._bitmap = np.packbits(self._live.data, bitorder="little")
        return self._bitmap

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self._live.data)

    def live_uncertainty(self) -> np.ndarray:
        return self._uncertainty.data[self._live.data]

    def all_vectors(self) -> np.ndarray:
        """Every slot's vector [n_slots, D+1] (base ++ tail; copies when both are non-empty)."""
        if self._tail.size == 0:
            return self._base
        if len(self._base) == 0:
            return self._tail.data
        return np.concatenate([self._base, self._tail.data])

    def view(self) -> TableView:
        return TableView(self._base, self._tail.data, self._ids[:], self._uncertainty.data.copy(),
                         self._live.data.copy())

    # --- writing (under the index's write lock)
    def append(self, ids: list[str], vectors: np.ndarray, uncertainty: np.ndarray) -> np.ndarray:
        """Add new live slots for ids that are not live; returns their slot numbers."""
        first = self.n_slots
        self._tail.extend(vectors)
        self._uncertainty.extend(uncertainty)
        self._live.extend(np.ones(len(ids), bool))
        self._ids.extend(ids)
        for offset, item_id in enumerate(ids):
            self._slot_of[item_id] = first + offset
        self._bitmap = None
        return np.arange(first, first + len(ids), dtype=np.int64)

    def kill(self, item_ids: list[str]) -> None:
        """Mark the live slots of these ids dead (ids not live are ignored)."""
        slots = [self._slot_of.pop(i) for i in item_ids if i in self._slot_of]
        if slots:
            self._live.data[slots] = False
            self._bitmap = None
