"""In-process jobs: progress, failures, cancel, encoder outages and resume, with the real catalog."""

import dataclasses
import json
import threading
from collections import Counter

import numpy as np
import pytest

from indexer import Catalog
from indexer.fetch import FetchPolicy
from indexer.jobs import JobBusyError, JobManager, JobSettings, UnknownJobError
from indexer.roots import PathNotAllowedError
from tests.indexer.jobs.conftest import image_bytes, write_images

# the test file server is on loopback, which jobs refuse to fetch from unless allowed
SETTINGS = JobSettings(chunk_size=4, decode_workers=2, encoder_retries=1, retry_backoff_s=0.01, device="cpu",
                       fetch=FetchPolicy(retries=1, backoff_s=0.01, allow_private_networks=True))


class RecordingEncoder:
    """The real encoder, recording which batches it encoded; ``hold``/``fail`` steer the next calls."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.rows = 0                 # rows encoded successfully
        self.calls = 0
        self.fail = False             # every call raises while set (an encoder outage)
        self.hold_at: int | None = None  # this call blocks until ``release`` is set
        self.holding = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def _record(self, batch):
        self.calls += 1
        if self.calls == self.hold_at:
            self.holding.set()
            self.release.wait(10)
        if self.fail:
            raise ConnectionError("encoder unreachable")
        self.rows += len(batch)
        return batch

    def encode_pixels(self, pixels):
        self._record(pixels)
        return self.encoder.encode_pixels(pixels)

    def encode_texts(self, texts):
        self._record(texts)
        return self.encoder.encode_texts(texts)


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    write_images(folder, [f"img{i:02d}.png" for i in range(10)] + [f"sub/deep{i}.jpg" for i in range(3)])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "readme.txt").write_text("ignored")
    return folder


def manager_for(tmp_path, encoder, **kwargs):
    return JobManager(tmp_path / "data", encoder=encoder, settings=kwargs.pop("settings", SETTINGS), **kwargs)


def test_folder_job_indexes_every_image_and_lists_failures(tmp_path, corpus, encoder):
    manager = manager_for(tmp_path, encoder)
    job_id = manager.submit(corpus, "photos")
    status = manager.wait(job_id, 60)
    assert (status.state, status.total, status.done, status.failed, status.pending) == ("completed", 15, 13, 2, 0)
    assert status.items_per_s > 0 and status.eta_s is None and status.modality == "image"
    failures = {f.item_id: f.reason for f in manager.failures(job_id)}
    assert set(failures) == {"corrupt.png", "empty.jpg"}
    assert "empty file" in failures["empty.jpg"]
    assert [f.item_id for f in manager.failures(job_id, limit=1, offset=1)] == ["empty.jpg"]
    manager.close()
    with Catalog(tmp_path / "data") as catalog:
        index = catalog.get("photos")
        assert len(index) == 13 and "sub/deep2.jpg" in index and "corrupt.png" not in index
        item = index.get("img03.png")
        np.testing.assert_allclose(item.mean, encoder.encode_images([corpus / "img03.png"]).mean[0], atol=1e-5)
        assert item.metadata == {"path": "img03.png", "width": 12, "height": 10}  # + indexer.photos keys


def test_urls_on_private_networks_are_refused_by_default_with_the_reason_recorded(tmp_path, encoder, file_server):
    file_server.routes["0.png"] = image_bytes(0)
    manifest = tmp_path / "inside.jsonl"
    manifest.write_text(json.dumps({"id": "inside", "url": file_server.url("0.png")}) + "\n")
    settings = dataclasses.replace(SETTINGS, fetch=FetchPolicy())
    manager = manager_for(tmp_path, encoder, settings=settings)
    job = manager.wait(manager.submit(manifest, "web"), 60)
    assert (job.done, job.failed) == (0, 1)
    assert "non-public address" in manager.failures(job.job_id)[0].reason


def test_manifest_of_urls_and_a_text_collection(tmp_path, encoder, file_server):
    for i in range(5):
        file_server.routes[f"{i}.png"] = image_bytes(i)
    rows = [{"id": f"web{i}", "url": file_server.url(f"{i}.png"), "caption": f"photo {i}"} for i in range(5)]
    rows.append({"id": "web404", "url": file_server.url("missing.png")})
    manifest = tmp_path / "web.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    captions = tmp_path / "captions.csv"
    captions.write_text("id,caption\nc1,a red circle\nc2,the dog\nc3,\n")
    manager = manager_for(tmp_path, encoder)
    images = manager.wait(manager.submit(manifest, "web"), 60)
    texts = manager.wait(manager.submit(captions, "captions"), 60)
    assert (images.done, images.failed) == (5, 1)
    assert manager.failures(images.job_id)[0].reason == "HTTP 404"
    assert (texts.modality, texts.done, texts.failed) == ("text", 2, 1)
    catalog = manager.catalog()
    assert catalog.get("web").get("web2").metadata["caption"] == "photo 2"
    np.testing.assert_allclose(catalog.get("captions").get("c2").mean, encoder.encode_texts(["the dog"]).mean[0],
                               atol=1e-6)
    manager.close()


def test_one_bad_url_fails_its_item_and_the_job_goes_on(tmp_path, encoder, file_server):
    from tests.indexer.jobs.test_fetch import UNUSUAL_URLS

    for i in range(2):
        file_server.routes[f"{i}.png"] = image_bytes(i)
    rows = [{"id": "good0", "url": file_server.url("0.png")}]
    rows += [{"id": f"bad{i}", "url": url} for i, url in enumerate(UNUSUAL_URLS)]
    rows += [{"id": "good1", "url": file_server.url("1.png")}]
    manifest = tmp_path / "hostile.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    manager = manager_for(tmp_path, encoder)
    job = manager.wait(manager.submit(manifest, "web"), 60)
    assert (job.state, job.done, job.failed, job.error) == ("completed", 2, len(UNUSUAL_URLS), None)
    reasons = {f.item_id: f.reason for f in manager.failures(job.job_id)}
    assert set(reasons) == {f"bad{i}" for i in range(len(UNUSUAL_URLS))}
    assert all(reasons.values())
    index = manager.catalog().get("web")
    assert len(index) == 2 and index.get("good0") is not None and index.get("good1") is not None
    manager.close()


def test_encoder_outage_pauses_and_resume_encodes_only_what_is_left(tmp_path, corpus, encoder):
    recording = RecordingEncoder(encoder)
    manager = manager_for(tmp_path, recording)
    recording.hold_at = 2                    # stop inside the second chunk, then take the encoder away
    job_id = manager.submit(corpus, "photos")
    assert recording.holding.wait(30)
    recording.fail = True
    recording.release.set()
    paused = manager.wait(job_id, 30)
    assert paused.state == "paused" and "encoder failed 2 times in a row" in paused.error
    # chunk 0 (corrupt, empty, img00, img01) is committed; the outage failed no item of chunk 1
    assert (paused.done, paused.failed, paused.pending) == (2, 2, 11)
    assert len(manager.catalog().get("photos")) == 2

    recording.fail = False
    assert manager.submit(corpus, "photos") == job_id  # the same source again resumes the job
    done = manager.wait(job_id, 60)
    assert (done.state, done.done, done.failed, done.error) == ("completed", 13, 2, None)
    assert recording.rows == 13                         # every image encoded exactly once overall
    assert len(manager.catalog().get("photos")) == 13
    manager.close()


def test_cancel_stops_at_a_chunk_boundary_and_resume_finishes(tmp_path, corpus, encoder):
    recording = RecordingEncoder(encoder)
    recording.hold_at = 2
    manager = manager_for(tmp_path, recording)
    job_id = manager.submit(corpus, "photos")
    assert recording.holding.wait(30)
    assert manager.cancel(job_id).job_id == job_id
    recording.release.set()
    cancelled = manager.wait(job_id, 30)
    assert cancelled.state == "cancelled" and cancelled.done == 6 and cancelled.finished  # chunks 0 and 1
    assert manager.cancel(job_id).state == "cancelled"   # idempotent
    assert manager.resume(job_id).job_id == job_id
    assert manager.wait(job_id, 60).state == "completed"
    assert recording.rows == 13
    manager.close()


def test_restarted_manager_sees_interrupted_jobs_and_resumes_them(tmp_path, corpus, encoder):
    recording = RecordingEncoder(encoder)
    recording.hold_at = 2
    first = manager_for(tmp_path, recording)
    job_id = first.submit(corpus, "photos")
    assert recording.holding.wait(30)
    closing = threading.Thread(target=first.close)
    closing.start()                       # a shutdown: runs stop at their next chunk boundary
    recording.release.set()
    closing.join(30)
    assert first.status(job_id).state == "interrupted"

    again = RecordingEncoder(encoder)
    second = manager_for(tmp_path, again)
    (listed,) = second.list()
    assert listed.job_id == job_id and listed.state == "interrupted" and listed.done == 6
    assert second.resume_unfinished() == [job_id]
    assert second.wait(job_id, 60).state == "completed"
    assert again.rows == 13 - 6
    second.close()


def test_sources_outside_the_allowed_roots_are_refused(tmp_path, corpus, encoder):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    manager = manager_for(tmp_path, encoder, allowed_roots=[allowed])
    with pytest.raises(PathNotAllowedError, match="outside the allowed roots"):
        manager.submit(corpus, "photos")
    with pytest.raises(PathNotAllowedError):
        manager.submit(allowed / ".." / "corpus", "photos")
    with pytest.raises(ValueError, match="not a URL"):
        manager.submit("http://127.0.0.1/x.csv", "photos")
    assert manager.list() == []


def test_unknown_jobs_and_mismatched_collections(tmp_path, corpus, encoder):
    manager = manager_for(tmp_path, encoder)
    with pytest.raises(UnknownJobError):
        manager.status("nope")
    with pytest.raises(UnknownJobError):
        manager.failures("nope")
    manager.catalog().create("texts", modality="text", dim=64, model_id=encoder.model_id)
    with pytest.raises(ValueError, match="holds texts, not images"):
        manager.submit(corpus, "texts", modality="image")
    manager.catalog().create("other", modality="image", dim=64, model_id="another-model")
    with pytest.raises(ValueError, match="built with model another-model"):
        manager.submit(corpus, "other")
    manager.close()


def test_job_counts_are_consistent_with_item_states(tmp_path, corpus, encoder):
    manager = manager_for(tmp_path, encoder)
    job_id = manager.submit(corpus, "photos")
    status = manager.wait(job_id, 60)
    states = Counter(manager.store.item_states(job_id).values())
    assert states == Counter({1: status.done, 2: status.failed})
    manager.close()


def test_cancel_from_another_manager_reaches_the_running_job(tmp_path, corpus, encoder):
    recording = RecordingEncoder(encoder)
    recording.hold_at = 2
    runner = manager_for(tmp_path, recording)
    job_id = runner.submit(corpus, "photos")
    assert recording.holding.wait(30)
    other = JobManager(tmp_path / "data", catalog=runner.catalog())  # as another process would
    assert other.status(job_id).state == "running"   # its lock is held: not "interrupted"
    with pytest.raises(JobBusyError, match="being run by another process"):
        other.resume(job_id)
    other.cancel(job_id)
    recording.release.set()
    assert runner.wait(job_id, 30).state == "cancelled"
    assert other.status(job_id).state == "cancelled"
    runner.close()


def test_a_damaged_job_history_is_quarantined_and_a_new_one_started(tmp_path, corpus, encoder):
    """Issue #16, defect 4: job history must never stop the collections from opening."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "jobs.sqlite3").write_bytes(b"garbage, not SQLite" * 1000)
    manager = manager_for(tmp_path, encoder)
    assert manager.list() == [] and len(manager.warnings) == 1 and "damaged" in manager.warnings[0]
    moved = [p for p in data.iterdir() if p.name.startswith("jobs.sqlite3.damaged-")]
    assert len(moved) == 1 and moved[0].read_bytes().startswith(b"garbage")
    job = manager.wait(manager.submit(corpus, "photos"), 60)
    assert job.state == "completed" and job.done == 13
    manager.close()


def test_a_rerun_after_a_completed_job_encodes_only_what_changed(tmp_path, corpus, encoder, make_store):
    """Issue #16, defect 10: a job killed after it was marked complete but before its final snapshot
    (or simply run again) does not encode everything again: unchanged items are kept as they are.
    With either job store (SQLite, or Redis as replicas share it)."""
    recording = RecordingEncoder(encoder)
    first = manager_for(tmp_path, recording, store=make_store())
    job = first.wait(first.submit(corpus, "photos"), 60)
    assert (job.state, job.done, job.failed) == ("completed", 13, 2)
    encoded = recording.rows
    assert encoded == 13
    # killed now: the collection let go without its final snapshot; the next process replays the store
    first.catalog().unload("photos", snapshot=False)
    assert not (tmp_path / "data" / "photos" / "snapshot" / "MANIFEST.json").exists()
    second = manager_for(tmp_path, recording, store=make_store())
    again = second.wait(second.submit(corpus, "photos"), 60)
    assert (again.state, again.done, again.failed) == ("completed", 13, 2)
    assert recording.rows == encoded  # nothing encoded again
    assert second.store.unchanged(again.job_id) == 13
    # a changed file, a new file and an item deleted from the collection are encoded; the rest is not
    (corpus / "img03.png").write_bytes(image_bytes(99))
    (corpus / "new.png").write_bytes(image_bytes(100))
    second.catalog().get("photos").delete(["img05.png"])
    third = second.wait(second.submit(corpus, "photos"), 60)
    assert (third.state, third.done, third.failed) == ("completed", 14, 2)
    assert recording.rows == encoded + 3
    index = second.catalog().get("photos")
    assert len(index) == 14
    np.testing.assert_allclose(index.get("img03.png").mean, encoder.encode_images([image_bytes(99)]).mean[0],
                               atol=1e-5)
    second.close()


def test_a_source_that_cannot_fill_the_collection_is_refused_before_it_starts(tmp_path, corpus, encoder):
    """Issue #16, defect 13: a text manifest indexed into an image collection ended "17 failed"."""
    captions = tmp_path / "captions.jsonl"
    captions.write_text("\n".join(json.dumps({"id": f"c{i}", "caption": f"a red circle {i}"}) for i in range(17)))
    recording = RecordingEncoder(encoder)
    manager = manager_for(tmp_path, recording)
    manager.wait(manager.submit(corpus, "photos"), 60)
    calls = recording.calls
    with pytest.raises(ValueError, match="holds images, but .*captions.jsonl is a manifest with the columns "
                                         "caption, id: it has no images"):
        manager.submit(captions, "photos")
    manager.catalog().create("notes", modality="text", dim=encoder.embed_dim, model_id=encoder.model_id)
    with pytest.raises(ValueError, match="holds texts, but .* is a folder of images"):
        manager.submit(corpus, "notes")
    assert len(manager.list()) == 1 and recording.calls == calls  # no job made, nothing encoded
    texts = manager.wait(manager.submit(captions, "notes"), 60)
    assert (texts.state, texts.done) == ("completed", 17)
    manager.close()
