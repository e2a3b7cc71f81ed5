"""kill -9 the real API server (`prolip-retrieval serve`) at random moments during bulk adds.

After every restart: each item acknowledged with a 2xx is searchable, nothing unacknowledged
appears except whole batches that were in flight at the kill, no id is duplicated, and the
index size equals the number of metadata rows.
"""

from __future__ import annotations

import random
import signal
import threading

import httpx

from indexer import Catalog

from .conftest import Server

CYCLES = 6
BATCH = 8
MAX_BATCHES = 20  # per cycle: everything stays within one search's max k (1000)


def _ids(cycle: int, batch: int) -> list[str]:
    return [f"c{cycle}-b{batch}-{j}" for j in range(BATCH)]


def _writer(url: str, cycle: int, acknowledged: set[str], attempted: list[int], stop: threading.Event) -> None:
    """Posts batches until the server dies; records what got a 2xx and which batch was in flight."""
    words = ["red", "blue", "green", "circle", "square", "dog", "cat", "photo"]
    with httpx.Client(base_url=url, timeout=10) as http:
        for batch in range(MAX_BATCHES):
            if stop.is_set():
                return
            items = [{"id": item_id, "text": f"a {words[j % 8]} {words[(batch + j) % 8]}", "metadata": {"b": batch}}
                     for j, item_id in enumerate(_ids(cycle, batch))]
            attempted.append(batch)
            try:
                response = http.post("/v1/collections/bulk/items", json={"items": items})
            except httpx.HTTPError:
                return  # the kill
            if response.is_success:
                acknowledged.update(_ids(cycle, batch))
            else:
                return


def _check(url: str, acknowledged: set[str], possible: set[str]) -> int:
    with httpx.Client(base_url=url, timeout=30) as http:
        size = http.get("/v1/collections/bulk").json()["size"] if acknowledged else 0
        if not acknowledged:
            return 0
        body = http.post("/v1/search/text", json={"query": "a red circle", "collection": "bulk", "k": 1000,
                                                  "rank": "cosine"})
        assert body.status_code == 200, body.text
        found = [hit["id"] for hit in body.json()["results"]]
    assert len(found) == len(set(found)), "duplicate ids in search results"
    assert acknowledged <= set(found), f"acknowledged but missing: {sorted(acknowledged - set(found))[:5]}"
    assert set(found) <= possible, f"phantom ids: {sorted(set(found) - possible)[:5]}"
    assert size == len(found)
    return size


def test_kill_9_during_bulk_adds_loses_no_acknowledged_item(tmp_path, model_dir):
    rng = random.Random(7)
    data_dir = tmp_path / "data"
    acknowledged: set[str] = set()
    possible: set[str] = set()
    for cycle in range(CYCLES):
        server = Server(data_dir, model_dir, env={"OMP_NUM_THREADS": "1"})
        try:
            server.wait_ready(path="/readyz")
            _check(server.url, acknowledged, possible)  # what the previous kill left behind
            attempted: list[int] = []
            stop = threading.Event()
            writer = threading.Thread(target=_writer, args=(server.url, cycle, acknowledged, attempted, stop))
            writer.start()
            # kill somewhere among the batches (about 25 ms each here): during encoding, the store write or the reply
            stop.wait(rng.uniform(0.02, 0.6))
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(10)
            stop.set()
            writer.join(15)
            assert not writer.is_alive()
            for batch in attempted:
                possible.update(_ids(cycle, batch))
        finally:
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait(10)
    server = Server(data_dir, model_dir)
    try:
        server.wait_ready(path="/readyz")
        size = _check(server.url, acknowledged, possible)
    finally:
        server.stop()
    assert size >= len(acknowledged) > 0
    # the files themselves: index size equals metadata rows, one row per id
    with Catalog(data_dir, auto_snapshot=False) as catalog:
        index = catalog.get("bulk")
        rows = [row.id for chunk in index._store.live_rows() for row in chunk]
        assert len(rows) == len(set(rows)) == len(index) == size
