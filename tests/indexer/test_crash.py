"""kill -9 a writer process at random moments; the reopened collection holds every acknowledged write."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from indexer import Catalog

from .crash_writer import BATCH, DELETED_PER_BATCH, batch_ids, batch_vectors

ROOT = Path(__file__).resolve().parents[2]


def _run_and_kill(data_dir: Path, round_: int, rng: random.Random) -> list[str]:
    """Start a writer, SIGKILL it at a random point (mid-write or mid-snapshot); return its printed lines."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "tests.indexer.crash_writer", str(data_dir), str(round_)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    stop_after = rng.randint(3, 40)  # acknowledgements before the kill
    kill_in_snapshot = round_ % 2 == 1
    try:
        for line in child.stdout:
            lines.append(line.split())
            if kill_in_snapshot and lines[-1][0] == "snap":
                time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside the snapshot (or the next add)
                break
            if not kill_in_snapshot and len(lines) >= stop_after:
                time.sleep(rng.uniform(0.0, 0.01))  # somewhere inside the next write
                break
        else:
            raise AssertionError("the writer exited before it was killed")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        # acknowledgements printed between the last line read and the kill still count
        lines.extend(line.split() for line in child.stdout)
        child.stdout.close()
    return lines


def _check(catalog: Catalog, acknowledged: dict[tuple[int, int], set[str]], in_flight: list[tuple[int, int]]) -> int:
    """Every acknowledged write is there with its vectors and metadata; unacknowledged batches are all-or-nothing."""
    index = catalog.get("crash")
    expected = set().union(*acknowledged.values()) if acknowledged else set()
    for (round_, batch), live_ids in acknowledged.items():
        for item_id in batch_ids(round_, batch):
            assert (item_id in index) == (item_id in live_ids), item_id
        item = index.get(batch_ids(round_, batch)[-1])
        mean, logvar = batch_vectors(round_, batch)
        np.testing.assert_allclose(item.mean, mean[-1], atol=1e-6)
        np.testing.assert_array_equal(item.logvar, logvar[-1])
        assert item.metadata == {"round": round_, "batch": batch, "j": BATCH - 1}
    for round_, batch in in_flight:  # the write the kill interrupted: one transaction, so all or nothing
        present = [i in index for i in batch_ids(round_, batch)[DELETED_PER_BATCH:]]
        assert all(present) or not any(present)
        doomed = [i in index for i in batch_ids(round_, batch)[:DELETED_PER_BATCH]]
        assert all(doomed) or not any(doomed)
        if all(present):
            expected |= set(batch_ids(round_, batch)[DELETED_PER_BATCH:])
            if batch_ids(round_, batch)[0] in index:
                expected |= set(batch_ids(round_, batch)[:DELETED_PER_BATCH])
    assert len(index) == len(expected)
    mean, logvar = batch_vectors(0, 0)
    assert len(index.search(mean[:2], logvar[:2], k=3)[0]) == 3
    return len(index)


def test_kill_9_mid_writes_and_snapshots_loses_nothing_acknowledged(tmp_path):
    rng = random.Random(1234)
    data_dir = tmp_path / "data"
    acknowledged: dict[tuple[int, int], set[str]] = {}
    for round_ in range(2):  # round 0 dies mid-write, round 1 mid-snapshot
        lines = _run_and_kill(data_dir, round_, rng)
        for verb, r, b in lines:
            key = (int(r), int(b))
            if verb == "add":
                acknowledged[key] = set(batch_ids(*key))
            elif verb == "del":
                acknowledged[key] -= set(batch_ids(*key)[:DELETED_PER_BATCH])
        last = max((int(b) for _, r, b in lines if int(r) == round_), default=-1)
        # the batch after the last acknowledged add may be half done; so may the delete of the last add
        in_flight = [(round_, last + 1)]
        last_key = (round_, last)
        if last_key in acknowledged and last % 3 == 2 and ["del", str(round_), str(last)] not in lines:
            acknowledged.pop(last_key)
            in_flight.append(last_key)
        with Catalog(data_dir, auto_snapshot=False) as catalog:
            _check(catalog, acknowledged, in_flight)
            # settle the uncertain batches into the model for the next round
            index = catalog.get("crash")
            for key in in_flight:
                present = {i for i in batch_ids(*key) if i in index}
                if present:
                    acknowledged[key] = present
