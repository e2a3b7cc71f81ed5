"""Stateless API replicas: two `prolip-retrieval serve` processes over one Milvus Lite server and one Redis.

Real processes throughout: Milvus Lite's server binary on a loopback port, a durable redis-server,
two uvicorn replicas with data dirs of their own (only the media folder is shared, as a shared
volume would be). What one replica acknowledges, the other serves; a replica killed with SIGKILL
during writes loses no acknowledged item; a job whose replica is killed is taken over by the other
and completes with every item indexed exactly once (the invariants of test_api_kill.py and of
tests/indexer/jobs/test_distributed.py).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import httpx
import pytest

from indexer.milvus import MilvusCatalog
from tests.processes import start_milvus_lite, start_redis

from .conftest import Server

LEASE_S = 2.0
PREFIX = "t_replicas"


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """(Milvus URI, Redis URL): real servers for the whole module."""
    workdir = tmp_path_factory.mktemp("backends")
    milvus, milvus_uri = start_milvus_lite(workdir / "milvus")
    redis_process, redis_url = start_redis(workdir / "redis")
    yield milvus_uri, redis_url
    for process in (milvus, redis_process):
        process.terminate()
        process.wait(20)


@pytest.fixture(scope="module")
def cluster(backends, tmp_path_factory, model_dir):
    """Starts replicas sharing the backends, the media folder and the job roots; stops them at the end."""
    milvus_uri, redis_url = backends
    root = tmp_path_factory.mktemp("cluster")
    (root / "media").mkdir()
    (root / "sources").mkdir()
    started: list[Server] = []

    def start(name: str, **env: str) -> Server:
        (root / name).mkdir(exist_ok=True)
        server = Server(root / name / "data", model_dir, env={
            "PROLIP_MILVUS_URI": milvus_uri, "REDIS_URL": redis_url, "PROLIP_MILVUS_PREFIX": PREFIX,
            "PROLIP_MEDIA_DIR": str(root / "media"), "PROLIP_JOB_ROOTS": str(root / "sources"),
            "PROLIP_JOB_LEASE_S": str(LEASE_S), "PROLIP_JOB_CHUNK_SIZE": "8", "OMP_NUM_THREADS": "1",
            "PROLIP_DEMO": "true", "PROLIP_DEMO_SCENES": "12", **env})
        started.append(server)
        return server

    yield root, start
    _stop_all(started)


@pytest.fixture(scope="module")
def survivor(cluster):
    """Replica B, serving for the whole module while replicas A come and go."""
    _, start = cluster
    server = start("b")
    yield server
    server.stop()


def _stop_all(started: list[Server]) -> None:
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


def _search_ids(url: str, collection: str, query: str = "a red circle", k: int = 1000) -> list[str]:
    body = httpx.post(url + "/v1/search/text", json={"query": query, "collection": collection, "k": k,
                                                     "rank": "cosine"}, timeout=30)
    assert body.status_code == 200, body.text
    return [hit["id"] for hit in body.json()["results"]]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_replicas_share_collections_images_and_jobs_and_build_the_demo_once(cluster, survivor):
    root, start = cluster
    a, b = start("a"), survivor
    a.wait_ready(path="/readyz")
    b.wait_ready(path="/readyz")
    # the demo collections were built once, by one replica, while both started on an empty catalog
    builders = [s for s in (a, b) if "indexing the demo collections" in s.log.read_text()]
    assert len(builders) == 1
    assert httpx.get(a.url + "/v1/collections/demo-images").json()["size"] == 12
    assert httpx.get(b.url + "/v1/collections/demo-images").json()["size"] == 12

    # a write acknowledged by one replica is read by the other at once (Strong consistency)
    items = [{"id": f"cap-{i}", "text": text, "metadata": {"i": i}}
             for i, text in enumerate(["a red circle", "a blue square", "a photo of a dog"])]
    assert httpx.post(a.url + "/v1/collections/shared/items", json={"items": items}).status_code == 200
    assert sorted(_search_ids(b.url, "shared")) == ["cap-0", "cap-1", "cap-2"]
    assert httpx.get(b.url + "/v1/collections/shared/items/cap-1").json()["metadata"]["i"] == 1
    assert httpx.delete(b.url + "/v1/collections/shared/items/cap-2").status_code == 200
    assert sorted(_search_ids(a.url, "shared")) == ["cap-0", "cap-1"]

    # an image uploaded through one replica is served by the other (the shared media folder)
    from tests.service.conftest import png_bytes

    files = [("files", ("p.png", png_bytes(3), "image/png"))]
    upload = httpx.post(a.url + "/v1/collections/pictures/items", files=files, data={"ids": ["pic"]}, timeout=30)
    assert upload.status_code == 200, upload.text
    image = httpx.get(b.url + "/v1/collections/pictures/items/pic/image")
    assert image.status_code == 200 and image.content == png_bytes(3)

    # a job submitted through one replica is seen, and its items searched, through the other
    manifest = root / "sources" / "small.jsonl"
    manifest.write_text("".join(f'{{"id": "s{i}", "caption": "a green triangle {i}"}}\n' for i in range(20)))
    job = httpx.post(a.url + "/v1/jobs", json={"source": str(manifest), "collection": "small"}).json()
    status = _wait(lambda: (s := httpx.get(b.url + f"/v1/jobs/{job['id']}").json())["state"] == "completed" and s,
                   60, "the job to complete")
    assert (status["done"], status["failed"], status["total"]) == (20, 0, 20)
    assert len(_search_ids(b.url, "small")) == 20
    a.stop()


def _writer(url: str, acknowledged: set[str], attempted: list[list[str]], stop: threading.Event,
            collection: str, cycle: int) -> None:
    words = ["red", "blue", "green", "circle", "square", "dog", "cat", "photo"]
    with httpx.Client(base_url=url, timeout=10) as http:
        for batch in range(15):  # at most 120 items a cycle: five cycles stay within one search's k (1000)
            if stop.is_set():
                return
            ids = [f"w{cycle}-{batch}-{j}" for j in range(8)]
            items = [{"id": item_id, "text": f"a {words[j]} {words[(batch + j) % 8]}"} for j, item_id in enumerate(ids)]
            attempted.append(ids)
            try:
                response = http.post(f"/v1/collections/{collection}/items", json={"items": items})
            except httpx.HTTPError:
                return  # the kill
            if not response.is_success:
                return
            acknowledged.update(ids)


def _kill_cycles(start, survivor: Server, cycles: int, seed: int, collection: str) -> None:
    """Each cycle: a fresh replica A takes writes, is SIGKILLed at a random moment, B checks the invariants."""
    rng = random.Random(seed)
    acknowledged: set[str] = set()
    possible: set[str] = set()
    for cycle in range(cycles):
        a = start(f"{collection}-{cycle}")
        a.wait_ready(path="/readyz")
        survivor.wait_ready(path="/readyz")
        attempted: list[list[str]] = []
        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(a.url, acknowledged, attempted, stop, collection, cycle))
        writer.start()
        before = len(acknowledged)
        _wait(lambda before=before: len(acknowledged) >= before + 16, 30, "some acknowledged writes")
        stop.wait(rng.uniform(0.0, 0.3))
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(10)
        stop.set()
        writer.join(15)
        possible |= {item_id for ids in attempted for item_id in ids}
        found = _search_ids(survivor.url, collection)  # the surviving replica serves every acknowledged item
        assert len(found) == len(set(found)), "duplicate ids in search results"
        assert acknowledged <= set(found), f"acknowledged but missing: {sorted(acknowledged - set(found))[:5]}"
        assert set(found) <= possible, f"phantom ids: {sorted(set(found) - possible)[:5]}"
        assert httpx.get(survivor.url + f"/v1/collections/{collection}").json()["size"] == len(found)


def test_kill_9_of_a_replica_during_writes_loses_no_acknowledged_item(cluster, survivor):
    """One kill by default; PROLIP_REPLICA_KILL_CYCLES=5 makes it a sweep (~20 s a cycle on 2 shared cores)."""
    cycles = int(os.environ.get("PROLIP_REPLICA_KILL_CYCLES", "1"))
    _kill_cycles(cluster[1], survivor, cycles=cycles, seed=11, collection="writes")


def test_a_job_whose_replica_is_killed_is_taken_over_and_indexes_every_item_once(cluster, backends, survivor):
    root, start = cluster
    a, b = start("job-a"), survivor
    a.wait_ready(path="/readyz")
    b.wait_ready(path="/readyz")
    total = 1200
    manifest = root / "sources" / "big.jsonl"
    manifest.write_text("".join(f'{{"id": "t{i}", "caption": "a small white diamond {i}"}}\n'
                                for i in range(total)))
    job_id = httpx.post(a.url + "/v1/jobs", json={"source": str(manifest), "collection": "big"}).json()["id"]
    _wait(lambda: httpx.get(b.url + f"/v1/jobs/{job_id}").json()["done"] >= 16, 60, "the job to start")
    a.process.send_signal(signal.SIGKILL)  # mid-job: its lease stops being renewed
    a.process.wait(10)
    at_kill = httpx.get(b.url + f"/v1/jobs/{job_id}").json()
    assert at_kill["state"] != "completed" and at_kill["done"] < total, "the job finished before the kill"
    status = _wait(lambda: (s := httpx.get(b.url + f"/v1/jobs/{job_id}").json())["state"] == "completed" and s,
                   90, "the other replica to take the job over and complete it")
    assert (status["done"], status["failed"], status["total"]) == (total, 0, total)
    assert job_id in next(line for line in b.log.read_text().splitlines() if "took over" in line)
    # in Milvus itself: every planned item once, nothing else
    milvus_uri, _ = backends
    with MilvusCatalog(milvus_uri, prefix=PREFIX) as catalog:
        collection = catalog.get("big")
        rows = collection.rows_where("", ["uncertainty"], limit=16384)
        ids = [row["id"] for row in rows]
        assert len(ids) == len(set(ids)) == len(collection) == total
        assert set(ids) == {f"t{i}" for i in range(total)}
