"""Hypothesis state machine: random upserts, deletes, snapshots and reopens keep ids and metadata one-to-one."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from indexer import Catalog, IndexSpec

DIM = 8
POOL = [f"id-{i}" for i in range(24)]
ids_strategy = st.lists(st.sampled_from(POOL), min_size=1, max_size=8, unique=True)


def _vectors(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal((n, DIM)).astype(np.float32)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True), (rng.standard_normal((n, DIM)) - 3).astype(np.float32)


class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="stateful-"))
        self.catalog = Catalog(self.folder, auto_snapshot=False)
        self.model: dict[str, tuple[int, int]] = {}  # id -> (seed, row) of its current vectors
        self.index = None

    @initialize(kind=st.sampled_from(["flat", "hnsw"]))
    def create(self, kind):
        self.index = self.catalog.create("c", "image", DIM, "m", spec=IndexSpec(kind=kind, codec="flat"))

    @rule(ids=ids_strategy, seed=st.integers(0, 10_000))
    def upsert(self, ids, seed):
        mean, logvar = _vectors(seed, len(ids))
        self.index.add(ids, mean, logvar, [{"seed": seed, "row": r} for r in range(len(ids))])
        self.model.update({item_id: (seed, row) for row, item_id in enumerate(ids)})

    @rule(ids=ids_strategy)
    def delete(self, ids):
        expected = sum(item_id in self.model for item_id in ids)
        assert self.index.delete(ids) == expected
        for item_id in ids:
            self.model.pop(item_id, None)

    @rule(rebuild=st.booleans())
    def snapshot(self, rebuild):
        self.index.snapshot(rebuild=rebuild)

    @rule(with_snapshot=st.booleans())
    def reopen(self, with_snapshot):
        self.catalog.unload("c", snapshot=with_snapshot)
        self.index = self.catalog.get("c")

    @invariant()
    def ids_and_metadata_match(self):
        if self.index is None:
            return
        assert len(self.index) == len(self.model)
        for item_id in POOL:
            item = self.index.get(item_id)
            if item_id not in self.model:
                assert item is None and item_id not in self.index
                continue
            seed, row = self.model[item_id]
            assert item.metadata == {"seed": seed, "row": row}
            np.testing.assert_allclose(item.mean, _vectors(seed, row + 1)[0][row], atol=1e-6)

    @invariant()
    def search_sees_exactly_the_live_items(self):
        if self.index is None or not self.model:
            return
        mean, logvar = _vectors(99, 1)
        hits = self.index.search(mean, logvar, k=len(POOL))[0]
        assert sorted(h.id for h in hits) == sorted(self.model)

    def teardown(self):
        self.catalog.close()
        shutil.rmtree(self.folder, ignore_errors=True)


TestIndexMachine = IndexMachine.TestCase
TestIndexMachine.settings = settings(max_examples=15, stateful_step_count=12, deadline=None)
