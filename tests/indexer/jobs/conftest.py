"""Fixtures for the indexer: a real redis-server, the tiny reference model, tiny image corpora."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.processes import free_port, start_redis

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A redis-server on a free loopback port, for the whole session."""
    port = free_port()
    process, _ = start_redis(tmp_path_factory.mktemp("redis"), port, durable=False)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


@pytest.fixture
def redis_url(redis_server):
    """The session's Redis, emptied for this test."""
    import redis

    redis.Redis.from_url(redis_server).flushall()
    return redis_server


def image_bytes(seed: int, size: tuple[int, int] = (12, 10), fmt: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write_images(folder: Path, names: list[str], seed: int = 0) -> list[Path]:
    paths = []
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(seed + i))
        paths.append(path)
    return paths


def write_shard(path: Path, samples: dict[str, dict[str, bytes]]) -> Path:
    """A WebDataset shard: for each key, members ``key.<ext>`` with the given bytes."""
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """`prolip-retrieval ARGS` as a child process of this Python, from the repository root."""
    # one intra-op thread: several of these processes share the 2 cores (OpenMP threads would spin on each other)
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "service.cli", *args], cwd=REPO_ROOT, env=full_env, **kwargs)


class FileServer:
    """A loopback HTTP server answering GET /<name> with ``routes[name]`` (404 otherwise)."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.routes: dict[str, bytes] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = routes.get(self.path.lstrip("/"))
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def file_server():
    server = FileServer()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request, tmp_path):
    """Builds job stores of one kind that see the same jobs (as separate processes would)."""
    from indexer.jobstore import JobStore

    if request.param == "sqlite":
        return lambda: JobStore(tmp_path / "data")
    from indexer.jobstore_redis import RedisJobStore

    url = request.getfixturevalue("redis_url")
    return lambda: RedisJobStore.from_url(url, namespace="t")
