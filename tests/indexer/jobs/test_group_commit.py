"""Group commits: several chunks per index write and per marker transaction, still exactly once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from indexer import Catalog
from indexer.commit import CommitPolicy, GroupCommitter, apply_group
from indexer.jobstore import DONE, FAILED
from indexer.pipeline import EncodedChunk
from tests.indexer.jobs.test_jobstore import planned_store

DIM = 4


def encoded_for(planned, failed: tuple[str, ...] = ()) -> EncodedChunk:
    ids = [item.item_id for item in planned.items if item.item_id not in failed]
    rng = np.random.default_rng(planned.chunk)
    mean = rng.standard_normal((len(ids), DIM)).astype(np.float32)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    return EncodedChunk(ids, mean, np.full((len(ids), DIM), -2.0, np.float32), [(i, "corrupt") for i in failed])


class CountingIndex:
    """The real collection, counting its durable writes."""

    def __init__(self, index):
        self.index, self.adds = index, []

    def add(self, ids, mean, logvar, metadata=None):
        self.adds.append(len(ids))
        self.index.add(ids, mean, logvar, metadata)


@pytest.fixture
def setup(tmp_path, make_store):
    """A planned job in either job store (SQLite, or Redis as replicas share it) and a real collection."""
    store = planned_store(tmp_path, make_store, n=10, chunk_size=3)  # chunks 0..3 of 3, 3, 3, 1 items
    with Catalog(tmp_path / "collections", auto_snapshot=False) as catalog:
        yield store, CountingIndex(catalog.create("c", "image", DIM, "m"))


def test_one_write_and_one_transaction_for_a_group_and_duplicates_dropped(setup):
    store, index = setup
    group = [(store.chunk("j", c), None) for c in (0, 1, 2)]
    group = [(planned, encoded_for(planned, failed=("4.png",) if planned.chunk == 1 else ())) for planned, _ in group]
    assert apply_group(store, index, "j", group) == [True, True, True]
    assert index.adds == [8]  # 9 items, one failed: one durable write
    status = store.status("j")
    assert (status.done, status.failed, status.duplicates) == (8, 1, 0)
    assert store.pending_chunks("j") == [3]
    # the same chunks delivered again, with the last one: only the new chunk is written
    last = store.chunk("j", 3)
    again = group[1:] + [(last, encoded_for(last))]
    assert apply_group(store, index, "j", again) == [False, False, True]
    assert index.adds == [8, 1]
    status = store.status("j")
    assert (status.done, status.failed, status.duplicates, status.pending) == (9, 1, 2, 0)
    assert len(index.index) == 9 and store.item_states("j")["4.png"] == FAILED


def test_a_crash_between_the_write_and_the_markers_redoes_the_group_without_duplicates(setup, monkeypatch):
    store, index = setup
    group = [(store.chunk("j", c), None) for c in (0, 1)]
    group = [(planned, encoded_for(planned)) for planned, _ in group]

    def crash(*args):
        raise OSError("killed before the markers were written")

    with monkeypatch.context() as patch:
        patch.setattr(store, "apply_chunks", crash)
        with pytest.raises(OSError):
            apply_group(store, index, "j", group)
    assert len(index.index) == 6 and store.pending_chunks("j") == [0, 1, 2, 3]  # written, not marked
    assert apply_group(store, index, "j", group) == [True, True]  # the next run does it again
    assert len(index.index) == 6 and store.pending_chunks("j") == [2, 3]
    assert all(store.item_states("j")[f"{i}.png"] == DONE for i in range(6))


def test_committer_groups_what_waits_bounded_by_size_and_commits_the_rest_on_close(setup):
    store, index = setup
    gate = threading.Event()
    real_add = index.add

    def slow_add(*args):
        gate.wait(5)  # the first commit is slow: the next chunks queue up behind it
        real_add(*args)

    index.add = slow_add
    committer = GroupCommitter(store, index, "j", CommitPolicy(max_items=6))
    for chunk in range(4):
        planned = store.chunk("j", chunk)
        committer.submit(planned, encoded_for(planned))
    gate.set()
    committer.close()
    assert sum(committer.groups) == 4 and len(committer.groups) < 4  # grouped
    assert all(size * 3 <= 6 for size in committer.groups[1:])  # never beyond max_items (3 items a chunk)
    assert store.pending_chunks("j") == [] and len(index.index) == 10


def test_a_failed_commit_is_raised_to_the_runner_and_leaves_chunks_pending(setup):
    store, index = setup

    def broken(*args):
        raise RuntimeError("disk on fire")

    index.add = broken
    committer = GroupCommitter(store, index, "j", CommitPolicy(max_delay_s=0.0))
    planned = store.chunk("j", 0)
    committer.submit(planned, encoded_for(planned))
    with pytest.raises(RuntimeError, match="disk on fire"):
        committer.close()
    assert store.pending_chunks("j") == [0, 1, 2, 3]


def test_a_waiting_group_commits_after_its_latency_bound(setup):
    store, index = setup
    committer = GroupCommitter(store, index, "j", CommitPolicy(max_items=1000, max_delay_s=0.05))
    planned = store.chunk("j", 0)
    committer.submit(planned, encoded_for(planned))
    deadline = threading.Event()
    for _ in range(100):  # no more chunks come: the group must not wait for close()
        if store.pending_chunks("j") == [1, 2, 3]:
            break
        deadline.wait(0.05)
    assert store.pending_chunks("j") == [1, 2, 3]
    committer.close()
    assert committer.groups == [1]
