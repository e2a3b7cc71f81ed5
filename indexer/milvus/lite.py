"""Milvus Lite's server as a process of its own on a TCP port, so several processes can share it.

``pymilvus.MilvusClient("./x.db")`` starts Milvus Lite inside the calling process on a Unix
socket: one process per file. The ``milvus-lite`` 2.5 wheel ships the server binary that does
this (``milvus_lite/lib/milvus DB_FILE ADDRESS LOG_LEVEL``); started on a loopback port it
serves any number of clients at ``http://127.0.0.1:PORT``, which is what the tests (two API
replicas), the benchmark and ``prolip-retrieval milvus-lite`` use. It is the real engine
(knowhere, segcore) in a single process: FLAT and IVF_FLAT indexes only, no scalar indexes,
no replication; data in one local file.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from pathlib import Path


class LiteUnavailableError(RuntimeError):
    """The milvus-lite 2.5 server binary is not installed (pip install 'prolip-retrieval[milvus]')."""


def server_binary() -> Path:
    """The path of Milvus Lite's server binary; LiteUnavailableError without the 2.5 wheel."""
    spec = importlib.util.find_spec("milvus_lite")  # found without importing it (it imports pkg_resources)
    if spec is None or not spec.submodule_search_locations:
        raise LiteUnavailableError("milvus-lite is not installed: pip install 'prolip-retrieval[milvus]'")
    binary = Path(list(spec.submodule_search_locations)[0]) / "lib" / "milvus"
    if not binary.is_file():
        raise LiteUnavailableError(f"{binary} is missing: the installed milvus-lite is not the 2.5 line that ships "
                                   "the server binary (pip install 'milvus-lite>=2.5.1,<2.6')")
    return binary


def start_server(db_file: str | os.PathLike, port: int, host: str = "127.0.0.1", log_level: str = "ERROR",
                 log_file: str | os.PathLike | None = None, timeout_s: float = 30.0) -> subprocess.Popen:
    """Start the server on ``host:port`` over ``db_file``; returns once it accepts connections.

    The file name must match [A-Za-z0-9.-_]{1,35} (the server's own rule). The caller stops the
    process (SIGTERM; SIGKILL is survivable: everything acknowledged is in the file).
    """
    binary = server_binary()
    db_file = Path(db_file).absolute()
    db_file.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LD_LIBRARY_PATH=f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
    try:
        process = subprocess.Popen([str(binary), str(db_file), f"{host}:{port}", log_level], env=env,
                                   cwd=str(db_file.parent), stdout=output, stderr=subprocess.STDOUT)
    finally:
        if log_file:
            output.close()
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"Milvus Lite server exited with {process.returncode} (is {db_file} in use?)")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return process
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                process.wait(10)
                raise RuntimeError(f"Milvus Lite did not listen on {host}:{port} within {timeout_s:.0f} s") from None
            time.sleep(0.05)
