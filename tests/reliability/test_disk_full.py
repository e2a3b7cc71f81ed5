"""Disk full while writing and saving: a clear 507, writes refused, reads go on, the previous index intact.

The data dir is a small tmpfs (``mount -t tmpfs -o size=...``; needs root or CAP_SYS_ADMIN, as
in the CI container). Where mounting is not permitted the test is skipped and says so: a
per-process RLIMIT_FSIZE limits single files, not the disk, so it would not exercise the same path.
"""

from __future__ import annotations

import subprocess
import uuid

import httpx
import pytest

from .conftest import Server

SIZE = "1500k"


@pytest.fixture
def small_disk(tmp_path):
    mountpoint = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); run as root to test disk-full")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _batch(n: int) -> dict:
    words = ["red", "blue", "green", "circle", "square", "dog", "cat", "photo", "small", "large"]
    return {"items": [{"id": f"b{n}-{j}", "text": f"a {words[j % 10]} {words[(n + j) % 10]}",
                       "metadata": {"pad": "x" * 800}} for j in range(20)]}


def _search(http: httpx.Client) -> list[str]:
    response = http.post("/v1/search/text", json={"query": "a red circle", "collection": "c", "k": 1000})
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


def test_disk_full_refuses_writes_keeps_reads_and_the_previous_index(small_disk, model_dir):
    data_dir = small_disk / "data"
    server = Server(data_dir, model_dir, env={"OMP_NUM_THREADS": "1"})
    acknowledged: set[str] = set()
    try:
        server.wait_ready(path="/readyz")
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for n in range(500):
                response = http.post("/v1/collections/c/items", json=_batch(n))
                if response.status_code != 200:
                    break
                acknowledged.update(item["id"] for item in _batch(n)["items"])
            else:
                pytest.fail("the disk never filled up")
            assert response.status_code == 507, response.text
            error = response.json()["error"]
            assert error["code"] == "insufficient_storage" and "disk is full" in error["message"]
            assert acknowledged
            before = _search(http)
            assert set(before) == acknowledged
            # writes stay refused, with the same clear error; reads go on and see the same data
            again = http.post("/v1/collections/c/items", json=_batch(999))
            assert again.status_code == 507, again.text
            assert _search(http) == before
            assert http.get("/v1/collections/c").json()["size"] == len(acknowledged)
    finally:
        server.stop()
    # restarted on the still-full disk: the previous state loads, complete
    restarted = Server(data_dir, model_dir, env={"OMP_NUM_THREADS": "1"})
    try:
        restarted.wait_ready(path="/readyz")
        with httpx.Client(base_url=restarted.url, timeout=30) as http:
            assert set(_search(http)) == acknowledged
    finally:
        restarted.stop()
