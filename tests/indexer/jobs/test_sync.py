"""Folder sync: new and changed files indexed, gone ones removed, unchanged ones never encoded again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from indexer import Catalog
from indexer.jobs import JobManager, JobSettings
from indexer.sources import SourceError
from tests.indexer.jobs.conftest import cli, image_bytes, write_images
from tests.indexer.jobs.test_jobs import RecordingEncoder

SETTINGS = JobSettings(chunk_size=2, decode_workers=2, device="cpu")


def sync(manager, folder, name="photos"):
    status = manager.wait(manager.submit(folder, name, sync=True), timeout=60)
    assert status.state == "completed", status
    return status


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "photos"
    write_images(path, [f"p{i}.png" for i in range(5)] + ["sub/q.png"])
    return path


@pytest.fixture(params=["sqlite", "redis"])
def job_store(request, tmp_path):
    """Where the job and its file records live: the embedded SQLite store, or Redis (shared by replicas)."""
    if request.param == "sqlite":
        return None  # JobManager's default
    from indexer.jobstore_redis import RedisJobStore

    return RedisJobStore.from_url(request.getfixturevalue("redis_url"), namespace="sync")


def test_sync_indexes_new_and_changed_files_removes_gone_ones_and_leaves_the_rest(tmp_path, folder, encoder,
                                                                                  job_store):
    recording = RecordingEncoder(encoder)
    manager = JobManager(tmp_path / "data", encoder=recording, settings=SETTINGS, store=job_store)
    try:
        first = sync(manager, folder)
        assert (first.total, first.done, first.unchanged, first.removed, recording.rows) == (6, 6, 0, 0, 6)

        (folder / "p1.png").write_bytes(image_bytes(101))           # changed content
        (folder / "new.png").write_bytes(image_bytes(102))          # new file
        (folder / "sub" / "q.png").unlink()                         # gone
        os.utime(folder / "p2.png", ns=(1, 1_000_000_000))           # touched: new mtime, same bytes
        second = sync(manager, folder)
        assert recording.rows == 6 + 2  # only p1 and new.png were encoded again
        assert (second.total, second.done, second.failed, second.unchanged, second.removed) == (2, 2, 0, 4, 1)

        index = manager.catalog().get("photos")
        assert sorted(item.id for page in index.iter_items() for item in page) == [
            "new.png", "p0.png", "p1.png", "p2.png", "p3.png", "p4.png"]
        np.testing.assert_allclose(index.get("p1.png").mean, encoder.encode_images([folder / "p1.png"]).mean[0],
                                   atol=1e-5)

        third = sync(manager, folder)  # nothing changed: nothing read but the folder listing
        assert (third.total, third.unchanged, third.removed, recording.rows) == (0, 6, 0, 8)

        (folder / "p4.png").write_bytes(b"not an image any more")  # a changed file that fails keeps its item
        fourth = sync(manager, folder)
        assert (fourth.failed, fourth.removed) == (1, 0) and "p4.png" in index
        with pytest.raises(SourceError, match="sync keeps a collection in step with a folder"):
            manifest = tmp_path / "m.csv"
            manifest.write_text("image\nphotos/p0.png\n")
            manager.submit(manifest, "photos", sync=True)
    finally:
        manager.close()


def test_an_interrupted_sync_resumes_and_encodes_each_file_once(tmp_path, folder, encoder):
    data = tmp_path / "data"
    manager = JobManager(data, encoder=encoder, settings=SETTINGS)
    sync(manager, folder)
    manager.close()
    for i in range(6):  # six changed files: three chunks of two
        (folder / f"p{i}.png" if i < 5 else folder / "extra.png").write_bytes(image_bytes(200 + i))
    (folder / "p0.png").unlink()

    recording = RecordingEncoder(encoder)
    recording.hold_at = 2  # the second chunk's encoder call waits: stop the process there
    first = JobManager(data, encoder=recording, settings=SETTINGS)
    job_id = first.submit(folder, "photos", sync=True)
    assert recording.holding.wait(30)
    closing = threading.Thread(target=first.close)
    closing.start()  # a shutdown: the run stops at its next chunk boundary
    recording.release.set()
    closing.join(30)
    stopped = first.status(job_id)
    assert stopped.state == "interrupted" and stopped.done == 4 and stopped.total == 5
    encoded_before = recording.rows

    second = JobManager(data, encoder=recording, settings=SETTINGS)
    try:
        assert second.submit(folder, "photos", sync=True) == job_id  # the same job, resumed
        status = second.wait(job_id, 60)
        assert (status.state, status.total, status.done, status.removed) == ("completed", 5, 5, 1)
        assert recording.rows - encoded_before == 5 - stopped.done  # what was committed is not encoded again
        index = second.catalog().get("photos")
        assert len(index) == 6 and "p0.png" not in index
        np.testing.assert_allclose(index.get("extra.png").mean,
                                   encoder.encode_images([folder / "extra.png"]).mean[0], atol=1e-5)
    finally:
        second.close()


def test_a_dropped_and_recreated_collection_is_synced_afresh(tmp_path, folder, encoder):
    manager = JobManager(tmp_path / "data", encoder=encoder, settings=SETTINGS)
    try:
        sync(manager, folder)
        manager.catalog().drop("photos")
        again = sync(manager, folder)
        assert (again.done, again.unchanged) == (6, 0)  # records belong to the dropped collection, not the name
    finally:
        manager.close()


def test_watch_applies_changes_as_they_happen_and_stops_on_ctrl_c(tmp_path, model_dir):
    folder = tmp_path / "photos"
    write_images(folder, ["a.png", "b.png"])
    data = tmp_path / "data"
    watcher = cli("index", str(folder), "--collection", "live", "--sync", "--watch", "--poll-s", "0.1",
                  "--model", str(model_dir), "--data-dir", str(data), "--device", "cpu",
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []

    def wait_line(pattern: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = watcher.stdout.readline()
            if not line:
                break
            lines.append(line)
            if pattern in line:
                return line
        raise AssertionError(f"no {pattern!r} in {lines}; stderr: {watcher.stderr.read() if watcher.poll() else ''}")

    try:
        assert re.search(r"2/2 done, 0 failed.*, 0 unchanged, 0 removed", wait_line("completed"))
        (folder / "c.png").write_bytes(image_bytes(50))
        (folder / "a.png").unlink()
        assert re.search(r"1/1 done, 0 failed.*, 1 unchanged, 1 removed", wait_line("completed"))
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(30) == 0
        assert "stopped watching" in watcher.stderr.read()
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(10)
    with Catalog(data) as catalog:
        index = catalog.get("live")
        assert sorted(item.id for page in index.iter_items() for item in page) == ["b.png", "c.png"]
