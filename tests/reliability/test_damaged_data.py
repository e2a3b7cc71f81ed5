"""Damaged files in a data dir, met by a real server (`prolip-retrieval serve`) and the CLI (issue #16).

One data dir holds a healthy collection beside one of every kind of damage found by hand: a
collection whose ``collection.json`` was deleted, one whose ``collection.json`` is garbled, an
empty and a garbage ``store.sqlite``, a ``LOCK`` that is a folder, and a garbage ``jobs.sqlite3``.
The server must start, serve the healthy collection, report each broken one (readyz 503 with the
reason, for a caller with a key only; GET 503; never 500, never 409 "exists"), leave damaged files
untouched, and recover the lost descriptions with `collections rebuild`. A second server on the same
data dir is refused, naming the first one's pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import CAPTIONS

from .conftest import Server

KEY = "damage-test-key-0123456789"
AUTH = {"X-API-Key": KEY}
REPO = Path(__file__).resolve().parents[2]
HEALTHY, LOST, GARBLED, EMPTY_STORE, GARBAGE_STORE, LOCK_FOLDER = (
    "good", "lost-json", "garbled-json", "empty-store", "garbage-store", "lock-folder")


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _fingerprint(path: Path) -> tuple:
    siblings = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))
    return path.read_bytes(), siblings


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, model_dir, encoder):
    """A data dir with one of every damage, and a keyed server started on it."""
    from indexer import Catalog

    data_dir = tmp_path_factory.mktemp("damaged") / "data"
    texts = CAPTIONS
    batch = encoder.encode_texts(texts)
    with Catalog(data_dir) as catalog:
        for name in (HEALTHY, LOST, GARBLED, EMPTY_STORE, GARBAGE_STORE, LOCK_FOLDER):
            index = catalog.create(name, modality="text", dim=encoder.embed_dim, model_id=encoder.model_id)
            index.add([f"t{i}" for i in range(len(texts))], batch.mean, batch.logvar,
                      [{"text": text} for text in texts])
    (data_dir / LOST / "collection.json").unlink()
    (data_dir / GARBLED / "collection.json").write_text('{"name": "garbled-json", "moda')
    (data_dir / EMPTY_STORE / "store.sqlite").write_bytes(b"")
    (data_dir / GARBAGE_STORE / "store.sqlite").write_bytes(os.urandom(8192))
    (data_dir / LOCK_FOLDER / "LOCK").unlink(missing_ok=True)
    (data_dir / LOCK_FOLDER / "LOCK").mkdir()
    (data_dir / "jobs.sqlite3").write_bytes(b"this is not a database" * 100)
    before = {name: _fingerprint(data_dir / name / "store.sqlite") for name in (EMPTY_STORE, GARBAGE_STORE)}

    server = Server(data_dir, model_dir, env={"PROLIP_API_KEYS": KEY, "OMP_NUM_THREADS": "1"})
    server.wait_ready()
    try:
        yield data_dir, server, before
    finally:
        server.stop()


def test_readyz_without_a_key_says_up_or_down_and_nothing_else(damaged):
    """Defect 5: no collection names, paths or error texts to a caller without a key."""
    data_dir, server, _ = damaged
    anonymous = httpx.get(server.url + "/readyz", timeout=30)
    assert anonymous.status_code == 503 and anonymous.json() == {"ready": False}
    for secret in (str(data_dir), HEALTHY, LOST, "Corrupt"):
        assert secret not in anonymous.text
    keyed = httpx.get(server.url + "/readyz", headers=AUTH, timeout=30)
    assert keyed.status_code == 503 and keyed.json()["checks"][f"collection:{HEALTHY}"] == "ok"
    assert httpx.get(server.url + "/healthz", timeout=30).json() == {"status": "ok"}


def test_every_damaged_collection_is_reported_and_the_healthy_one_serves(damaged):
    """Defects 3 and 9: lost or garbled descriptions, damaged stores and a LOCK folder answer 503 with
    the reason (never 500, 404 or 409); the healthy collection searches as before."""
    _, server, _ = damaged
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        checks = http.get("/readyz").json()["checks"]
        for name in (LOST, GARBLED, EMPTY_STORE, GARBAGE_STORE, LOCK_FOLDER):
            assert checks[f"collection:{name}"] != "ok", (name, checks)
        assert "collection.json is missing" in checks[f"collection:{LOST}"]
        assert "collections rebuild lost-json" in checks[f"collection:{LOST}"]
        assert "not an SQLite database" in checks[f"collection:{EMPTY_STORE}"]
        assert "cannot be locked" in checks[f"collection:{LOCK_FOLDER}"]
        for name in (LOST, GARBLED, EMPTY_STORE, GARBAGE_STORE, LOCK_FOLDER):
            got = http.get(f"/v1/collections/{name}")
            assert got.status_code == 503, (name, got.status_code, got.text)
            search = http.post("/v1/search/text", json={"query": "a dog", "collection": name})
            assert search.status_code == 503, (name, search.text)
            add = http.post(f"/v1/collections/{name}/items", json={"items": [{"text": "a cat"}]})
            assert add.status_code == 503, (name, add.status_code, add.text)  # not 409 "already exists"
        listed = http.get("/v1/collections").json()
        assert [c["name"] for c in listed["collections"]] == [HEALTHY]
        assert {b["name"] for b in listed["broken"]} == {LOST, GARBLED, EMPTY_STORE, GARBAGE_STORE, LOCK_FOLDER}
        hits = http.post("/v1/search/text", json={"query": "a dog", "collection": HEALTHY, "k": 100}).json()
        assert sorted(hit["metadata"]["text"] for hit in hits["results"]) == sorted(CAPTIONS)


def test_damaged_stores_are_not_written_to(damaged):
    """Defect 9: an empty or garbage store.sqlite is read, refused, and left exactly as it was (no WAL files)."""
    data_dir, server, before = damaged
    httpx.get(server.url + "/readyz", headers=AUTH, timeout=30)
    for name, fingerprint in before.items():
        assert _fingerprint(data_dir / name / "store.sqlite") == fingerprint, name


def test_a_damaged_job_history_is_set_aside_and_the_service_goes_on(damaged):
    """Defect 4: a garbage jobs.sqlite3 no longer stops the server; it is quarantined and reported."""
    data_dir, server, _ = damaged
    quarantined = [p.name for p in data_dir.iterdir() if p.name.startswith("jobs.sqlite3.damaged-")]
    assert len(quarantined) == 1
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        jobs = http.get("/v1/jobs").json()
        assert jobs["jobs"] == [] and quarantined[0] in jobs["warnings"][0]
        assert http.get("/metrics").status_code == 200


def test_a_second_server_on_the_same_data_dir_is_refused_naming_the_first(damaged, model_dir):
    """Defect 6: one process per data dir; the second one says who holds it."""
    data_dir, server, _ = damaged
    second = Server(data_dir, model_dir, env={"OMP_NUM_THREADS": "1"})
    try:
        assert second.process.wait(60) == 2
    finally:
        second.stop()
    log = second.log.read_text()
    assert f"in use by pid {server.process.pid}" in log and "prolip-retrieval serve" in log
    assert "Traceback" not in log
    indexing = _cli("collections", "list", "--data-dir", str(data_dir))
    assert indexing.returncode == 2 and f"pid {server.process.pid}" in indexing.stderr


def test_lost_descriptions_are_restored_by_rebuild_from_the_store(damaged, encoder):
    """Defect 3: `collections rebuild` restores a missing or garbled collection.json from the item store."""
    from indexer import Catalog

    data_dir, server, _ = damaged
    server.stop()
    listed = _cli("collections", "list", "--data-dir", str(data_dir))
    assert listed.returncode == 0, listed.stderr
    assert f"BROKEN {LOST}" in listed.stdout and f"BROKEN {GARBLED}" in listed.stdout
    for name in (LOST, GARBLED):
        rebuilt = _cli("collections", "rebuild", name, "--data-dir", str(data_dir))
        assert rebuilt.returncode == 0, rebuilt.stderr
    query = encoder.encode_texts(["a dog"])
    with Catalog(data_dir) as catalog:  # as the next server opens them
        assert catalog.broken() == {}  # every description readable again (damaged stores fail when opened)
        for name in (LOST, GARBLED):
            index = catalog.get(name)
            assert (index.info.modality, index.info.model_id) == ("text", encoder.model_id)
            hits = index.search(query.mean, query.logvar, k=100)[0]
            assert sorted(hit.metadata["text"] for hit in hits) == sorted(CAPTIONS)
