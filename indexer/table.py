"""The in-memory vector table: one append-only slot per item version, aligned with FAISS labels.

Slot ``s`` holds the augmented vector [mu, -S/2] ([D+1] float32) that FAISS stores under label
``s``, the external id, the uncertainty S (float64) and a live flag. An upsert kills the old slot
and appends a new one; a delete kills the slot. Slots are never reused or moved, so FAISS
labels stay valid without FAISS-side removals (HNSW cannot remove at all); dead slots are
filtered at search time and dropped when a snapshot compacts the table.

Rows loaded from a snapshot sit in a read-only memory map (``base``); rows appended since live
in fixed-size blocks (``tail``) that are allocated once and never copied, so a table that grows
to millions of rows never holds its vectors twice (growing one array by copying would, for a
moment). Rows are never modified once written, which is what lets a snapshot read a frozen
``TableView`` without holding a lock. For flat collections the table is also the index: the
exact scan (``indexer.flat_scan``) reads these blocks, and FAISS keeps no copy on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

_GROWTH = 1.5
_MIN_CAPACITY = 1024
# Rows per tail block: 16384 x 769 float32 = 50 MB at D = 768. A block is reserved whole but
# the kernel backs only the pages written, so a small collection costs what it holds.
BLOCK_ROWS = 16384


class _Growable:
    """A 1-D array with amortised O(1) appends; ``data`` is the filled prefix.

    Used for the per-slot scalars (8 bytes or less a slot), whose copy on growth is small.
    """

    def __init__(self, dtype: np.dtype) -> None:
        self._array = np.empty(0, dtype)
        self.size = 0

    def extend(self, rows: np.ndarray) -> None:
        needed = self.size + len(rows)
        if needed > len(self._array):
            capacity = max(needed, int(len(self._array) * _GROWTH), _MIN_CAPACITY)
            grown = np.empty(capacity, self._array.dtype)
            grown[:self.size] = self._array[:self.size]
            self._array = grown  # readers holding the old array keep a valid (frozen) copy
        self._array[self.size:needed] = rows
        self.size = needed

    @property
    def data(self) -> np.ndarray:
        return self._array[:self.size]


class _Blocks:
    """Rows [D+1] float32 appended into fixed blocks of ``BLOCK_ROWS``; nothing is ever copied or moved."""

    def __init__(self, width: int) -> None:
        self.width = width
        self._blocks: list[np.ndarray] = []
        self.size = 0

    def extend(self, rows: np.ndarray) -> None:
        done = 0
        while done < len(rows):
            offset = self.size % BLOCK_ROWS
            if offset == 0 and self.size // BLOCK_ROWS == len(self._blocks):
                self._blocks.append(np.empty((BLOCK_ROWS, self.width), np.float32))
            take = min(BLOCK_ROWS - offset, len(rows) - done)
            self._blocks[self.size // BLOCK_ROWS][offset:offset + take] = rows[done:done + take]
            done += take
            self.size += take

    def filled(self) -> list[np.ndarray]:
        """The blocks cut to their filled rows (views; rows in them never change)."""
        out = []
        for number, block in enumerate(self._blocks):
            rows = min(BLOCK_ROWS, self.size - number * BLOCK_ROWS)
            if rows > 0:
                out.append(block[:rows])
        return out


@dataclass(frozen=True)
class TableView:
    """A frozen picture of the table at one moment (for snapshots built without holding a lock)."""

    base: np.ndarray  # [B, D+1] float32
    tail: list[np.ndarray]  # blocks of [<= BLOCK_ROWS, D+1] float32, T rows in all
    ids: list[str]  # [B+T]
    uncertainty: np.ndarray  # [B+T] float64
    live: np.ndarray  # [B+T] bool

    @property
    def n_slots(self) -> int:
        return len(self.ids)

    def chunks(self, slots: np.ndarray, rows: int = BLOCK_ROWS) -> Iterator[np.ndarray]:
        """Vectors of ``slots`` in order, ``rows`` at a time (bounded memory for multi-GB tables)."""
        for start in range(0, len(slots), rows):
            yield gather(self.base, self.tail, slots[start:start + rows])


def row_blocks(base: np.ndarray, tail: list[np.ndarray]) -> list[tuple[int, np.ndarray]]:
    """(first slot, rows) of every block of base ++ tail, the base cut into BLOCK_ROWS pieces (views)."""
    out = [(start, base[start:start + BLOCK_ROWS]) for start in range(0, len(base), BLOCK_ROWS)]
    first = len(base)
    for block in tail:
        out.append((first, block))
        first += len(block)
    return out


def gather(base: np.ndarray, tail: list[np.ndarray], slots: np.ndarray) -> np.ndarray:
    """Rows ``slots`` (any shape of int64) of base ++ tail, as [..., D+1] float32."""
    flat = np.asarray(slots, dtype=np.int64).ravel()
    out = np.empty((flat.size, base.shape[1]), np.float32)
    in_base = flat < len(base)
    if in_base.all():
        out[:] = base[flat]
    else:
        out[in_base] = base[flat[in_base]]
        positions = np.flatnonzero(~in_base)
        offsets = flat[positions] - len(base)
        block_of = offsets // BLOCK_ROWS
        for block in np.unique(block_of).tolist():
            mine = block_of == block
            out[positions[mine]] = tail[block][offsets[mine] - block * BLOCK_ROWS]
    return out.reshape(*np.shape(slots), base.shape[1])


class VectorTable:
    def __init__(self, dim: int, base: np.ndarray | None = None, ids: list[str] | None = None,
                 uncertainty: np.ndarray | None = None, live: np.ndarray | None = None) -> None:
        """``dim`` is the embedding dimension D; base rows are [D+1] augmented vectors."""
        self.dim = dim
        self._base = base if base is not None else np.zeros((0, dim + 1), np.float32)
        n = len(self._base)
        self._tail = _Blocks(dim + 1)
        self._ids: list[str] = list(ids) if ids is not None else []
        self._uncertainty = _Growable(np.float64)
        self._uncertainty.extend(uncertainty if uncertainty is not None else np.zeros(0))
        self._live = _Growable(np.bool_)
        self._live.extend(live if live is not None else np.ones(n, bool))
        if not (len(self._ids) == self._uncertainty.size == self._live.size == n):
            raise ValueError("snapshot arrays disagree in length")
        live_flags = self._live.data
        if live_flags.all():
            self._slot_of = dict(zip(self._ids, range(n), strict=True))
        else:
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
        return gather(self._base, self._tail.filled(), slots)

    def blocks(self) -> list[tuple[int, np.ndarray]]:
        """(first slot, rows [n, D+1]) of every block of vectors, in slot order (views, for the exact scan)."""
        return row_blocks(self._base, self._tail.filled())

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
        """Every slot's vector [n_slots, D+1] (base ++ tail; copies unless the tail is empty)."""
        if self._tail.size == 0:
            return self._base
        return np.concatenate([self._base, *self._tail.filled()])

    def view(self) -> TableView:
        return TableView(self._base, self._tail.filled(), self._ids[:], self._uncertainty.data.copy(),
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
