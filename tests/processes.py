"""Real helper processes for tests: free loopback ports and redis-server instances."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(workdir: Path, port: int | None = None, *, durable: bool = True) -> tuple[subprocess.Popen, str]:
    """Start redis-server on loopback and return it with its URL once it answers and has loaded its data.

    ``durable`` runs the production setting the stores require: the AOF on, fsynced before
    every reply. Without the binary the test fails under CI (scripts/system-deps.sh installs
    it there) and is skipped elsewhere.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; scripts/system-deps.sh installs it")
        pytest.skip("redis-server is not installed (scripts/system-deps.sh installs it)")
    import redis

    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
            "--appendonly", "yes" if durable else "no", "--appendfsync", "always" if durable else "everysec"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 15
    while True:
        try:  # a restarted server answers PING while it still replays its AOF
            if probe.ping() and probe.info("persistence").get("loading", 0) == 0:
                return process, f"redis://127.0.0.1:{port}/0"
        except (redis.ConnectionError, redis.BusyLoadingError):
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.05)


def start_milvus_lite(workdir: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start Milvus Lite's real server (the milvus-lite 2.5 wheel's binary) on loopback; returns it and its URI.

    ``make install`` brings the wheel (the [milvus] extra); without it the test fails under CI and
    is skipped elsewhere, like redis-server above.
    """
    from indexer.milvus.lite import LiteUnavailableError, start_server

    port = port or free_port()
    try:
        process = start_server(workdir / "milvus.db", port, log_file=workdir / "milvus.log")
    except (LiteUnavailableError, RuntimeError) as error:
        if os.environ.get("CI"):
            pytest.fail(f"Milvus Lite cannot start: {error}")
        pytest.skip(f"Milvus Lite cannot start: {error}")
    return process, f"http://127.0.0.1:{port}"
