"""Searches from many threads while a writer adds and deletes and snapshots rebuild the index."""

from __future__ import annotations

import threading

from indexer import Catalog, IndexSpec

from .conftest import DIM


def test_searches_stay_consistent_during_writes_and_rebuilds(tmp_path, dataset):
    catalog = Catalog(tmp_path, auto_snapshot=False)
    index = catalog.create("c", "image", DIM, "m", spec=IndexSpec(kind="flat"))
    index.add(dataset.ids[:300], dataset.mean[:300], dataset.logvar[:300], [{"id": i} for i in dataset.ids[:300]])
    model = set(dataset.ids[:300])
    errors: list[BaseException] = []
    writing = threading.Event()
    writing.set()

    def guarded(work):
        def run():
            try:
                work()
            except BaseException as error:  # reported by the main thread
                errors.append(error)
                writing.clear()
        return run

    def write():
        for step in range(30):
            start = 300 + 20 * step
            ids = dataset.ids[start:start + 20]
            index.add(ids, dataset.mean[start:start + 20], dataset.logvar[start:start + 20], [{"id": i} for i in ids])
            model.update(ids)
            doomed = dataset.ids[start - 150:start - 140]
            index.delete(doomed)
            model.difference_update(doomed)
        writing.clear()

    def read(rank):
        def loop():
            while writing.is_set():
                results = index.search(dataset.query_mean, dataset.query_logvar, k=8, rank=rank, shortlist=40)
                for hits in results:
                    assert len(hits) == 8 and len({h.id for h in hits}) == 8
                    # metadata is read under the same lock as the FAISS result: it always belongs to the hit
                    assert all(h.metadata == {"id": h.id} for h in hits)
                index.get(dataset.ids[0])
                index.uncertainty_percentile([0.3])
        return loop

    def snapshot():
        while writing.is_set():
            index.snapshot()  # flat + deletes: rebuilt aside, writes meanwhile replayed, then swapped

    threads = [threading.Thread(target=guarded(f)) for f in
               (write, read("csd"), read("cosine"), read("inclusion"), snapshot)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert {i for i in dataset.ids if i in index} == model and len(index) == len(model)
    catalog.unload("c", snapshot=False)
    reopened = catalog.get("c")
    assert {i for i in dataset.ids if i in reopened} == model
    hits = reopened.search(dataset.mean[850:851], dataset.logvar[850:851] - 30, k=1)[0]
    assert hits[0].id == dataset.ids[850]
    catalog.close()
