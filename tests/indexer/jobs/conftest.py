"""Fixtures for the indexer: a real redis-server, the tiny reference model, tiny image corpora."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REFERENCE, write_wordlevel_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[3]
WORDS = "a an the red blue green circle square photo of dog cat".split()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(port: int, workdir: Path) -> subprocess.Popen:
    """A redis-server on a loopback port (no persistence), once it answers PING."""
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; scripts/system-deps.sh installs it")
        pytest.skip("redis-server is not installed (scripts/system-deps.sh installs it)")
    import redis

    process = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A redis-server on a free loopback port, for the whole session."""
    port = free_port()
    process = start_redis(port, tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


@pytest.fixture
def redis_url(redis_server):
    """The session's Redis, emptied for this test."""
    import redis

    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The b16like reference checkpoint (image size 32, dim 64) with a word-level tokenizer."""
    folder = tmp_path_factory.mktemp("model") / "b16like"
    shutil.copytree(REFERENCE / "b16like", folder)
    write_wordlevel_tokenizer(folder / "tokenizer.json", WORDS)
    return folder


@pytest.fixture(scope="session")
def encoder(model_dir):
    from models.encoder import Encoder

    return Encoder.load(model_dir, device="cpu", batch_size=16)


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
