"""/v1/jobs: index a server-side folder inside the allowed roots, watch progress, see failures."""

from __future__ import annotations

import time

from .conftest import png_bytes


def _wait_finished(client, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise TimeoutError(job)


def test_a_job_indexes_a_folder_and_lists_its_failures(make_client, tmp_path):
    root = tmp_path / "corpora"
    photos = root / "photos"
    photos.mkdir(parents=True)
    for i in range(5):
        (photos / f"p{i}.png").write_bytes(png_bytes(i))
    (photos / "broken.png").write_bytes(png_bytes(9)[:60])
    client = make_client(job_roots=str(root))

    submitted = client.post("/v1/jobs", json={"source": str(photos), "collection": "photos"})
    assert submitted.status_code == 202, submitted.text
    job = _wait_finished(client, submitted.json()["id"])
    assert job["state"] == "completed", job
    assert job["done"] == 5 and job["failed"] == 1 and job["total"] == 6
    assert len(job["failures"]) == 1 and "broken.png" in job["failures"][0]["item"]
    assert job["failures"][0]["reason"]
    assert client.get("/v1/collections/photos").json()["size"] == 5
    listed = client.get("/v1/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    hits = client.post("/v1/search/image", files={"file": ("q.png", png_bytes(2), "image/png")},
                       data={"collection": "photos", "k": "1", "rank": "cosine"}).json()
    assert hits["results"][0]["cosine"] > 0.999
    metrics = client.get("/metrics").text
    assert f'prolip_job_items{{job="{job["id"]}",kind="done",state="completed"}} 5.0' in metrics


def test_sources_outside_the_roots_are_refused(make_client, tmp_path):
    root = tmp_path / "allowed"
    root.mkdir()
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    client = make_client(job_roots=str(root))
    for source in (str(outside), str(root / ".." / "secret"), str(root / "escape")):
        response = client.post("/v1/jobs", json={"source": source, "collection": "x"})
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "forbidden"
    missing = client.post("/v1/jobs", json={"source": str(root / "nothing"), "collection": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_source"
    assert "does not exist" in missing.json()["error"]["message"]
    url = client.post("/v1/jobs", json={"source": "https://example.org/images", "collection": "x"})
    assert url.status_code == 422  # a source that can never work is invalid input, not an unknown name
    assert client.get("/v1/jobs/not-a-job").status_code == 404
    assert client.delete("/v1/jobs/not-a-job").status_code == 404


def test_without_roots_no_source_is_allowed(client, tmp_path):
    (tmp_path / "photos").mkdir()
    response = client.post("/v1/jobs", json={"source": str(tmp_path / "photos"), "collection": "x"})
    assert response.status_code == 403


def test_a_sync_job_applies_only_what_changed_in_the_folder(make_client, tmp_path):
    root = tmp_path / "corpora"
    photos = root / "photos"
    photos.mkdir(parents=True)
    for i in range(4):
        (photos / f"p{i}.png").write_bytes(png_bytes(i))
    client = make_client(job_roots=str(root))
    request = {"source": str(photos), "collection": "photos", "sync": True}
    first = _wait_finished(client, client.post("/v1/jobs", json=request).json()["id"])
    assert (first["state"], first["sync"], first["done"], first["unchanged"], first["removed"]) == (
        "completed", True, 4, 0, 0)
    (photos / "p0.png").unlink()
    (photos / "p1.png").write_bytes(png_bytes(11))
    second = _wait_finished(client, client.post("/v1/jobs", json=request).json()["id"])
    assert (second["total"], second["done"], second["unchanged"], second["removed"]) == (1, 1, 2, 1)
    assert client.get("/v1/collections/photos").json()["size"] == 3
    assert client.get("/v1/collections/photos/items/p0.png").status_code == 404
    manifest = photos / "list.csv"
    manifest.write_text("image\np2.png\n")
    refused = client.post("/v1/jobs", json={**request, "source": str(manifest)})
    assert refused.status_code == 422 and "folder" in refused.json()["error"]["message"]


def test_anything_outside_the_roots_gets_one_identical_403_whether_or_not_it_exists(make_client, tmp_path):
    """Issue #16, defect 7: existence outside the roots, and symlink targets, are never told."""
    import os

    root = tmp_path / "allowed"
    root.mkdir()
    secret = tmp_path / "secret-place"
    secret.mkdir()
    (secret / "data.jsonl").write_text('{"id": "a", "caption": "x"}\n')
    (root / "escape").symlink_to(secret)
    (root / "dangling").symlink_to(tmp_path / "secret-missing")
    client = make_client(job_roots=str(root))
    sources = [str(secret), str(tmp_path / "no-such-folder"), str(secret / "data.jsonl"),
               str(tmp_path / "secret-missing.jsonl"), "/etc/passwd", "/proc/1/cwd", "/proc/self/root/etc",
               str(root / ".." / "secret-place"), str(root / ".." / "nothing-here"), str(root / "escape"),
               str(root / "escape" / "data.jsonl"), str(root / "dangling"),
               str(tmp_path / "shards-{000..002}.tar"), str(secret / "*.tar")]
    messages = set()
    for source in sources:
        response = client.post("/v1/jobs", json={"source": source, "collection": "x"})
        assert response.status_code == 403, (source, response.status_code, response.text)
        error = response.json()["error"]
        assert error["code"] == "forbidden", source
        named = os.path.abspath(source)  # the source as given, '..' collapsed
        if "escape" in source or "dangling" in source:
            assert "secret" not in error["message"].replace(named, ""), (source, error)  # no symlink target
        messages.add(error["message"].replace(named, "<source>"))
    assert len(messages) == 1, messages

    # the same for the items a manifest inside the roots names
    (root / "list.jsonl").write_text("\n".join([
        f'{{"id": "there", "image": "{secret / "data.jsonl"}"}}',
        f'{{"id": "missing", "image": "{tmp_path / "not-there.png"}"}}']) + "\n")
    job = _wait_finished(client, client.post("/v1/jobs", json={"source": str(root / "list.jsonl"),
                                                               "collection": "y", "modality": "image"}).json()["id"])
    reasons = {f["item"]: f["reason"] for f in job["failures"]}
    assert reasons["there"].replace(str(secret / "data.jsonl"), "<path>") == \
        reasons["missing"].replace(str(tmp_path / "not-there.png"), "<path>")
