"""ENCODER=remote: queries go through a real redis-server to a real encoder worker process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from .conftest import CAPTIONS, Server, add_captions, free_port


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A redis-server with AOF and fsync on every write (what the index's Redis store demands)."""
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; scripts/system-deps.sh installs it")
        pytest.skip("redis-server is not installed (scripts/system-deps.sh installs it)")
    import redis

    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                                "--appendfsync", "always", "--dir", str(workdir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(10)


def _worker(redis_url: str, model_dir, log_path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--redis-url", redis_url, "--model",
                             str(model_dir), "--device", "cpu"], stdout=open(log_path, "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT)


def test_remote_encoding_through_workers_matches_local(redis_url, model_dir, encoder, tmp_path):
    worker = _worker(redis_url, model_dir, tmp_path / "worker.log")
    server = Server(tmp_path / "data", model_dir,
                    env={"ENCODER": "remote", "REDIS_URL": redis_url, "PROLIP_REMOTE_TIMEOUT_S": "3"})
    try:
        server.wait_ready(timeout=90, path="/readyz")  # ready only once a worker is alive
        with httpx.Client(base_url=server.url, timeout=30) as http:
            add_captions(http)
            remote = http.post("/v1/embed/text", json={"texts": CAPTIONS[:3]}).json()
            np.testing.assert_allclose([i["mean"] for i in remote["items"]], encoder.encode_texts(CAPTIONS[:3]).mean,
                                       atol=1e-5)
            found = http.post("/v1/search/text", json={"query": "a red circle", "collection": "captions",
                                                       "k": 3, "rank": "cosine"}).json()
            assert found["results"][0]["metadata"]["text"] == "a red circle"
            image = http.post("/v1/search/image", data={"collection": "captions", "k": "2"},
                              files={"file": ("q.png", _png(), "image/png")})
            assert image.status_code == 200, image.text

            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            gone = http.post("/v1/search/text", json={"query": "a dog", "collection": "captions"})
            assert gone.status_code == 503 and "encoder" in gone.json()["error"]["message"]
            assert http.get("/healthz").status_code == 200  # the API itself stays up
    finally:
        if worker.poll() is None:
            worker.kill()
        server.stop()


def _png() -> bytes:
    from .conftest import png_bytes

    return png_bytes(7)
