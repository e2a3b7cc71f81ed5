"""The job store's markers and counters: a chunk is applied once, plans restart cleanly.

Every test runs against both implementations of the interface: SQLite (one host) and Redis
(replicas sharing their jobs).
"""

import threading

import numpy as np
import pytest

from indexer.commit import check_result
from indexer.jobstore import DONE, FAILED
from indexer.pipeline import EncodedChunk
from indexer.planner import PlanningStopped, check_indexable, plan_job
from indexer.roots import Confinement
from indexer.sources import PlannedItem
from tests.indexer.jobs.conftest import write_images


def planned_store(tmp_path, make_store, n=10, chunk_size=4):
    write_images(tmp_path / "corpus", [f"{i}.png" for i in range(n)])
    store = make_store()
    store.create_job("j", collection="c", source=str(tmp_path / "corpus"), fmt="directory", modality="image",
                     model_id="m", mode="local", chunk_size=chunk_size)
    plan_job(store, "j", source=str(tmp_path / "corpus"), fmt="directory", modality="image",
             chunk_size=chunk_size, confinement=Confinement(None))
    return store


def test_plan_cuts_chunks_and_applying_twice_changes_nothing(tmp_path, make_store):
    store = planned_store(tmp_path, make_store)
    assert store.pending_chunks("j") == [0, 1, 2]
    chunk = store.chunk("j", 1)
    assert [item.item_id for item in chunk.items] == ["4.png", "5.png", "6.png", "7.png"]
    assert store.apply_chunk("j", 1, [("5.png", "corrupt")]) is True
    assert store.apply_chunk("j", 1, []) is False  # a duplicate result
    status = store.status("j")
    assert (status.total, status.done, status.failed, status.pending, status.duplicates) == (10, 3, 1, 6, 1)
    assert store.pending_chunks("j") == [0, 2]
    states = store.item_states("j")
    assert states["5.png"] == FAILED and states["4.png"] == DONE and states["0.png"] == 0
    assert [(f.item_id, f.reason) for f in store.failures("j")] == [("5.png", "corrupt")]
    # only an item the job indexed has a reference to read its image back from
    assert store.indexed_ref("j", "4.png")["path"] == str(tmp_path / "corpus" / "4.png")
    assert store.indexed_ref("j", "5.png") is None  # failed
    assert store.indexed_ref("j", "0.png") is None  # not applied yet
    assert store.indexed_ref("j", "nope") is None


def test_replanning_starts_from_a_clean_slate(tmp_path, make_store):
    store = planned_store(tmp_path, make_store)
    store.apply_chunk("j", 0, [])
    plan_job(store, "j", source=str(tmp_path / "corpus"), fmt="directory", modality="image", chunk_size=5,
             confinement=Confinement(None))
    status = store.status("j")
    assert (status.total, status.done, status.failed) == (10, 0, 0)
    assert store.pending_chunks("j") == [0, 1]


def test_planning_can_be_stopped(tmp_path, monkeypatch, make_store):
    import indexer.planner as planner

    monkeypatch.setattr(planner, "PLAN_BATCH", 3)
    write_images(tmp_path / "corpus", [f"{i}.png" for i in range(10)])
    store = make_store()
    store.create_job("j", collection="c", source="s", fmt="directory", modality="image", model_id="m",
                     mode="local", chunk_size=4)
    stop = threading.Event()
    stop.set()
    with pytest.raises(PlanningStopped):
        plan_job(store, "j", source=str(tmp_path / "corpus"), fmt="directory", modality="image", chunk_size=4,
                 confinement=Confinement(None), stop=stop)
    assert store.job("j")["planned"] == 0


def test_store_is_shared_across_instances_and_threads(tmp_path, make_store):
    store = planned_store(tmp_path, make_store)
    other = make_store()  # another process would see the same
    done = []
    threads = [threading.Thread(target=lambda c=c: done.append(other.apply_chunk("j", c, []))) for c in (0, 1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(done) == [True, True, True] and store.status("j").done == 10


def test_results_must_cover_the_plan_and_non_finite_rows_fail(tmp_path, make_store):
    store = planned_store(tmp_path, make_store, n=3, chunk_size=3)
    chunk = store.chunk("j", 0)
    mean = np.eye(3, 4, dtype=np.float32)
    logvar = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="does not cover"):
        check_result(chunk, EncodedChunk(["0.png", "1.png"], mean[:2], logvar[:2], []))
    logvar[1, 2] = np.inf
    checked = check_result(chunk, EncodedChunk(["0.png", "1.png", "2.png"], mean, logvar, []))
    assert checked.ids == ["0.png", "2.png"] and checked.failures == [("1.png", "encoder produced non-finite values")]


def test_items_the_index_would_refuse_are_caught_while_planning():
    assert check_indexable(PlannedItem("a", {}, "x", {"k": 1})) is None
    assert "longer than 1024 bytes" in check_indexable(PlannedItem("é" * 600, {}, "x", {}))
    assert "larger than" in check_indexable(PlannedItem("a", {}, "x", {"blob": "x" * 70_000}))
    assert "not JSON" in check_indexable(PlannedItem("a", {}, "x", {"bad": float("nan")}))


def test_leases_admit_one_run_and_expire_when_their_holder_stops_renewing(tmp_path, make_store):
    store = planned_store(tmp_path, make_store)
    first, second = store.lease("j"), make_store().lease("j")
    assert not second.held_elsewhere() and first.acquire()
    assert second.held_elsewhere() and not second.acquire()
    first.release()
    assert not second.held_elsewhere() and second.acquire()
    second.release()
    if hasattr(first, "ttl_ms"):  # a Redis lease: a holder that dies (stops renewing) loses it after the TTL
        import time

        from indexer.leases import RedisLease

        dead = RedisLease(first.client, first.key, ttl_s=0.2)
        assert dead.acquire()
        dead._stop.set()  # the renewal thread of a killed replica
        dead._thread.join()
        time.sleep(0.3)
        assert not first.held_elsewhere() and first.acquire()
        first.release()
