"""Reliability fixtures: reuse the service's real-server helpers and the indexer's redis-server starter."""

from __future__ import annotations

from pathlib import Path

from tests.service.conftest import Server, client, free_port, make_client  # noqa: F401  (fixtures re-exported)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


